"""The renderer's TLS server context: a certificate of CityGrid's CA required of every
client, checked against the CRL in the handshake while the CRL is current. Used by the
renderer's gunicorn (deploy/gunicorn/renderer.conf.py) and its tile channel
(tiles.tile_channel)."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

from cryptography import x509


def current_crl(path: str | Path) -> str | None:
    """The CRL file if it is current. A stale or missing CRL is left out of the handshake,
    so the app can answer 503 naming the reason (and take the push of a fresh one) instead
    of every handshake failing; the app refuses everything else meanwhile."""
    try:
        crl = x509.load_pem_x509_crl(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    nxt = crl.next_update_utc
    return str(path) if nxt is not None and dt.datetime.now(dt.UTC) < nxt else None


def with_crl(context: ssl.SSLContext, crl_path: str | Path) -> ssl.SSLContext:
    """`context` at TLS 1.2 or newer, checking client certificates against the CRL."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    crl = current_crl(crl_path) if crl_path else None
    if crl:
        context.load_verify_locations(cafile=crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def server_context(cert: str, key: str, ca: str, crl_path: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return with_crl(context, crl_path)


class ContextFiles:
    """A server context that is built again when the CRL file changes (a pushed CRL applies
    to the next handshake), else reused: building one costs milliseconds."""

    def __init__(self, cert: str, key: str, ca: str, crl_path: str):
        self.files = (cert, key, ca, crl_path)
        self._held: tuple[tuple[int, int, int] | None, ssl.SSLContext] | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            s = os.stat(self.files[3])
        except OSError:
            return None
        return (s.st_ino, s.st_size, s.st_mtime_ns)

    def context(self) -> ssl.SSLContext:
        seen = self._stat()
        held = self._held
        if held is None or held[0] != seen:
            held = (seen, server_context(*self.files))
            self._held = held
        return held[1]
