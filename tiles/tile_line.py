"""The gateway's side of the renderer's tile channel (tiles.tile_channel): one kept-alive
mutual-TLS connection that writes a GET and reads its answer.

The channel's answers are few and plain (a status line, Content-Type, ETag, Content-Length
and, when it closes, `Connection: close`), so they are read here directly rather than by
`http.client`, whose header parsing (the email package) was a fifth of the hop
(bench/zones.py). An answer without a Content-Length, or with a head over HEAD_MOST bytes, is
refused (`BadAnswer`, an `http.client.HTTPException`: the caller treats it as a broken
connection).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import NamedTuple

HEAD_MOST = 16384


class Reply(NamedTuple):
    status: int
    etag: str  # as sent, with its quotes
    body: bytes
    will_close: bool


class BadAnswer(http.client.HTTPException):
    pass


class TileLine:
    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float):
        self.host, self.port, self.context, self.timeout = host, port, context, timeout
        self.sock: ssl.SSLSocket | None = None
        self._buffer = b""

    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            return self.context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Reply:
        if body:
            raise ValueError("the tile channel takes no request body")
        if self.sock is None:
            self.sock = self._connect()
            self._buffer = b""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return self._read()

    def _read(self) -> Reply:
        assert self.sock is not None
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > HEAD_MOST:
                raise BadAnswer("the tile channel's answer head is too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise http.client.RemoteDisconnected("the tile channel closed the connection")
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
        head = buffer[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        status = parts[1] if len(parts) >= 2 else ""
        if parts[0] != "HTTP/1.1" or not (status.isascii() and status.isdigit()):
            raise BadAnswer(f"not an HTTP/1.1 status line: {head[0][:80]!r}")
        fields = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        size = fields.get("content-length", "")
        if not (size.isascii() and size.isdigit()) or len(size) > 15:
            raise BadAnswer("the tile channel's answer has no Content-Length")
        rest, need = buffer[end + 4 :], int(size)
        while len(rest) < need:
            chunk = self.sock.recv(max(65536, need - len(rest)))
            if not chunk:
                raise http.client.IncompleteRead(rest, need - len(rest))
            rest += chunk
        self._buffer = rest[need:]
        close = fields.get("connection", "").lower() == "close"
        return Reply(int(status), fields.get("etag", ""), rest[:need], close)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
