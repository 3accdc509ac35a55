"""The device's HTTPS link: TLS with the device certificate, a bearer token bound to it
(POST /auth/token, renewed before it runs out), and nothing else. Every failure of the
link itself (refused, reset, cut mid-request or mid-answer, timed out) is `LinkDown`;
what the server answered is an `Answer`."""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.parse
from collections.abc import Mapping

from mapserver.device_client import config
from mapserver.device_client.plan import Answer

TOKEN_MARGIN_S = 60  # renew a token this long before it expires


class LinkDown(Exception):
    """The request may or may not have reached the server; its answer did not arrive."""


class Link:
    def __init__(self, paths: config.Paths, settings: config.ClientSettings):
        url = urllib.parse.urlsplit(settings.server)
        if url.scheme != "https" or not url.hostname:
            raise ValueError("server must be an https:// URL")
        self.host, self.port = url.hostname, url.port or 443
        self.timeout = settings.timeout_s
        self.reuse = settings.reuse_connections
        self.context = ssl.create_default_context(cafile=str(paths.ca))
        config.private_bytes(paths.device_key)  # refuse a key others can read
        self.context.load_cert_chain(str(paths.device_crt), str(paths.device_key))
        self._conn: http.client.HTTPSConnection | None = None
        self._token: str | None = None
        self._token_until = 0.0
        self.requests = 0
        self.body_bytes = 0  # request bodies handed to the link (retries included)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        """One request; raises LinkDown when no whole answer came back."""
        conn = self._conn or http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=self.timeout
        )
        self._conn = conn
        sent = dict(headers or {})
        if not self.reuse:
            sent["Connection"] = "close"
        self.requests += 1
        self.body_bytes += len(body)
        try:
            conn.request(method, path, body=body or None, headers=sent)
            response = conn.getresponse()
            data = response.read()
        except (TimeoutError, OSError, http.client.HTTPException, ssl.SSLError) as exc:
            self.close()
            raise LinkDown(f"{type(exc).__name__}: {exc}") from None
        if not self.reuse or response.will_close:
            self.close()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, headers, data)

    def token(self, renew: bool = False) -> str:
        """A bearer token bound to the device certificate, renewed when near its end."""
        if renew or self._token is None or time.monotonic() > self._token_until:
            answer = self.send("POST", "/auth/token")
            doc = answer.json()
            if answer.status != 200 or not isinstance(doc, dict) or "access_token" not in doc:
                raise TokenRefused(answer)
            self._token = str(doc["access_token"])
            lifetime = float(doc.get("expires_in", 600))
            self._token_until = time.monotonic() + max(lifetime - TOKEN_MARGIN_S, lifetime / 2)
        return self._token

    def call(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> Answer:
        """A request with the bearer token."""
        sent = {"Authorization": f"Bearer {self.token()}", **(headers or {})}
        return self.send(method, path, sent, body)


class TokenRefused(Exception):
    def __init__(self, answer: Answer):
        code, message = answer.error()
        super().__init__(message or f"HTTP {answer.status}")
        self.answer = answer
