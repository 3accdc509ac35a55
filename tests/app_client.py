"""The production app in-process, for tests that need many requests but no TLS handshake.

Accounts get real certificates from a real CA; the app checks them exactly as it does
behind gunicorn. Only the TLS socket is replaced: `PeerSocket` hands the view the DER
certificate that gunicorn's socket would have verified (the TLS paths themselves are
tested over real TLS in test_gateway.py and test_tls_edge.py).
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from auth import accounts, certs, pki, signed_action
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
        self._signing: dict[str, tuple[Any, Any]] = {}
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

    def signing(self, name: str) -> tuple[Any, Any]:
        """A signing certificate and key for `name` (issued on first use)."""
        if name not in self._signing:
            with db.transaction(self.settings) as conn:
                certs.issue(conn, self.store, SECRET, name, pki.Kind.SIGNING, self.out)
            cert = x509.load_pem_x509_certificates((self.out / f"{name}.signing.crt").read_bytes())[
                0
            ]
            key = serialization.load_pem_private_key(
                (self.out / f"{name}.signing.key").read_bytes(), None
            )
            self._signing[name] = (cert, key)
        return self._signing[name]

    def envelope(
        self, name: str, action: str, resource: str, params: dict[str, Any]
    ) -> dict[str, str]:
        """A signed action of `name`, with a fresh nonce asked of the app."""
        cert, key = self.signing(name)
        nonce = self.client(name).post("/auth/nonce").get_json()["nonce"]
        data = signed_action.payload(
            action, resource, params, nonce, pki.now(), pki.thumbprint(cert)
        )
        return {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
            "certificate": pki.pem(cert).decode(),
        }

    def close(self) -> None:
        if self._app is not None:
            from mapserver.services import services

            found = services(self._app)
            found.audit.close()
            found.pool.close()
            if self.settings.renderer_url:  # the app's CRL watcher stops with it
                from tiles import crl_push

                crl_push.stop_watching()
