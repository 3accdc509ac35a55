"""The CA signer: the only long-running process that holds CityGrid's CA key.

`citygrid signer` decrypts the CA key once at start and answers on a Unix socket (mode
0600, or one handed over by systemd socket activation) the two operations of
`auth.signer_protocol`. Web processes never see the passphrase; they ask here. Every act
is written to the audit log in the same transaction as the register change. A background
loop republishes the CRL well before its next update (auth.renewal).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import stat
import threading
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509

from audit.keys import signer as audit_key
from audit.record import Entry, record
from auth import certs, enrol, pki, renewal
from auth.ca_store import CaStore, PkiError
from auth.signer_protocol import (
    IssuePerson,
    IssueSigning,
    ProtocolError,
    PublishCrl,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from mapserver.errors import CityGridError, InvalidInput
from mapserver.settings import Settings

log = logging.getLogger("citygrid.signer")
TIMEOUT = 10.0
SD_LISTEN_FDS_START = 3


class SignerUnavailable(CityGridError):
    status = 503
    code = "signer_unavailable"


class SignerRefused(CityGridError):
    """A refusal relayed from the signer, with the status of its error code."""

    STATUS = {
        "invalid": 400,
        "signature_refused": 400,
        "forbidden": 403,
        "enrolment_refused": 403,
        "not_found": 404,
        "conflict": 409,
        "unavailable": 503,
    }

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.status = self.STATUS.get(code, 400)


# ---------------------------------------------------------------- client (web side)


def call(path: Path, req: Request, timeout: float = TIMEOUT) -> Reply:
    """Send one request to the signer; raise SignerUnavailable if it cannot answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(encode_request(req))
            raw = s.makefile("rb").readline(65536)
        reply = decode_reply(raw)
    except (OSError, ProtocolError):
        raise SignerUnavailable("the signing service is unavailable; try later") from None
    if not reply.ok:
        raise SignerRefused(reply.error or "refused", reply.message or "refused by the signer")
    return reply


def issue_signing(settings: Settings, proof: enrol.Proof) -> x509.Certificate:
    reply = call(
        settings.signer_socket_path,
        IssueSigning(proof.account, proof.public_key, proof.nonce, proof.proof, proof.code),
    )
    if not reply.certificate:
        raise SignerUnavailable("the signing service answered without a certificate")
    return x509.load_pem_x509_certificate(reply.certificate.encode("ascii"))


def issue_person(settings: Settings, account: str, csr: str, action_id: int) -> x509.Certificate:
    """A person's certificate for `csr`, on the administrator's stored signed action."""
    reply = call(settings.signer_socket_path, IssuePerson(account, csr, str(action_id)))
    if not reply.certificate:
        raise SignerUnavailable("the signing service answered without a certificate")
    return x509.load_pem_x509_certificate(reply.certificate.encode("ascii"))


def publish_crl(settings: Settings, serial: str) -> int:
    return call(settings.signer_socket_path, PublishCrl(serial)).crl_number or 0


