"""The worker behind nginx (auth.sync_worker), on real sockets. It answers the connections
waiting on its socket in one batch: their audit entries go to a real spool in one flush, and
no answer leaves before it; if that flush fails, every answer of the batch is a 503. And it
closes a connection once answered: at once when the peer sent nothing left unread,
gunicorn's graceful close (half-close, then drain until the peer closes) otherwise."""

from __future__ import annotations

import json
import os
import runpy
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gunicorn import glogging, util
from gunicorn.config import Config
from gunicorn.http import message, wsgi

from audit.keys import signer
from audit.record import Entry
from audit.spool import SpoolWriter
from auth import sync_worker
from auth.sync_worker import AuditingSyncWorker, close_promptly
from mapserver import db
from mapserver.serve import GUNICORN_CONF
from mapserver.settings import Settings

from .conftest import Closing, empty_database

App = Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    s = empty_database("citygrid_sync_worker", tmp_path_factory.mktemp("sync-worker-var"))
    yield s
    db.drop_database(s)


@pytest.fixture(scope="module")
def key(log: Settings) -> Ed25519PrivateKey:
    return signer(log.pki_dir)


def _recording(writer: SpoolWriter) -> App:
    """An app that records an entry per request (as the gateway does) and answers `ok`."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        writer.write(Entry(action="test.batch", request_id=environ["PATH_INFO"][1:]))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app


@pytest.fixture
def serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[App, int], list[bytes]]]:
    """`serve(app, n)`: n clients connect to a Unix socket and send a request each, then the
    worker accepts once; what each client received, to the end."""
    cfg = Config()
    # What take_over changes in gunicorn, restored after the test.
    monkeypatch.setattr(util, "close_graceful", util.close_graceful)
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)
    sync_worker.take_over(cfg)
    path = str(tmp_path / "app.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.setblocking(False)  # as gunicorn's workers hold it

    def run(app: App, n: int) -> list[bytes]:
        worker = AuditingSyncWorker(0, os.getpid(), [listener], None, 30, cfg, glogging.Logger(cfg))
        worker.wsgi = app
        clients = []
        for i in range(n):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(30)
            client.connect(path)
            client.sendall(f"GET /r{i} HTTP/1.0\r\nHost: citygrid\r\n\r\n".encode())
            clients.append(client)
        worker.accept(listener)
        answers = []
        for client in clients:
            with client:
                answers.append(_read_to_end(client))
        return answers

    with listener:
        yield run


def test_waiting_connections_are_one_batch_with_one_flush(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, serve: Any, closing: Closing
) -> None:
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    answers = serve(_recording(writer), 3)
    assert all(a.startswith(b"HTTP/1.0 200 OK\r\n") and a.endswith(b"\r\n\r\nok") for a in answers)
    assert writer.batch_sizes == {3: 1}  # three entries, one flush, before the answers
    files = (tmp_path / "spool").glob("*.spool")
    lines = b"".join(p.read_bytes().split(b"\0")[0] for p in files).splitlines()  # not the room
    assert sorted(json.loads(line)["e"]["request_id"] for line in lines) == ["r0", "r1", "r2"]


def test_a_batch_whose_flush_fails_is_answered_503(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, serve: Any, closing: Closing
) -> None:
    """The spool's descriptor is made /dev/null's: the entries are written, their flush
    fails (a device that cannot be flushed), and no answer of the batch says 200."""
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    writer.write(Entry(action="test.batch", request_id="before"))
    assert writer._file is not None
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, writer._file.fd)  # the writer's descriptor, now /dev/null's (closed by it)
    os.close(null)
    answers = serve(_recording(writer), 3)
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert json.loads(body)["error"] == "unavailable"
    assert writer.batch_sizes == {1: 1}  # only the entry before


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The worker's end and nginx's end of one connection."""
    worker, front = socket.socketpair()
    with worker, front:
        front.settimeout(30)
        yield worker, front


def _closing(sock: socket.socket) -> threading.Thread:
    """close_promptly(sock) in a thread of its own; it may drain for up to 30 s."""
    thread = threading.Thread(target=close_promptly, args=(sock,), kwargs={"timeout": 30})
    thread.start()
    return thread


def _read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_nothing_left_unread_closes_at_once(
    pair: tuple[socket.socket, socket.socket], closing: Closing
) -> None:
    worker, front = pair
    front.sendall(b"GET /tiles HTTP/1.0\r\n\r\n")
    assert worker.recv(65536) == b"GET /tiles HTTP/1.0\r\n\r\n"
    worker.sendall(b"HTTP/1.1 200 OK\r\n\r\nanswer")
    closing = _closing(worker)
    closing.join(10)  # does not wait for nginx to close its side
    assert not closing.is_alive()
    assert worker.fileno() == -1
    assert _read_to_end(front) == b"HTTP/1.1 200 OK\r\n\r\nanswer"


def test_bytes_left_unread_are_drained_before_the_close(
    pair: tuple[socket.socket, socket.socket], closing: Closing
) -> None:
    worker, front = pair
    front.sendall(b"GET /tiles HTTP/1.0\r\n\r\nmore the worker never read")
    assert worker.recv(23) == b"GET /tiles HTTP/1.0\r\n\r\n"
    worker.sendall(b"HTTP/1.1 200 OK\r\n\r\nanswer")
    closing = _closing(worker)
    # Half-closed: the whole answer, then the end of it, while the worker still drains.
    assert _read_to_end(front) == b"HTTP/1.1 200 OK\r\n\r\nanswer"
    assert closing.is_alive()
    front.close()  # nginx closes its side: the drain ends
    closing.join(10)
    assert not closing.is_alive() and worker.fileno() == -1


def test_a_peer_that_has_gone_is_closed_at_once(
    pair: tuple[socket.socket, socket.socket], closing: Closing
) -> None:
    worker, front = pair
    front.close()
    closing = _closing(worker)
    closing.join(10)
    assert not closing.is_alive() and worker.fileno() == -1


@pytest.mark.parametrize("behind_nginx", ["1", "0"])
def test_the_shipped_configuration_parses_requests_in_c(
    behind_nginx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's C parser (gunicorn_h1c) reads every request in both shapes
    (docs/performance.md); nothing in deploy/gunicorn/citygrid.conf.py turns it off."""
    monkeypatch.setenv("CITYGRID_TLS_BEHIND_NGINX", behind_nginx)
    for name in ("CERT", "KEY", "CA"):
        monkeypatch.setenv(f"CITYGRID_TLS_{name}", f"/etc/citygrid/{name.lower()}.pem")
    conf = runpy.run_path(str(GUNICORN_CONF))
    cfg = Config()
    for name, value in conf.items():
        if name in cfg.settings:
            cfg.set(name, value)
    assert message._check_fast_parser(cfg)
