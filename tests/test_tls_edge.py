"""Bad input at the edge (TLS handshake, HTTP framing gunicorn parses itself) costs neither
the audit log nor other users: real `citygrid serve`, real TLS, real client certificates."""

from __future__ import annotations

import http.client
import json
import re
import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from cryptography import x509

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from auth.security_headers import SECURITY_HEADERS
from mapserver import db
from mapserver.settings import Settings

from .conftest import empty_database
from .sequenced import sequenced
from .tls import REFUSED, Reply, Server, request

SECRET = "tls edge test passphrase"
HANDSHAKE_SECONDS = 2.0
# A TLS record header (handshake, TLS 1.0 record version, 512 bytes) and the ClientHello
# type byte: the start of every ClientHello, never finished.
CLIENT_HELLO_START = bytes.fromhex("160301020001")


class Install(NamedTuple):
    settings: Settings
    ca: Path
    cert: Path
    key: Path
    certificate: x509.Certificate


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    """A database, CA and one viewer of its own, so these tests see only their audit entries."""
    settings = empty_database("citygrid_tls_edge", tmp_path_factory.mktemp("edge-var"))
    out = tmp_path_factory.mktemp("edge-certs")
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    with db.transaction(settings) as conn:
        accounts.add(conn, "edge-viewer", ["security_officer"], None)
        certs.issue(conn, store, SECRET.encode(), "edge-viewer", pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    crt = out / "edge-viewer.crt"
    yield Install(
        settings,
        store.cert_path,
        crt,
        out / "edge-viewer.key",
        x509.load_pem_x509_certificates(crt.read_bytes())[0],
    )
    db.drop_database(settings)


@pytest.fixture(scope="module")
def server(install: Install) -> Iterator[Server]:
    srv = Server(
        {
            "CITYGRID_DATABASE_URL": install.settings.database_url,
            "CITYGRID_DATA_DIR": str(install.settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            "CITYGRID_HANDSHAKE_TIMEOUT_SECONDS": str(HANDSHAKE_SECONDS),
        }
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _context(install: Install) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(install.ca))
    ctx.load_cert_chain(str(install.cert), str(install.key))
    return ctx


def _whoami(install: Install, port: int, timeout: float) -> int:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=_context(install), timeout=timeout
    )
    try:
        conn.request("GET", "/auth/whoami")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _raw(install: Install, port: int, data: bytes) -> Reply:
    """Send `data` as it is over mutual TLS and read the answer up to the server's close."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as plain,
        _context(install).wrap_socket(plain, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(data)
        received = b""
        while True:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLEOFError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name not in headers, f"{name} sent twice"
        headers[name] = value.strip()
    return Reply(int(status_line.split()[1]), headers, body)


def _entries(install: Install, where: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(install.settings.database_url) as conn:
        return conn.execute(
            "SELECT action, outcome, detail ->> 'reason', status, request_id, cert_serial,"
            f" cert_sha256, detail ->> 'subject' FROM audit_entry WHERE {where} ORDER BY id",
            params,
        ).fetchall()


def _last_id(install: Install) -> int:
    sequenced(install.settings.database_url)
    with psycopg.connect(install.settings.database_url) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM audit_entry").fetchone()
    assert row is not None
    return int(row[0])


def _wait_for_entries(
    install: Install, n: int, where: str, *params: Any, timeout: float = 20
) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _entries(install, where, *params)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _wait_all_closed(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Wait until the server has closed every socket; returns those still open at timeout."""
    open_ = set(socks)
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while open_ and time.monotonic() < deadline:
            for key, _ in sel.select(deadline - time.monotonic()):
                closing = key.fileobj
                assert isinstance(closing, socket.socket)
                try:
                    data = closing.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(closing)
                    open_.discard(closing)
    return list(open_)


def test_half_open_handshakes_hold_no_thread(install: Install, server: Server) -> None:
    """200 clients that start a ClientHello and stall: a valid client is still answered at
    once, the stalled ones are closed after the handshake timeout, each one audited."""
    since = _last_id(install)
    # The arbiter listens before its workers have loaded the app: wait for them first.
    assert _whoami(install, server.port, timeout=30) == 200
    stalled = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(CLIENT_HELLO_START)
            stalled.append(s)
        for _ in range(3):
            started = time.monotonic()
            assert _whoami(install, server.port, timeout=5) == 200
            assert time.monotonic() - started < 1.0
        # ...while every stalled client was still connected.
        assert len(_wait_all_closed(stalled, timeout=0)) == 200
        assert _wait_all_closed(stalled, timeout=HANDSHAKE_SECONDS + 10) == []
    finally:
        for s in stalled:
            s.close()
    # Each one audited: the first of a minute from this address in full, the rest counted
    # (auth.tls_worker.RefusalLog) in an entry written within seconds.
    deadline = time.monotonic() + 20
    while True:
        with psycopg.connect(install.settings.database_url) as conn:
            details = [
                d
                for (d,) in conn.execute(
                    "SELECT detail FROM audit_entry WHERE id > %s AND action = 'tls.refused'",
                    (since,),
                )
            ]
        audited = sum(int(d.get("coalesced", 1)) for d in details)
        if audited >= 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert audited == 200 and {d["reason"] for d in details} == {"handshake_timeout"}
    assert len(details) < 100


def test_refused_handshake_still_audited_with_reason(install: Install, server: Server) -> None:
    since = _last_id(install)
    with pytest.raises(REFUSED):
        request(server.port, "/auth/whoami", install.ca)  # no client certificate
    rows = _wait_for_entries(install, 1, "id > %s AND action = 'tls.refused'", since)
    assert [(a, o, r) for a, o, r, *_ in rows] == [("tls.refused", "refused", "no_certificate")]


FRAMING = {
    "uri_too_long": (414, b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    "too_many_header_fields": (
        431,
        b"GET /auth/whoami HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-N%d: v\r\n" % i for i in range(60))
        + b"\r\n",
    ),
    "header_field_too_large": (
        431,
        b"GET /auth/whoami HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    ),
    "bad_request_line": (400, b"NONSENSE\r\n\r\n"),
    "bad_header": (400, b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n"),
}


@pytest.mark.parametrize("case", sorted(FRAMING))
def test_gunicorn_errors_are_json_with_headers_and_audited(
    install: Install, server: Server, case: str
) -> None:
    status, data = FRAMING[case]
    reply = _raw(install, server.port, data)
    assert reply.status == status
    assert reply.headers["Content-Type"] == "application/json"
    body = json.loads(reply.body)
    assert set(body) == {"error", "message"} and body["message"]
    assert "<" not in reply.body.decode() and "aaaa" not in reply.body.decode()
    for name, value in SECURITY_HEADERS.items():
        assert reply.headers[name] == value
    assert "Server" not in reply.headers
    request_id = reply.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    # The entry is committed before the response leaves: no waiting.
    sequenced(install.settings.database_url)
    rows = _entries(install, "request_id = %s", request_id)
    cert = install.certificate
    assert rows == [
        (
            "http.refused",
            "refused",
            body["error"],
            status,
            request_id,
            format(cert.serial_number, "x"),
            pki.thumbprint(cert),
            cert.subject.rfc4514_string(),
        )
    ]


def test_no_server_header_on_any_response(install: Install, server: Server) -> None:
    ok = request(server.port, "/auth/whoami", install.ca, install.cert, install.key)
    missing = request(server.port, "/no/such/page", install.ca, install.cert, install.key)
    assert ok.status == 200 and missing.status == 404
    for reply in (ok, missing):
        assert "Server" not in reply.headers and "server" not in reply.headers
    refused = _raw(install, server.port, b"NONSENSE\r\n\r\n")
    assert refused.status == 400 and "Server" not in refused.headers


def test_refusals_never_wait_for_the_audit_and_overflow_is_counted(install: Install) -> None:
    """With the audit tree locked (a slow database), queuing refusals returns at once; past
    the limit they are counted per reason, and every refusal ends up in the log."""
    import logging

    from audit.keys import signer
    from audit.writer import GroupCommitWriter
    from auth.tls_worker import RefusalLog, tls_refusal

    settings = install.settings
    since = _last_id(install)
    writer = GroupCommitWriter(settings.serving_database_url, signer(settings.pki_dir), 1000, 60)
    refusals = RefusalLog(writer, logging.getLogger(__name__), limit=4)
    reasons = ["expired"] * 4 + ["handshake_timeout"] * 6 + ["expired"] * 3
    with psycopg.connect(settings.database_url) as blocker:
        blocker.execute("SELECT size FROM audit_tree FOR UPDATE")
        started = time.monotonic()
        for i, reason in enumerate(reasons):
            refusals.add(tls_refusal(("192.0.2.1", i), reason, "test"))
        assert time.monotonic() - started < 1.0
        assert _entries(install, "id > %s", since) == []
    # The lock is released: the four queued ones, then one entry per reason with its count.
    rows = _wait_for_entries(install, 6, "id > %s", since)
    with psycopg.connect(settings.database_url) as conn:
        detail = conn.execute(
            "SELECT detail FROM audit_entry WHERE id > %s ORDER BY id", (since,)
        ).fetchall()
    assert len(rows) == 6
    singles = [d for (d,) in detail if "coalesced" not in d]
    counted = {d["reason"]: d["coalesced"] for (d,) in detail if "coalesced" in d}
    assert [d["reason"] for d in singles] == ["expired"] * 4
    assert counted == {"handshake_timeout": 6, "expired": 3}


def test_clients_that_never_close_do_not_stall_the_worker(install: Install, server: Server) -> None:
    """Closing a connection waits for the client's FIN (so the last response is not cut by
    a reset); that wait happens in the poller, not on the loop every client depends on."""
    ctx = _context(install)
    lingering = []
    try:
        for _ in range(8):
            plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            tls = ctx.wrap_socket(plain, server_hostname="127.0.0.1")
            tls.sendall(b"GET /auth/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            lingering.append(tls)
        with selectors.DefaultSelector() as sel:  # every one has its answer, none closes
            for s in lingering:
                sel.register(s, selectors.EVENT_READ)
            answered: set[Any] = set()
            deadline = time.monotonic() + 10
            while len(answered) < len(lingering) and time.monotonic() < deadline:
                answered |= {key.fileobj for key, _ in sel.select(1)}
            assert len(answered) == len(lingering)
        for _ in range(3):
            started = time.monotonic()
            assert _whoami(install, server.port, timeout=10) == 200
            assert time.monotonic() - started < 1.0
    finally:
        for s in lingering:
            s.close()


def test_an_idle_connection_is_kept_for_the_next_request(install: Install, server: Server) -> None:
    """A handheld that pauses between two taps reuses its connection: no second handshake
    over mobile data (gunicorn's own keep-alive, 2 s, would have closed it)."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=_context(install), timeout=10
    )
    try:
        conn.request("GET", "/auth/whoami")
        first = conn.getresponse()
        first.read()
        assert first.status == 200
        sock = conn.sock
        assert sock is not None
        assert _wait_all_closed([sock], timeout=3.5) == [sock]  # still open after 3.5 s idle
        conn.request("GET", "/auth/whoami")
        second = conn.getresponse()
        second.read()
        assert second.status == 200 and conn.sock is sock
    finally:
        conn.close()
