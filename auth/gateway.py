"""The gateway in front of every view: client certificate → identity → (token) → audit.

Order per request: find the verified client certificate (gunicorn's TLS socket, or the
header nginx sets on the Unix socket only it can reach), map it to an active account,
check a bearer token if one is presented, let the view run its policy check, then record
the audit entry before the response leaves. Refusals are recorded too, with their reason.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask import Flask, Response, current_app, g, jsonify, request

from audit.record import Entry
from auth import pki, policy, tokens
from auth.access import Declarations, ScopeContext
from auth.identity import Authenticator, Identity, Unauthenticated
from auth.raw_responses import UNAVAILABLE
from auth.security_headers import REQUEST_ID_KEY
from auth.tls_reasons import REASONS
from mapserver import text_limits
from mapserver.errors import CityGridError

CERT_HEADER = "X-SSL-Client-Cert"


class ProxyRefused(Unauthenticated):
    status = 403
    code = "forbidden"


BEHIND_NGINX_ENV = "CITYGRID_TLS_BEHIND_NGINX"  # set by `citygrid serve --behind-nginx`
VERIFY_HEADER = "X-SSL-Client-Verify"  # nginx's $ssl_client_verify
REAL_IP_HEADER = "X-Real-IP"  # nginx's $remote_addr


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


_REAL_IP_KEY = _environ_key(REAL_IP_HEADER)


class Front(NamedTuple):
    """Who verified the client certificate: gunicorn's own TLS (direct), or nginx, which
    reaches the app only over the Unix socket `citygrid serve --behind-nginx` binds (0660,
    nginx's group). Nothing else — no address, no header — makes a request nginx's."""

    nginx: bool

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Front:
        environ = os.environ if environ is None else environ
        return cls(nginx=environ.get(BEHIND_NGINX_ENV) == "1")

    def is_proxy_channel(self, environ: Mapping[str, Any]) -> bool:
        sock = environ.get("gunicorn.socket")
        return self.nginx and getattr(sock, "family", None) == socket.AF_UNIX


def client_address(environ: Mapping[str, Any], front: Front) -> str:
    """The client's address: nginx's X-Real-IP on nginx's channel, else the peer's."""
    if front.is_proxy_channel(environ):
        return _address(environ.get(_REAL_IP_KEY, ""))
    return str(environ.get("REMOTE_ADDR") or "")


@functools.lru_cache(maxsize=4096)
def _address(value: str) -> str:
    """An address header's value in its canonical form, or "" if it is none (remembered:
    a client sends the same one with every request)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


def der_from_header(value: str) -> bytes:
    """nginx's $ssl_client_escaped_cert: a URL-encoded PEM certificate."""
    der = _der_of_pem(value)
    if der is None:
        raise Unauthenticated("malformed")
    return der


