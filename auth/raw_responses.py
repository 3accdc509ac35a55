"""Answers gunicorn gives before the app is reached (malformed or oversized requests): the
same JSON problems, security headers and request id as the app's, and no Server header.

One table maps gunicorn's parse errors to a status, a code and a safe message; the message
never echoes the request, so an overlong or hostile request line is not reflected back.
"""

from __future__ import annotations

import http
import json
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography import x509
from gunicorn import util
from gunicorn.http import errors as gerrors
from gunicorn.http import wsgi
from gunicorn.http.body import Body, ChunkedReader, LengthReader

from audit.record import Entry
from auth import pki
from auth.security_headers import SECURITY_HEADERS


class Problem(NamedTuple):
    status: int
    code: str
    message: str


# First match wins: the limit errors before the wider classes they do not inherit from anyway.
TABLE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Problem], ...] = (
    (gerrors.LimitRequestLine, Problem(414, "uri_too_long", "the request line is too long")),
    (
        gerrors.LimitRequestHeaders,
        Problem(431, "header_fields_too_large", "too many header fields, or one too large"),
    ),
    (
        (gerrors.InvalidRequestLine, gerrors.InvalidRequestMethod, gerrors.InvalidHTTPVersion),
        Problem(400, "bad_request_line", "the request line is malformed"),
    ),
    (
        (
            gerrors.InvalidHeader,
            gerrors.InvalidHeaderName,
            gerrors.ObsoleteFolding,
            gerrors.InvalidSchemeHeaders,
        ),
        Problem(400, "bad_header", "a header field is malformed"),
    ),
    (
        (gerrors.InvalidChunkSize, gerrors.ChunkMissingTerminator, gerrors.InvalidChunkExtension),
        Problem(400, "bad_body", "the chunked request body is malformed"),
    ),
    (
        gerrors.UnsupportedTransferCoding,
        Problem(501, "unsupported_transfer_coding", "this transfer coding is not supported"),
    ),
    (gerrors.ExpectationFailed, Problem(417, "expectation_failed", "this expectation is not met")),
    (
        (gerrors.InvalidProxyLine, gerrors.InvalidProxyHeader, gerrors.InvalidH2CPreface),
        Problem(400, "bad_request", "the request is malformed"),
    ),
    (gerrors.ForbiddenProxyRequest, Problem(403, "forbidden", "request forbidden")),
)
INTERNAL = Problem(500, "internal", "internal error")
UNAVAILABLE = Problem(503, "unavailable", "audit log unavailable; try later")


def classify(exc: BaseException) -> Problem:
    """The answer to a request gunicorn could not hand to the app; anything else is ours (500)."""
    if isinstance(exc, (gerrors.InvalidResponseHeader, gerrors.InvalidResponseHeaderName)):
        return INTERNAL  # a header the app tried to send: the app's fault, not the client's
    for kinds, problem in TABLE:
        if isinstance(exc, kinds):
            return problem
    return INTERNAL


def render(problem: Problem, request_id: str) -> bytes:
    """The whole HTTP/1.1 response, closing the connection."""
    body = json.dumps({"error": problem.code, "message": problem.message}).encode()
    lines = [
        f"HTTP/1.1 {problem.status} {http.HTTPStatus(problem.status).phrase}",
        f"Date: {util.http_date()}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
        f"X-Request-Id: {request_id}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Peer(NamedTuple):
    """Who the TLS handshake says the client is, for the audit entry."""

    subject: str
    serial: str
    sha256: str


def peer(sock: Any) -> Peer | None:
    """The verified client certificate on a TLS socket (none on plain sockets)."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        der = getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return Peer(
        cert.subject.rfc4514_string(), format(cert.serial_number, "x"), pki.thumbprint(cert)
    )


class QuietResponse(wsgi.Response):
    """gunicorn's response without its Server header: no banner, not even a product name;
    and `Connection: close` for an answer given before its request's body was read."""

    def default_headers(self) -> list[str]:
        if body_left(getattr(self.req, "body", None)):
            # A 413 past a route's limit, a refusal before the view: gunicorn drains at most
            # 64 KiB for 5 s, then closes a connection it had announced kept alive, and the
            # client's next request on it finds it closed. Say close, and close.
            self.force_close()
        return [h for h in super().default_headers() if not h.lower().startswith("server:")]


def body_left(body: Any) -> bool:
    """Whether some of a request's body (gunicorn's Body) is not read yet."""
    if not isinstance(body, Body):
        return False
    reader = body.reader
    if body.buf.tell():
        return True
    if isinstance(reader, LengthReader):
        return reader.length > 0
    if isinstance(reader, ChunkedReader):  # its parser goes once the last chunk is read
        return reader.parser is not None or reader.buf.tell() > 0
    return False  # gunicorn gives a request no EOFReader


def refuse(
    log: Any,
    record: Callable[[Entry], object],
    req: Any,
    client: Any,
    addr: Any,
    exc: BaseException,
) -> None:
    """A worker's `handle_error`: an `http.refused` (or `http.error`) entry recorded by
    `record`, then the JSON problem; 503 instead if the entry could not be recorded."""
    problem = classify(exc)
    if problem.status >= 500:
        log.exception("Error handling request")
    else:
        log.warning("refused a request from %s: %s", addr[0] if addr else "", exc)
    request_id = uuid.uuid4().hex
    who = peer(client)
    path = getattr(req, "path", None)
    entry = Entry(
        action="http.refused" if problem.status < 500 else "http.error",
        outcome="refused" if problem.status < 500 else "error",
        cert_serial=who.serial if who else "",
        cert_sha256=who.sha256 if who else "",
        client_addr=str(addr[0]) if addr else "",
        method=str(getattr(req, "method", "") or "")[:16],
        resource=str(path)[:200] if path else "http",
        request_id=request_id,
        status=problem.status,
        detail={"reason": problem.code, **({"subject": who.subject} if who else {})},
    )
    try:
        record(entry)
    except Exception:  # noqa: BLE001 - an unrecorded answer must not leave
        log.exception("audit entry not written")
        problem = UNAVAILABLE
    try:
        util.write_nonblock(client, render(problem, request_id))
    except OSError:
        log.debug("could not send the error response")
