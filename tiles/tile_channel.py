"""The renderer's tile channel: `GET /tile/PRODUCT/Z/X/Y.png` over kept-alive mutual TLS,
one thread per connection (`citygrid renderer serve --tile-bind`; the gateway asks it at
`renderer_tile_url`).

Why a channel of its own: a cached tile is what every user of the gateway waits for, and in
two zones each one crosses to the renderer. Through the renderer's gunicorn a kept-alive
request passes from the poller to a pool thread and back, and through Flask: 0.8 ms at p50
for a cached tile (bench/zones.py). Here a thread waits on its own connection and answers
at once: the hop is a third of that. The gateway keeps few connections (tiles.remote), so
few threads wait.

It answers that one request and refuses everything else as the app would (a JSON problem:
404 for another path, 405 for another method). A request head is HTTP/1.1 with at most
HEAD_MOST bytes in FIELDS_MOST fields and no body; anything else is refused (400, 431) and
the connection closed, as is a connection idle for KEEPALIVE seconds. The checks and the
audit are the app's own (tiles.renderer_app.Renderer, tiles.renderer_audit): the
certificate again with the CRL held now, the grant, its map, level and streets; an entry
per answer, refusals committed before they leave. An accepted answer's entry, written
behind, is made and handed to the writer once the answer has been sent: the gateway does
not wait for it (its p50 a third lower and its p99 a quarter, bench/zones.py).

TLS: the handshake requires a certificate of CityGrid's CA and checks the CRL
(tiles.renderer_tls: the context is built again when the CRL changes); it must finish
within `handshake_timeout_seconds`, and a refused one is a `tls.refused` entry of the
gunicorn worker's refusal log. At most CONNECTIONS_MOST connections are open per process;
more are closed at once.
"""

from __future__ import annotations

import http
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from werkzeug.datastructures import ETags
from werkzeug.http import parse_etags

from audit.record import Entry
from auth.tls_reasons import reason_of
from mapserver.errors import CityGridError, NotFound
from tiles import renderer_audit
from tiles.renderer_app import Refused, Renderer
from tiles.renderer_audit import Answered, Peer, Trail
from tiles.renderer_tls import ContextFiles
from tiles.scope import tile_index

log = logging.getLogger("citygrid.renderer")

HEAD_MOST = 8192  # bytes of a request line and its header fields
FIELDS_MOST = 30  # header fields (gunicorn's limit_request_fields for the renderer)
KEEPALIVE = 75.0  # seconds a connection may idle (the gateway uses it for at most 60)
CONNECTIONS_MOST = 256  # open connections per process
_TOKEN_CHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_CONTROL_CHARS = r"\x00-\x08\x0a-\x1f\x7f"  # every control character but tab
_TOKEN = re.compile(_TOKEN_CHAR + "+")
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
_FIELD = re.compile(f"({_TOKEN_CHAR}+):([^{_CONTROL_CHARS}]*)")  # NAME: VALUE in one match
_TILE = re.compile(r"/tile/([^/]+)/([^/]+)/([^/]+)/([^/]+)")


_NONE_HELD = ETags()  # no If-None-Match: the client holds no version (never changed)
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}" for s in http.HTTPStatus}


