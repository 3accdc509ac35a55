"""The renderer's tile channel (tiles.tile_channel): cached tiles over kept-alive mutual TLS,
one thread per connection, with the app's checks and the app's audit.

The two zones run as separate gunicorn TLS processes (tests/zones.py), the renderer with its
channel; the gateway asks for tiles there. What the app refuses, the channel refuses with
the same status and reason, and each answer is an entry of the renderer's log naming the
channel. Requests it does not parse are refused and the connection closed; a connection
without a certificate of CityGrid's CA never completes its handshake and is a `tls.refused`
entry.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest

from tiles import grant as grants
from tiles.tile_channel import FIELDS_MOST, HEAD_MOST, BadRequest, HeadTooLarge, parse_head

from .tls import request
from .zones import Zones, grant_refusals, renderer_entries, tile_answers, two_zones
from .zones import renderer_log_size as _log_size
from .zones import sign_grant as _grant


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    with two_zones(tmp_path_factory.mktemp("channel")) as found:
        yield found


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def _connect(z: Zones, cert: tuple[Path, Path] | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(z.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    sock = socket.create_connection(("127.0.0.1", z.tile_port), timeout=30)
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def _read(sock: ssl.SSLSocket, buffer: bytearray) -> Answer | None:
    """One response from `sock` (what arrived beyond it stays in `buffer`); None at EOF."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk, "the answer's body was cut short"
        rest += chunk
    buffer[:] = rest[size:]
    return Answer(int(lines[0].split(" ")[1]), headers, rest[:size])