@functools.lru_cache(maxsize=1024)
def _der_of_pem(value: str) -> bytes | None:
    """The DER of an escaped PEM certificate, or None if it is none: remembered, since a
    client sends the same certificate with every request (a pure function of the header)."""
    try:
        cert = x509.load_pem_x509_certificate(unquote(value).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None
    return cert.public_bytes(serialization.Encoding.DER)


def described(der: bytes | None) -> dict[str, str]:
    """Who a (possibly refused) certificate names, as far as it parses, for the audit."""
    if not der:
        return {}
    try:
        cert = x509.load_der_x509_certificate(der)
        return {
            "cert_subject": cert.subject.rfc4514_string(),
            "cert_serial": format(cert.serial_number, "x"),
            "cert_sha256": pki.thumbprint(cert),
        }
    except ValueError:
        return {"cert_sha256": hashlib.sha256(der).hexdigest()}


def nginx_refusal(verdict: str) -> str | None:
    """The reason for nginx's $ssl_client_verify ("SUCCESS", "NONE", "FAILED:why")."""
    if verdict == "SUCCESS":
        return None
    if verdict == "NONE":
        return "no_certificate"
    text = verdict.lower()
    return next((r for needle, r in REASONS if needle.lower() in text), "tls_verify_failed")


def peer_certificate(environ: Mapping[str, Any], front: Front) -> bytes | None:
    """DER of the client certificate verified by gunicorn's TLS, or by nginx on its own
    channel (whose verdict must be SUCCESS). A forwarded certificate header arriving any
    other way — in direct-TLS mode always — is refused outright."""
    header = environ.get(_environ_key(CERT_HEADER))
    if front.is_proxy_channel(environ):
        verdict = environ.get(_environ_key(VERIFY_HEADER))
        if verdict is None:
            raise ProxyRefused("proxy_verdict_missing", "the front sent no verification result")
        der = der_from_header(header) if header else None
        reason = nginx_refusal(verdict)
        if reason is not None or der is None:
            raise Unauthenticated(reason or "no_certificate", **described(der))
        return der
    if header is not None or front.nginx:
        # nginx mode answers only nginx's socket; direct TLS never believes a header.
        raise ProxyRefused("forged_header", "certificate header not accepted on this channel")
    sock = environ.get("gunicorn.socket")
    getpeercert: Callable[..., Any] | None = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    return getpeercert(binary_form=True)


class Gateway:
    """Identity, the policy decision and the audit entry around every request.

    `identify` runs first (certificate → account, token), then the rate limiter, then
    `decide` asks the policy with what the route's declaration derives from the URL; the
    view runs only after a decision. `after` turns a success that had no decision into a 500
    (`policy.missing`) and records the entry before the response leaves; the security
    headers are stamped on every answer below the app (auth.security_headers).
    """

    def __init__(
        self,
        app: Flask,
        ca_path: Path,
        keys_dir: Path,
        record: Callable[[Entry], object],
        holder: Callable[[str], Any],
        declarations: Declarations,
        scope: Callable[[], ScopeContext],
    ):
        self.app = app
        self.ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
        settings = app.config["CITYGRID"]
        self.front = Front.from_environment()
        self.authenticator = Authenticator(
            self.ca,
            holder,
            ttl=settings.identity_cache_seconds,
            listen=settings.serving_database_url,  # cache only while changes are heard
        )
        self.keys = tokens.KeySet(keys_dir)
        self.record = record
        self.declarations = declarations
        self.scope = scope

    def init_identity(self, app: Flask) -> None:
        """Identity first; `after` registered first runs last, on the final response."""
        app.before_request(self.before)
        app.after_request(self.after)

    def init_decision(self, app: Flask) -> None:
        """The policy decision, after the rate limiter's check."""
        app.before_request(self.decide)

    def before(self) -> Response | None:
        g.started = time.perf_counter()
        g.request_id = request.environ[REQUEST_ID_KEY] = uuid.uuid4().hex
        g.identity = None
        g.audit = {}
        environ = request.environ
        environ["REMOTE_ADDR"] = request.remote_addr = client_address(environ, self.front)
        try:
            g.identity = self.identify(environ)
        except Unauthenticated as exc:
            g.audit = {"action": "auth.refused", "reason": exc.reason, **exc.detail}
            return problem(exc)
        return None

    def identify(self, environ: Mapping[str, Any]) -> Identity:
        """The active account behind the request's verified client certificate, and its bearer
        token checked if it presents one; raises Unauthenticated, whose detail describes the
        certificate as far as it parses (for the audit). Used by `before` and by the cached
        tiles' own path (tiles.hot_path)."""
        der: bytes | None = None
        try:
            der = peer_certificate(environ, self.front)
            who = self.authenticator.identify(der)
            auth = environ.get("HTTP_AUTHORIZATION", "")
            if auth:
                scheme, _, token = auth.partition(" ")
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("bad_token", "Authorization must be a Bearer token")
                tokens.validate(self.keys, token.strip(), who.cert_sha256)
        except Unauthenticated as exc:
            exc.detail = {**described(der), **exc.detail}
            raise
        return who

    def decide(self) -> Response | None:
        """Ask the policy before any other work: no query, cache lookup or 404 first."""
        if request.endpoint is None:
            return None  # no such route: routing answers 404/405, nothing is touched
        declared = self.declarations.of(current_app, request.endpoint)
        if declared is None:
            g.audit = {**g.audit, "action": "policy.missing"}
            return problem(PolicyMissing())
        who = identity()
        try:
            req = declared.request(self.scope(), request.view_args or {}, request.args)
            g.audit = {**g.audit, "action": req.action}
            policy.check(who.roles, req, who.streets)
            text_limits.check_request(request.view_args or {}, request.args)  # no NUL in a view
        except CityGridError as exc:
            return problem(exc)
        g.decision = req
        return None

    def after(self, response: Response) -> Response:
        if response.status_code < 400 and g.get("decision") is None:
            g.audit = {**(g.get("audit") or {}), "action": "policy.missing"}
            response = problem(PolicyMissing())
        try:
            self.record(entry_for(response))
        except Exception:  # noqa: BLE001 - an unrecorded answer must not leave
            current_app.logger.exception("audit entry not written")
            failed = jsonify(error=UNAVAILABLE.code, message=UNAVAILABLE.message)
            failed.status_code = UNAVAILABLE.status
            return failed
        return response


class PolicyMissing(CityGridError):
    """A route answered without a policy decision: a defect, refused rather than served."""

    status = 500
    code = "policy_missing"

    def __init__(self) -> None:
        super().__init__("this route has no policy decision; refused")


def problem(exc: CityGridError) -> Response:
    response = jsonify(error=exc.code, message=exc.message)
    response.status_code = exc.status
    return response


def entry_for(response: Response) -> Entry:
    """The audit entry describing this request and its response."""
    size = g.get("sent_bytes") if "X-Accel-Redirect" in response.headers else None
    if size is None:  # else the front sends the file: its size
        size = response.calculate_content_length()
    return entry_of(
        g.get("identity"),
        g.get("audit") or {},
        request.endpoint,
        request,
        response.status_code,
        size,
        g.get("started"),
        g.get("request_id", ""),
    )


class Asked(Protocol):
    """What an audit entry says of the request itself (a werkzeug Request has these)."""

    @property
    def remote_addr(self) -> str | None: ...

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


def entry_of(
    who: Identity | None,
    audit: Mapping[str, Any],
    endpoint: str | None,
    asked: Asked,
    status: int,
    size: int | None,
    started: float | None,
    request_id: str,
) -> Entry:
    """The audit entry of a request answered with `status` and `size` bytes: `audit` holds
    what the gateway and the view noted (action, resource, reason, …), `started` is the
    request's time.perf_counter() at its start."""
    info: dict[str, Any] = dict(audit)
    action = str(info.pop("action", "") or endpoint or "unknown")
    if status == 429:
        action, outcome = "rate_limit", "refused"
    elif status in (401, 403, 404, 405) or 400 <= status < 500:
        outcome = "refused"
    elif status >= 500:
        outcome = "error"
    else:
        outcome = "ok"
    latency = (time.perf_counter() - started) * 1000 if started else None
    return Entry(
        action=action,
        outcome=outcome,
        account=who.account if who else "",
        role=",".join(who.roles) if who else "",
        cert_serial=who.cert_serial if who else "",
        cert_sha256=who.cert_sha256 if who else "",
        client_addr=asked.remote_addr or "",
        method=asked.method,
        resource=str(info.pop("resource", asked.path)),
        request_id=request_id,
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


def refine(req: policy.Request) -> Identity:
    """A second, finer check inside a view that has already been decided (e.g. the street
    of the exact point identified); raises Forbidden (403)."""
    who = identity()
    policy.check(who.roles, req, who.streets)
    return who
