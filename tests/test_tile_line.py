"""tiles.tile_line reads the tile channel's answers itself: what a well-formed answer holds,
kept-alive answers one after another, and refusals of what it cannot trust (no length, an
endless head, a cut body, a closed connection), which the gateway treats as a broken
connection. Against a real TLS server in the test, sending the bytes given."""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tiles.tile_line import HEAD_MOST, BadAnswer, TileLine


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context and a client context that trusts it (a self-signed 127.0.0.1)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("line")
    crt, pem = folder / "c.pem", folder / "k.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(crt), str(pem))
    return server, ssl.create_default_context(cafile=str(crt))


def _serving(context: ssl.SSLContext, answers: list[bytes]) -> Iterator[int]:
    """A server that, for each request head it reads, sends the next of `answers` (an
    empty one: none), and closes the connection after the last."""
    listener = socket.create_server(("127.0.0.1", 0))
    heads: list[bytes] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as sock:
            buffer = b""
            for answer in answers:
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                heads.append(head)
                if not answer:
                    return
                sock.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


def _line(port: int, client: ssl.SSLContext) -> TileLine:
    return TileLine("127.0.0.1", port, client, timeout=10)


def test_answers_are_read_one_after_another(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    png = b"\x89PNG" + bytes(range(256)) * 100
    first = (
        b'HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nETag: "e1"\r\nContent-Length: %d\r\n\r\n'
    )
    answers = [
        first % len(png) + png,
        b'HTTP/1.1 304 Not Modified\r\nETag: "e1"\r\nContent-Length: 0\r\n\r\n',
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
    ]
    for port in _serving(tls[0], answers):
        line = _line(port, tls[1])
        got = line.exchange("GET", "/tile/topo500/1/2/3.png", None, {"Authorization": "Bearer t"})
        assert (got.status, got.etag, got.body, got.will_close) == (200, '"e1"', png, False)
        again = line.exchange("GET", "/tile/topo500/1/2/3.png", None, {"If-None-Match": '"e1"'})
        assert (again.status, again.etag, again.body) == (304, '"e1"', b"")
        last = line.exchange("GET", "/x", None, {})
        assert last.status == 403 and last.body == b"{}" and last.will_close
        line.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\nabc", BadAnswer),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (HEAD_MOST + 10), BadAnswer),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", BadAnswer),
        (b"", http.client.RemoteDisconnected),
    ],
    ids=["no-length", "endless-head", "not-http-1.1", "closed"],
)
def test_what_it_cannot_trust_is_refused(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], answer: bytes, error: type[Exception]
) -> None:
    for port in _serving(tls[0], [answer]):
        line = _line(port, tls[1])
        with pytest.raises(error):
            line.exchange("GET", "/tile/a/1/2/3.png", None, {})
        line.close()


def test_a_cut_body_is_refused(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"]  # then closed
    for port in _serving(tls[0], answers):
        line = _line(port, tls[1])
        with pytest.raises(http.client.IncompleteRead):
            line.exchange("GET", "/tile/a/1/2/3.png", None, {})
        line.close()


def test_no_body_is_sent(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    with pytest.raises(ValueError):
        TileLine("127.0.0.1", 1, tls[1], 1).exchange("POST", "/tile", b"x", {})
