"""The production app in-process, for tests that need many requests but no TLS handshake.

Accounts get real certificates from a real CA; the app checks them exactly as it does
behind gunicorn. Only the TLS socket is replaced: `PeerSocket` hands the view the DER
certificate that gunicorn's socket would have verified (the TLS paths themselves are
tested over real TLS in test_gateway.py and test_tls_edge.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import create_app, db
from mapserver.settings import Settings

SECRET = b"in-process test passphrase"


class PeerSocket:
    """What a view sees of gunicorn's TLS socket: the peer's verified certificate."""

    def __init__(self, der: bytes):
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self.der


class Install:
    """A CA and accounts with certificates on a test database, and the app serving it."""

    def __init__(self, settings: Settings, out: Path, **overrides: Any):
        self.settings = dataclasses.replace(settings, **overrides)
        self.out = out
        self.store = CaStore(self.settings.pki_dir)
        if not self.store.exists():
            self.store.init(SECRET)
        self.der: dict[str, bytes] = {}
        self._app: Flask | None = None

    def account(self, name: str, roles: list[str], org: str | None = None) -> str:
        with db.transaction(self.settings) as conn:
            accounts.add(conn, name, roles, org)
            certs.issue(conn, self.store, SECRET, name, pki.Kind.PERSON, self.out)
            certs.publish_crl(conn, self.store, SECRET)
        cert = x509.load_pem_x509_certificate((self.out / f"{name}.crt").read_bytes())
        self.der[name] = cert.public_bytes(serialization.Encoding.DER)
        return name

    @property
    def app(self) -> Flask:
        if self._app is None:
            self._app = create_app(self.settings)
        return self._app

    def client(self, name: str | None) -> FlaskClient:
        environ: dict[str, Any] = {"REMOTE_ADDR": "127.0.0.1"}
        if name is not None:
            environ["gunicorn.socket"] = PeerSocket(self.der[name])
        client = self.app.test_client()
        client.environ_base.update(environ)
        return client

    def close(self) -> None:
        if self._app is not None:
            from mapserver.services import services

            services(self._app).pool.close()