def _get(path: str, token: str | None = None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: renderer\r\n{auth}{extra}\r\n".encode()


def _tile(z: Zones) -> tuple[int, int, int]:
    level = request(z.gateway_port, "/tiles/topo500", z.ca, *z.person).json()["levels"][-1]
    t = level["tiles"]
    return level["level"], (t["x_min"] + t["x_max"]) // 2, (t["y_min"] + t["y_max"]) // 2


def _one(z: Zones, raw: bytes, cert: tuple[Path, Path] | None = None) -> Answer:
    with _connect(z, cert or z.service) as sock:
        sock.sendall(raw)
        found = _read(sock, bytearray())
    assert found is not None
    return found


def _channel_entries(z: Zones, since: int) -> list[dict[str, Any]]:
    return [e for e in renderer_entries(z, since) if e["detail"].get("channel") == "tiles"]  # type: ignore[attr-defined]


def _until(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return found


# -- the request head (pure)


def test_a_request_head_is_parsed_strictly() -> None:
    head = parse_head(
        b"GET /tile/topo500/3/1/2.png?x=1 HTTP/1.1\r\nHost: r\r\nAuthorization: Bearer t\r\n"
        b'If-None-Match: "a"\r\nIf-None-Match: "b"\r\nConnection: close\r\n\r\n'
    )
    assert head.method == "GET" and head.path == "/tile/topo500/3/1/2.png"
    assert head.headers["authorization"] == "Bearer t"
    assert head.headers["if-none-match"] == '"a", "b"' and head.close
    assert not parse_head(b"GET / HTTP/1.1\r\nHost: r\r\n\r\n").close
    spaced = parse_head(b"GET / HTTP/1.1\r\nX-A: \t v w \t\r\nX-B:\r\n\r\n").headers
    assert spaced["x-a"] == "v w" and spaced["x-b"] == ""
    bad = [
        b"GET /tile HTTP/1.1\r\n: x\r\n\r\n",  # no name
        b"GET /tile HTTP/1.1\r\nX: a\rb\r\n\r\n",  # a lone CR in a value
        b"GET /tile HTTP/1.0\r\n\r\n",  # HTTP/1.1 only
        b"GET  /tile HTTP/1.1\r\n\r\n",
        b"GET tile HTTP/1.1\r\n\r\n",
        b"G(T /tile HTTP/1.1\r\n\r\n",
        b"GET /tile\x01 HTTP/1.1\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nNo-Colon\r\n\r\n",
        b"GET /tile HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nX: \xc3\xa9\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
        b"GET /tile HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    for raw in bad:
        with pytest.raises(BadRequest) as refused:
            parse_head(raw)
        assert refused.value.status == 400, raw
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(FIELDS_MOST + 1))
    with pytest.raises(HeadTooLarge):
        parse_head(many + b"\r\n")
    with pytest.raises(HeadTooLarge):
        parse_head(b"GET / HTTP/1.1\r\nX: " + b"a" * HEAD_MOST + b"\r\n\r\n")


# -- the running channel


def test_the_gateway_asks_for_tiles_on_the_channel(zones: Zones) -> None:
    z, x, y = _tile(zones)
    mark = _log_size(zones)
    since = dt.datetime.now(dt.UTC)
    path = f"/tiles/topo500/{z}/{x}/{y}.png"
    first = request(zones.gateway_port, path, zones.ca, *zones.person)
    assert first.status == 200 and first.body.startswith(b"\x89PNG")
    etag = first.headers["ETag"]
    again = request(zones.gateway_port, path, zones.ca, *zones.person,
                    headers={"If-None-Match": etag})  # fmt: skip
    assert again.status == 304 and again.headers["ETag"] == etag
    found = _until(lambda: len(t := tile_answers(_channel_entries(zones, mark), since)) >= 2 and t)
    assert [a["status"] for a in found] == [200, 304]
    assert {a["resource"] for a in found} == {f"/tile/topo500/{z}/{x}/{y}.png"}
    assert found[0]["detail"]["grant_account"] == "zone-operator"
    assert found[0]["answer"]["bytes"] == len(first.body) and found[1]["answer"]["bytes"] == 0


def test_the_channel_refuses_what_the_app_refuses(zones: Zones, tmp_path: Path) -> None:
    z, x, y = _tile(zones)
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    ok = grants.Grant("zone-operator", ("topo500",), z, None)
    refusals = grant_refusals(zones, z, tmp_path)
    mark = _log_size(zones)
    since = dt.datetime.now(dt.UTC)  # an earlier test's run may be logged after `mark`
    for token, cert, status, words in refusals:
        for port in (zones.tile_port, zones.renderer_port):  # the channel, then the app
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            found = request(port, path, zones.ca, *(cert or zones.service), headers=headers)
            assert found.status == status, (port, words)
            assert words in found.json()["message"] and found.json()["error"], found.json()
    token = _grant(zones, ok)
    served = _one(zones, _get(path, token))
    assert served.status == 200 and served.body.startswith(b"\x89PNG")
    assert served.headers["content-type"] == "image/png"
    unchanged = _one(zones, _get(path, token, f"If-None-Match: {served.headers['etag']}\r\n"))
    assert unchanged.status == 304 and unchanged.body == b""
    assert unchanged.headers["etag"] == served.headers["etag"]
    outside = _one(zones, _get(f"/tile/topo500/{z}/{10**6}/{y}.png", token))
    assert outside.status == 404 and outside.headers["content-type"] == "application/json"
    assert _one(zones, _get("/picture", token)).status == 404
    posted = _one(zones, _get(path, token).replace(b"GET", b"POST", 1))
    assert posted.status == 405
    other = request(zones.renderer_port, "/tile/nosuchmap/1/1/1.png", zones.ca, *zones.service,
                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert _one(zones, _get("/tile/nosuchmap/1/1/1.png", token)).status == other.status == 403

    def logged() -> list[dict[str, Any]]:  # the refusals, the 404s, and the run of 200 and 304
        found = _channel_entries(zones, mark)
        enough = len(found) >= len(refusals) + 5 and len(tile_answers(found, since)) >= 2
        return found if enough else []

    entries = _until(logged)
    refused = [e for e in entries if e["outcome"] == "refused" and e["resource"] == path]
    assert len(refused) == len(refusals) + 1  # and the POST
    for entry, (_, _, status, words) in zip(refused, refusals, strict=False):
        assert entry["status"] == status and words in entry["detail"]["reason"], entry
    assert [a["status"] for a in tile_answers(entries, since)] == [200, 304]


def test_kept_alive_pipelined_and_closed_on_request(zones: Zones) -> None:
    z, x, y = _tile(zones)
    token = _grant(zones, grants.Grant("zone-operator", ("topo500",), z, None))
    paths = [f"/tile/topo500/{z}/{x + dx}/{y}.png" for dx in (-1, 0, 1)]
    with _connect(zones, zones.service) as sock:
        buffer = bytearray()
        sock.sendall(_get(paths[0], token))
        first = _read(sock, buffer)
        assert first is not None and first.status == 200
        sock.sendall(b"".join(_get(p, token) for p in paths))  # three at once: three answers
        answers = [_read(sock, buffer) for _ in paths]
        assert [a.status for a in answers if a is not None] == [200, 200, 200]
        assert answers[0] is not None and answers[0].body == first.body
        sock.sendall(_get(paths[1], token, "Connection: close\r\n"))
        last = _read(sock, buffer)
        assert last is not None and last.status == 200 and last.headers["connection"] == "close"
        assert _read(sock, buffer) is None  # the channel closed the connection


def test_an_accepted_answer_is_logged_after_it_has_left(zones: Zones) -> None:
    """An accepted answer's entry is made once its bytes are sent (written behind, off the
    gateway's wait): each of a pipelined burst is in the log, with the time it took, also
    for the last one, after which the connection closes."""
    z, x, y = _tile(zones)
    token = _grant(zones, grants.Grant("zone-burst", ("topo500",), z, None))
    paths = [f"/tile/topo500/{z}/{x + dx}/{y}.png" for dx in (-1, 0, 1)] * 10
    mark = _log_size(zones)
    with _connect(zones, zones.service) as sock:
        sock.sendall(b"".join(_get(p, token) for p in paths[:-1]))
        sock.sendall(_get(paths[-1], token, "Connection: close\r\n"))
        buffer = bytearray()
        answers = [_read(sock, buffer) for _ in paths]
        assert [a.status for a in answers if a is not None] == [200] * len(paths)
        assert _read(sock, buffer) is None
    mine = lambda: [  # noqa: E731
        e for e in _channel_entries(zones, mark) if e["detail"].get("grant_account") == "zone-burst"
    ]
    found = _until(lambda: len(t := tile_answers(mine())) >= len(paths) and t)
    assert [a["resource"] for a in found] == paths
    assert all(a["outcome"] == "ok" and a["status"] == 200 for a in found)
    assert all(a["answer"]["latency_us"] > 0 for a in found)  # the time each one took


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /tile HTTP/1.0\r\n\r\n", 400),
        (b"GET /tile HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"GET /tile HTTP/1.1\r\nX: " + b"a" * (HEAD_MOST + 10), 431),
    ],
    ids=["http-1.0", "a-body", "head-too-large"],
)
def test_a_request_it_cannot_parse_is_refused_and_closed(
    zones: Zones, raw: bytes, status: int
) -> None:
    mark = _log_size(zones)
    with _connect(zones, zones.service) as sock:
        sock.sendall(raw)
        buffer = bytearray()
        found = _read(sock, buffer)
        assert found is not None and found.status == status
        assert found.headers["connection"] == "close" and found.body.startswith(b'{"error"')
        assert _read(sock, buffer) is None
    unparsed = lambda: [  # noqa: E731 - (entries written behind by earlier tests arrive too)
        e for e in _channel_entries(zones, mark) if e["action"] == "renderer.tile_channel"
    ]
    (entry,) = _until(unparsed)
    assert entry["outcome"] == "refused" and entry["status"] == status


def test_a_connection_without_a_certificate_is_refused_and_audited(zones: Zones) -> None:
    with psycopg.connect(zones.map_db.database_url) as conn:
        before = conn.execute(
            "SELECT count(*) FROM audit_queue WHERE action = 'tls.refused'"
            " AND detail->>'channel' = 'tiles'"
        ).fetchone()
    # TLS 1.3: the refusal arrives when the client reads
    with pytest.raises((ssl.SSLError, ConnectionError)), _connect(zones, None) as sock:
        sock.sendall(_get("/tile/topo500/1/1/1.png"))
        assert _read(sock, bytearray()) is None
        raise ConnectionError("closed without an answer")

    def refused() -> list[tuple[str]]:
        with psycopg.connect(zones.map_db.database_url) as conn:
            return conn.execute(
                "SELECT detail->>'reason' FROM audit_queue WHERE action = 'tls.refused'"
                " AND detail->>'channel' = 'tiles' ORDER BY id"
            ).fetchall()

    assert before is not None
    found = _until(lambda: len(r := refused()) > before[0] and r)
    assert found[-1][0] == "no_certificate"
