"""The gateway in front of every view: client certificate → identity → (token) → audit.

Order per request: find the verified client certificate (gunicorn's TLS socket, or the
header of a trusted nginx front), map it to an active account, check a bearer token if one
is presented, let the view run its policy check, then record the audit entry before the
response leaves. Refusals are recorded too, with their reason.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, Response, current_app, g, jsonify, request

from audit.record import Entry
from auth import policy, tokens
from auth.identity import Authenticator, Identity, Unauthenticated, lookup
from mapserver.errors import CityGridError

CERT_HEADER = "X-SSL-Client-Cert"

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), camera=(), microphone=()",
}


class ProxyRefused(Unauthenticated):
    status = 403
    code = "forbidden"


def trusted_networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()
    )


def is_trusted(addr: str | None, networks: tuple[Any, ...]) -> bool:
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def der_from_header(value: str) -> bytes:
    """nginx's $ssl_client_escaped_cert: a URL-encoded PEM certificate."""
    try:
        cert = x509.load_pem_x509_certificate(unquote(value).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise Unauthenticated("malformed") from None
    return cert.public_bytes(serialization.Encoding.DER)


def peer_certificate(environ: dict[str, Any], networks: tuple[Any, ...]) -> bytes | None:
    """DER of the client certificate verified by gunicorn's TLS, or forwarded by a trusted
    proxy; a forwarded header from anyone else is refused outright."""
    header = environ.get("HTTP_" + CERT_HEADER.upper().replace("-", "_"))
    addr = environ.get("REMOTE_ADDR")
    if header is not None:
        if not is_trusted(addr, networks):
            raise ProxyRefused("forged_header", "certificate header from an untrusted address")
        return der_from_header(header)
    sock = environ.get("gunicorn.socket")
    getpeercert: Callable[..., Any] | None = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    return getpeercert(binary_form=True)


class Gateway:
    """Wires identity, tokens and audit into a Flask app."""

    def __init__(
        self, app: Flask, ca_path: Path, keys_dir: Path, record: Callable[[Entry], object]
    ):
        from cryptography import x509 as _x509

        self.app = app
        self.ca = _x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
        settings = app.config["CITYGRID"]
        self.networks = trusted_networks(settings.trusted_proxies)
        pool = app.extensions["citygrid.pool"]

        def holder(sha256: str):  # type: ignore[no-untyped-def]
            with pool.connection() as conn:
                return lookup(conn, sha256)

        self.authenticator = Authenticator(self.ca, holder, ttl=settings.identity_cache_seconds)
        self.keys = tokens.KeySet(keys_dir)
        self.record = record
        app.before_request(self.before)
        app.after_request(self.after)
        app.extensions["citygrid.gateway"] = self

    def before(self) -> Response | None:
        g.started = time.perf_counter()
        g.request_id = uuid.uuid4().hex
        g.identity = None
        g.audit = {}
        try:
            der = peer_certificate(request.environ, self.networks)
            g.identity = self.authenticator.identify(der)
            auth = request.headers.get("Authorization", "")
            if auth:
                scheme, _, token = auth.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("bad_token", "Authorization must be a Bearer token")
                tokens.validate(self.keys, token.strip(), g.identity.cert_sha256)
        except Unauthenticated as exc:
            g.audit = {"action": "auth.refused", "reason": exc.reason}
            return problem(exc)
        return None

    def after(self, response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "application/json":
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers.pop("Server", None)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        try:
            self.record(entry_for(response))
        except Exception:  # noqa: BLE001 - an unrecorded answer must not leave
            current_app.logger.exception("audit entry not written")
            failed = jsonify(error="unavailable", message="audit log unavailable; try later")
            failed.status_code = 503
            return failed
        return response


def problem(exc: CityGridError) -> Response:
    response = jsonify(error=exc.code, message=exc.message)
    response.status_code = exc.status
    return response


def entry_for(response: Response) -> Entry:
    """The audit entry describing this request and its response."""
    who: Identity | None = g.get("identity")
    info: dict[str, Any] = dict(g.get("audit") or {})
    action = str(info.pop("action", "") or request.endpoint or "unknown")
    status = response.status_code
    if status == 429:
        action, outcome = "rate_limit", "refused"
    elif status in (401, 403, 404, 405) or 400 <= status < 500:
        outcome = "refused"
    elif status >= 500:
        outcome = "error"
    else:
        outcome = "ok"
    started = g.get("started")
    latency = (time.perf_counter() - started) * 1000 if started else None
    size = response.calculate_content_length()
    return Entry(
        action=action,
        outcome=outcome,
        account=who.account if who else "",
        role=",".join(who.roles) if who else "",
        cert_serial=who.cert_serial if who else "",
        cert_sha256=who.cert_sha256 if who else "",
        client_addr=request.remote_addr or "",
        method=request.method,
        resource=str(info.pop("resource", request.path)),
        request_id=g.get("request_id", ""),
        status=status,
        bytes=size,
        latency_ms=latency,
        detail=info,
    )


def identity() -> Identity:
    """The authenticated identity of this request (the gateway guarantees one in views)."""
    who: Identity | None = g.get("identity")
    if who is None:
        raise Unauthenticated("no_certificate", "a client certificate is required")
    return who


def authorize(req: policy.Request) -> Identity:
    """Check the policy for this request's identity; raises Forbidden (403)."""
    who = identity()
    g.audit = {**(g.get("audit") or {}), "action": req.action}
    policy.check(who.roles, req, who.streets)
    return who


def audit_note(**fields: Any) -> None:
    """Add facts about this request (resource, map, level, index…) to its audit entry."""
    g.audit = {**(g.get("audit") or {}), **fields}


def gateway() -> Gateway:
    return current_app.extensions["citygrid.gateway"]
