"""The security headers and the request id on every answer, stamped where it leaves the app.

A WSGI layer around the Flask app adds them to the header list the app hands to the server,
so that every answer carries them (errors, refusals and routing's 404 included) and a
cached tile pays for a few list operations, not for eight look-ups in werkzeug's `Headers`
(each lower-cases every header already there: an eighth of a tile's time in the app).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

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
REQUEST_ID_KEY = "citygrid.request_id"  # the WSGI environ's key the gateway sets

_SECURITY = [(name.lower(), name, value) for name, value in SECURITY_HEADERS.items()]
_REPLACED = {"server", "x-request-id"}  # no banner; the request id is always the gateway's

Headers = list[tuple[str, str]]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def stamped(headers: Headers, request_id: str) -> Headers:
    """`headers` without a Server header, with every security header the answer does not set
    itself, `Cache-Control: no-store` on JSON that says nothing of caching, and the id."""
    kept: Headers = []
    names: set[str] = set()
    json_body = False
    for name, value in headers:
        low = name.lower()
        if low in _REPLACED:
            continue
        if low == "content-type":
            json_body = value.partition(";")[0].strip().lower() == "application/json"
        names.add(low)
        kept.append((name, value))
    kept += [(name, value) for low, name, value in _SECURITY if low not in names]
    if json_body and "cache-control" not in names:
        kept.append(("Cache-Control", "no-store"))
    kept.append(("X-Request-Id", request_id))
    return kept


class SecurityHeaders:
    """WSGI middleware: `stamped` on each answer's headers."""

    def __init__(self, app: WsgiApp):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            request_id = environ.get(REQUEST_ID_KEY, "")
            return start_response(status, stamped(headers, request_id), exc_info)

        return self.app(environ, start)
