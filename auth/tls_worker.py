"""gunicorn's threaded worker, recording refused TLS handshakes in the audit log.

A client certificate that is missing, expired, revoked, from another CA or not made for
client authentication never reaches the app: the handshake fails. This worker turns each
such failure into an audit entry with the reason, so a security officer sees them too.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from typing import Any

import psycopg
from gunicorn.workers.gthread import ThreadWorker

from audit.keys import signer
from audit.record import Entry, record

REASONS = (
    ("certificate has expired", "expired"),
    ("certificate revoked", "revoked"),
    ("unsupported certificate purpose", "not_client_certificate"),
    ("unsuitable certificate purpose", "not_client_certificate"),
    ("unable to get local issuer certificate", "untrusted_issuer"),
    ("self-signed certificate", "untrusted_issuer"),
    ("self signed certificate", "untrusted_issuer"),
    ("certificate signature failure", "untrusted_issuer"),
    ("unable to get certificate CRL", "crl_missing"),
    ("CRL has expired", "crl_expired"),
    ("peer did not return a certificate", "no_certificate"),
    ("certificate is not yet valid", "not_yet_valid"),
)


def reason_of(exc: BaseException) -> str:
    text = " ".join(
        str(part) for part in (getattr(exc, "verify_message", ""), getattr(exc, "reason", ""), exc)
    )
    for needle, reason in REASONS:
        if needle.lower() in text.lower():
            return reason
    return "tls_handshake_failed"


class AuditingThreadWorker(ThreadWorker):
    _local = threading.local()

    def _connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            from mapserver import settings as settings_mod

            settings = settings_mod.load()
            conn = psycopg.connect(settings.serving_database_url, autocommit=True)
            self._local.conn = conn
            self._local.signer = signer(settings.pki_dir)
        return conn

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if req is None and isinstance(exc, ssl.SSLError):
            reason = reason_of(exc)
            try:
                conn = self._connection()
                with conn.transaction():
                    record(
                        conn,
                        Entry(
                            action="tls.refused",
                            outcome="refused",
                            client_addr=str(addr[0]) if addr else "",
                            resource="tls",
                            detail={"reason": reason, "tls_error": str(exc)[:200]},
                        ),
                        self._local.signer,
                    )
            except psycopg.Error:
                self.log.exception("could not record a refused TLS handshake")
            with contextlib.suppress(OSError):
                client.close()
            return
        super().handle_error(req, client, addr, exc)