class Head(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    close: bool  # the client asked to close after this answer


class BadRequest(CityGridError):
    """A request this channel does not parse: answered, then the connection is closed."""

    status = 400
    code = "bad_request"


class HeadTooLarge(BadRequest):
    status = 431
    code = "request_header_fields_too_large"


class WrongMethod(CityGridError):
    status = 405
    code = "http"


def parse_head(raw: bytes) -> Head:
    """The request line and header fields of one request; `raw` ends with the blank line."""
    if len(raw) > HEAD_MOST:
        raise HeadTooLarge(f"a request head is at most {HEAD_MOST} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("a request head is ASCII") from None
    lines = text[: -len("\r\n\r\n")].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest("the request line is METHOD /PATH HTTP/1.1")
    method, target = parts[0], parts[1]
    if not target.startswith("/") or _CONTROL.search(target):
        raise BadRequest("the request target is an absolute path")
    if len(lines) - 1 > FIELDS_MOST:
        raise HeadTooLarge(f"a request has at most {FIELDS_MOST} header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        field = _FIELD.fullmatch(line)
        if field is None:
            raise BadRequest("a header field is NAME: VALUE")
        name, value = field[1].lower(), field[2].strip(" \t")
        if name in headers:
            if name in ("authorization", "content-length", "host", "transfer-encoding"):
                raise BadRequest(f"{name} is given twice")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        raise BadRequest("a tile request has no body")
    close = "close" in headers.get("connection", "").lower()
    return Head(method, target.split("?", 1)[0], headers, close)


def _response(status: int, headers: list[tuple[str, str]], body: bytes, close: bool) -> bytes:
    lines = [_STATUS_LINES[status]]  # every status this channel answers is an HTTPStatus
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _problem(exc: CityGridError) -> tuple[bytes, str]:
    body = json.dumps({"error": exc.code, "message": exc.message}).encode()
    return body, f"{exc.code}: {exc.message}"


class TileChannel:
    def __init__(
        self,
        renderer: Renderer,
        trail: Trail,
        context: Callable[[], ssl.SSLContext],
        refused: Callable[[Entry], None],
        handshake_seconds: float,
    ):
        self.renderer = renderer
        self.trail = trail
        self.context = context
        self.refused = refused  # a refused handshake's entry (the worker's refusal log)
        self.handshake_seconds = handshake_seconds
        self.open = 0
        self._lock = threading.Lock()

    # -- one request

    def answer(
        self, head: Head, der: bytes | None, addr: str
    ) -> tuple[int, bytes, Answered | None]:
        """The response's status and bytes for `head`, and what is left to record once they
        have been sent: an accepted answer while the audit writer keeps up (its entry is
        written behind, so it is made after the answer leaves, off the gateway's wait);
        None when the entry was committed before (a refusal, or a writer falling behind)."""
        started = time.monotonic()
        peer: Peer | None = None
        grant = None
        etag, reason, body, status = "", "", b"", 200
        try:
            peer, problem, crl = self.renderer.admit(der)
            if problem:
                raise Refused(problem)
            self.renderer.crl.current(crl)
            grant = self.renderer.grant(peer.sha256, head.headers.get("authorization", ""))
            found = _TILE.fullmatch(head.path)
            if found is None:
                raise NotFound("the tile channel answers GET /tile/PRODUCT/Z/X/Y.png only")
            if head.method != "GET":
                raise WrongMethod("Method Not Allowed")
            name, z, x, y = found.groups()
            held = head.headers.get("if-none-match")
            known = parse_etags(held) if held else _NONE_HELD
            hit = self.renderer.tile(grant, name, *tile_index(z, x, y), known)
            etag = hit.etag
            if hit.data is None:
                status = 304
            else:
                body = hit.data
        except CityGridError as exc:
            status = exc.status
            body, reason = _problem(exc)
        except Exception:  # noqa: BLE001 - logged; the client learns no more than the app's 500
            log.exception("tile channel error")
            status, reason = 500, "internal: internal error"
            body = json.dumps({"error": "internal", "message": "internal error"}).encode()
        answered = Answered(
            peer=peer, grant=grant, authorization=head.headers.get("authorization", ""),
            endpoint="tile" if status < 400 else "tile_channel", method=head.method,
            path=head.path, client_addr=addr, request_id=renderer_audit.request_id(),
            status=status, size=len(body), reason=reason, started=started, channel="tiles",
        )  # fmt: skip
        behind = status < 400 and self.trail.keeping_up()
        try:
            if not behind:
                self.trail.now(renderer_audit.entry(answered))
        except Exception:  # noqa: BLE001 - unaudited is never answered
            log.warning("renderer audit unavailable; refusing", exc_info=True)
            body = json.dumps(
                {"error": "audit_unavailable",
                 "message": "the renderer cannot write its audit log; try later"}
            ).encode()  # fmt: skip
            return (
                503, _response(503, [("Content-Type", "application/json")], body, head.close), None
            )  # fmt: skip
        if status == 304:
            headers = [("ETag", f'"{etag}"')]
        elif status == 200:
            headers = [("Content-Type", "image/png"), ("ETag", f'"{etag}"')]
        else:
            headers = [("Content-Type", "application/json")]
        return status, _response(status, headers, body, head.close), answered if behind else None

    def refuse(self, exc: BadRequest, der: bytes | None, addr: str) -> bytes:
        """A request that did not parse: its entry committed, then its answer (the
        connection is closed after it)."""
        peer = self.renderer.admit(der)[0]
        body, reason = _problem(exc)
        answered = Answered(
            peer=peer, grant=None, authorization="", endpoint="tile_channel", method="",
            path="", client_addr=addr, request_id=renderer_audit.request_id(),
            status=exc.status, size=len(body), reason=reason, started=None, channel="tiles",
        )  # fmt: skip
        try:
            self.trail.now(renderer_audit.entry(answered))
        except Exception:  # noqa: BLE001 - unaudited is never answered
            return b""
        return _response(exc.status, [("Content-Type", "application/json")], body, True)

    # -- connections

    def serve(self, listener: socket.socket) -> None:
        """Accept on `listener` until it is closed, a thread for each connection."""
        while True:
            try:
                sock, address = listener.accept()
            except OSError:
                return
            with self._lock:
                full = self.open >= CONNECTIONS_MOST
                if not full:
                    self.open += 1
            if full:
                sock.close()
                continue
            threading.Thread(
                target=self._connection, args=(sock, address), name="tile-channel", daemon=True
            ).start()

    def _connection(self, raw: socket.socket, address: Any) -> None:
        addr = str(address[0]) if address else ""
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.settimeout(self.handshake_seconds)
            try:
                sock = self.context().wrap_socket(raw, server_side=True)
            except (OSError, ValueError) as exc:
                why = "handshake_timeout" if isinstance(exc, TimeoutError) else reason_of(exc)
                self.refused(
                    Entry(action="tls.refused", outcome="refused", client_addr=addr,
                          resource="tls", detail={"reason": why, "tls_error": str(exc)[:200],
                                                  "channel": "tiles"})
                )  # fmt: skip
                return
            with sock:
                sock.settimeout(KEEPALIVE)
                self._requests(sock, sock.getpeercert(binary_form=True), addr)
        except OSError:
            pass  # the client went away, or idled past KEEPALIVE
        finally:
            raw.close()
            with self._lock:
                self.open -= 1

    def _requests(self, sock: ssl.SSLSocket, der: bytes | None, addr: str) -> None:
        buffer = b""
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > HEAD_MOST:
                    too_large = HeadTooLarge(f"a request head is at most {HEAD_MOST} bytes")
                    sock.sendall(self.refuse(too_large, der, addr))
                    return
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                end = buffer.find(b"\r\n\r\n")
            raw, buffer = buffer[: end + 4], buffer[end + 4 :]
            try:
                head = parse_head(raw)
            except BadRequest as exc:
                sock.sendall(self.refuse(exc, der, addr))
                return
            _, out, behind = self.answer(head, der, addr)
            try:
                sock.sendall(out)
            finally:  # sent or not, it was answered
                if behind is not None:
                    self.trail.answered_behind(behind)
            if head.close:
                return


def listen(bind: str) -> socket.socket:
    """A listening socket on HOST:PORT that the renderer's worker processes share
    (SO_REUSEPORT: the kernel spreads new connections over them)."""
    from mapserver.serve import split_bind

    host, port = split_bind(bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host.strip("[]"), port))
    listener.listen(128)
    return listener


def start_in_worker(worker: Any, bind: str) -> TileChannel:
    """Serve the channel from a gunicorn worker of the renderer (its app loaded): the app's
    renderer and audit trail, the worker's refusal log and handshake timeout."""
    import os

    app = worker.wsgi
    files = ContextFiles(
        os.environ["CITYGRID_TLS_RENDERER_CERT"],
        os.environ["CITYGRID_TLS_RENDERER_KEY"],
        os.environ["CITYGRID_TLS_RENDERER_CA"],
        os.environ.get("CITYGRID_TLS_RENDERER_CRL", ""),
    )
    channel = TileChannel(
        app.extensions["citygrid-renderer"],
        app.extensions["citygrid-renderer-trail"],
        files.context,
        worker.refusals.add,
        worker.handshake_seconds,
    )
    threading.Thread(
        target=channel.serve, args=(listen(bind),), name="tile-channel-accept", daemon=True
    ).start()
    return channel