def running(path: Path) -> bool:
    """True when a signer answers connections on `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------- the signer process


class Signer:
    """The CA operations the signer performs; each audited in its own transaction."""

    def __init__(self, settings: Settings, secret: bytes):
        self.settings = settings
        self.store = CaStore(settings.pki_dir)
        self.ca_key = self.store.key(secret)  # fails at start on a wrong passphrase
        self.ca_cert = self.store.certificate()
        self.audit_key = audit_key(settings.pki_dir)
        self.lock = threading.Lock()

    def _audit(self, conn: psycopg.Connection, action: str, resource: str, **detail: Any) -> None:
        entry = Entry(
            action=action, account="signer", method="SIGNER", resource=resource, detail=detail
        )
        record(conn, entry, self.audit_key)

    def handle(self, req: Request) -> Reply:
        with self.lock, psycopg.connect(self.settings.database_url) as conn:
            if isinstance(req, IssueSigning):
                with conn.transaction():
                    cert = enrol.enrol(
                        conn,
                        enrol.Proof(req.account, req.public_key, req.nonce, req.proof, req.code),
                        self.ca_key,
                        self.ca_cert,
                    )
                    serial = certs.serial_hex(cert.serial_number)
                    self._audit(
                        conn,
                        "signer.issue_signing",
                        f"certificate {serial}",
                        account=req.account,
                        sha256=pki.thumbprint(cert),
                    )
                return Reply(True, certificate=pki.pem(cert).decode("ascii"))
            if isinstance(req, IssuePerson):
                from auth import person_issue

                if not (req.action.isascii() and req.action.isdigit()) or len(req.action) > 18:
                    raise InvalidInput("action must be a signed action's id")
                with conn.transaction():
                    cert = person_issue.issue(
                        conn, req.account, req.csr, int(req.action), self.ca_key, self.ca_cert
                    )
                    serial = certs.serial_hex(cert.serial_number)
                    self._audit(
                        conn,
                        "signer.issue_person",
                        f"certificate {serial}",
                        account=req.account,
                        sha256=pki.thumbprint(cert),
                        signed_action=int(req.action),
                    )
                return Reply(True, certificate=pki.pem(cert).decode("ascii"))
            number = self._publish(conn, "revocation" if req.serial else "request", req.serial)
            return Reply(True, crl_number=number)

    def _publish(self, conn: psycopg.Connection, why: str, serial: str = "") -> int:
        with conn.transaction():
            crl = certs.publish_crl_with(conn, self.store, self.ca_key)
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            detail: dict[str, Any] = {"why": why, "revoked": len(crl), "crl_number": number}
            if serial:
                detail["serial"] = serial
            detail["next_update"] = crl.next_update_utc.isoformat() if crl.next_update_utc else ""
            self._audit(conn, "signer.publish_crl", "crl", **detail)
        return int(number)

    def refresh(self) -> bool:
        """Republish the CRL when it is due (auth.renewal); True if it did."""
        if not renewal.crl_due(self.store.crl(), pki.now()):
            return False
        with self.lock, psycopg.connect(self.settings.database_url) as conn:
            if renewal.crl_due(self.store.crl(), pki.now()):  # another publisher may have run
                self._publish(conn, "schedule")
                return True
        return False

    def answer(self, raw: bytes) -> Reply:
        try:
            return self.handle(decode_request(raw))
        except ProtocolError as exc:
            return Reply(False, error="invalid", message=f"bad request: {exc}")
        except CityGridError as exc:
            return Reply(False, error=exc.code, message=exc.message)
        except psycopg.Error:
            log.exception("database error in the signer")
            return Reply(False, error="unavailable", message="the register is unavailable")


class _Handler(socketserver.StreamRequestHandler):
    timeout = TIMEOUT

    def handle(self) -> None:
        signer: Signer = self.server.signer  # type: ignore[attr-defined]
        try:
            raw = self.rfile.readline(65536)
        except OSError:
            return
        if not raw:
            return
        with contextlib.suppress(OSError):
            self.wfile.write(encode_reply(signer.answer(raw)))


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def listening_socket(path: Path) -> tuple[socket.socket, bool]:
    """systemd's activated socket if handed one, else `path` bound with mode 0600.

    Returns the socket and whether this process created (and must remove) the file."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1":
        return socket.socket(fileno=SD_LISTEN_FDS_START), False
    if running(path):
        raise PkiError("another signer already answers on the signer socket")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # a stale socket of a signer that died
        else:
            raise InvalidInput("the signer socket path exists and is not a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is born 0600: no window with wider access
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock, True


def serve(settings: Settings, secret: bytes, interval: float = 300.0) -> None:
    """Run the signer until SIGTERM/SIGINT: answer the socket, refresh the CRL on schedule."""
    import signal

    signer = Signer(settings, secret)
    path = settings.signer_socket_path
    sock, owned = listening_socket(path)
    server = _Server(str(path), _Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.signer = signer  # type: ignore[attr-defined]
    stop = threading.Event()

    def schedule() -> None:
        import time

        while not stop.is_set():
            try:
                signer.refresh()
            except (CityGridError, psycopg.Error, OSError):
                log.exception("scheduled CRL refresh failed; retrying")
            # Short sleeps, not one timed wait: a clock that jumps (NTP step, suspend, a
            # faked clock) never leaves the schedule waiting on a stale deadline.
            deadline = time.monotonic() + interval
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(min(1.0, interval))

    def shut(signum: int, frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut)
    signal.signal(signal.SIGINT, shut)
    loop = threading.Thread(target=schedule, name="crl-schedule", daemon=True)
    loop.start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        stop.set()
        server.server_close()
        if owned:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
