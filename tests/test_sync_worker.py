"""How the worker behind nginx closes a connection once its answer is written
(auth.sync_worker.close_promptly), on real sockets: at once when the peer sent nothing left
unread; gunicorn's graceful close (half-close, then drain until the peer closes) otherwise."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from auth.sync_worker import close_promptly


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


def test_nothing_left_unread_closes_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
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
    pair: tuple[socket.socket, socket.socket],
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
    pair: tuple[socket.socket, socket.socket],
) -> None:
    worker, front = pair
    front.close()
    closing = _closing(worker)
    closing.join(10)
    assert not closing.is_alive() and worker.fileno() == -1
