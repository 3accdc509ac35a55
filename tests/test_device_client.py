"""The reference device client's own parts, without CityGrid's server: backoff, how answers
are judged, the queue's keys and bodies across a restart, photos made small without their
EXIF, private files, the command line's one-line errors, and a task's files brought in ranges
from a tiny HTTPS server that answers as each test needs."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import random
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from PIL import Image

from auth import pki
from mapserver.cli import main
from mapserver.device_client import compose, config, downloads, photos, plan
from mapserver.device_client.backoff import Backoff
from mapserver.device_client.link import Link
from mapserver.device_client.plan import Answer, Verdict
from mapserver.device_client.queue import Queue
from mapserver.errors import InvalidInput


def _answer(status: int, error: str = "", message: str = "", **headers: str) -> Answer:
    body = json.dumps({"error": error, "message": message}).encode() if error else b""
    return Answer(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def test_backoff_grows_with_full_jitter_and_respects_retry_after() -> None:
    rng = random.Random(1)
    b = Backoff(base_s=1.0, cap_s=30.0)
    for attempt in range(1, 12):
        ceiling = min(30.0, 2 ** (attempt - 1))
        waits = [b.delay(attempt, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # jitter spreads over the whole range
    assert b.after(1, rng, retry_after=12.0) >= 12.0
    assert b.after(1, rng, retry_after=1e9) == 30.0


def test_answers_are_judged() -> None:
    assert plan.classify(_answer(201)) is Verdict.OK
    assert plan.classify(_answer(503, "unavailable")) is Verdict.RETRY
    assert plan.classify(_answer(502)) is plan.classify(_answer(504)) is Verdict.RETRY
    assert plan.classify(_answer(500, "internal")) is Verdict.FAULT  # tried a few times only
    assert plan.classify(_answer(429, "rate_limited", retry_after="7")) is Verdict.RETRY
    assert _answer(429, "rate_limited", retry_after="7").retry_after() == 7.0
    busy = _answer(
        409, "conflict", "the first request with this Idempotency-Key is not answered yet; retry"
    )
    assert plan.classify(busy) is Verdict.RETRY
    assert plan.classify(_answer(401, "unauthenticated", "token expired")) is Verdict.TOKEN
    stale = _answer(400, "signature_refused", "nonce expired: ask for a new one")
    assert plan.classify(stale) is Verdict.RESIGN
    used = _answer(400, "signature_refused", "nonce already used: the action was replayed")
    assert plan.classify(used) is Verdict.REFUSED  # never signed again: it may have been applied
    assert plan.classify(_answer(422, "idempotency_key_reused")) is Verdict.REFUSED
    assert plan.classify(_answer(409, "conflict", "the case is closed")) is Verdict.REFUSED


def _photo(size: tuple[int, int], exif_gps: bool = True) -> bytes:
    im = Image.frombytes("RGB", size, random.Random(3).randbytes(size[0] * size[1] * 3))
    exif = Image.Exif()
    if exif_gps:
        exif[0x8825] = {1: "N", 2: (39.0, 59.0, 31.0)}  # GPSInfo
        exif[0x0112] = 6  # rotated: taken sideways
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def test_photos_are_made_small_upright_and_without_exif() -> None:
    original = _photo((800, 400))
    sent = photos.downsize(original, 300, 85)
    with Image.open(io.BytesIO(sent)) as im:
        assert im.size == (150, 300)  # turned upright, then at most 300 px
        assert not im.getexif() and "exif" not in im.info
    assert photos.downsize(original, 300, 85) == sent  # deterministic
    with pytest.raises(InvalidInput):
        photos.downsize(b"not an image", 300, 85)


def _settings() -> config.ClientSettings:
    return config.ClientSettings("https://127.0.0.1:1", photo_max_px=200)


def test_queue_keeps_keys_and_bodies_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    queue = Queue(path)
    first = compose.report(
        queue, _settings(), kind="event", major="01", minor="02", description="x",
        gps=(116.3, 39.99), photos=[_photo((400, 300))],
    )  # fmt: skip
    second = compose.result(queue, _settings(), number="2026-000001", outcome="pass")
    item = queue.item(first)
    assert item.params["place"]["gps"] != [116.3, 39.99] and item.beside is not None
    assert "116.3" not in json.dumps(item.params)  # only the salted digest is signed
    queue.signed(first, b'{"signed":1}')
    queue.close()
    again = Queue(path)  # as after a SIGKILL: everything committed is there
    item2 = again.item(first)
    assert (item2.key, item2.body) == (item.key, b'{"signed":1}')
    assert [i.id for i in again.pending()] == [first, second]
    assert again.item(second).params["from"] == "checking"
    again.resign(first)  # refused as stale: signed anew under a new key
    assert again.item(first).body is None and again.item(first).key != item.key
    photo = again.photos(first)[0]
    again.upload_lost(photo.id)
    assert again.photo(photo.id).create_key != photo.create_key
    assert path.stat().st_mode & 0o077 == 0
    again.close()


def test_private_files_and_settings(tmp_path: Path) -> None:
    key = tmp_path / "k"
    config.write_private(key, b"secret")
    assert key.stat().st_mode & 0o777 == 0o600 and config.private_bytes(key) == b"secret"
    key.chmod(0o644)
    with pytest.raises(InvalidInput, match="open to others"):
        config.private_bytes(key)
    with pytest.raises(InvalidInput):
        config.ClientSettings("http://plain").check()
    with pytest.raises(InvalidInput):
        config.load(config.Paths(tmp_path))


def test_command_line_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["device", "send", "--dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "not a device directory" in missing.output
    assert "Traceback" not in missing.output
    root = tmp_path / "d"
    root.mkdir()
    config.save(config.Paths(root), _settings())
    twice = runner.invoke(
        main,
        ["device", "report", "--dir", str(root), "--major", "01", "--minor", "02",
         "--description", "x", "--grid", "11010800100101", "--gps", "116.3,39.9"],
    )  # fmt: skip
    assert twice.exit_code == 1 and "exactly one of" in twice.output
    bad = runner.invoke(main, ["device", "result", "--dir", str(root), "12", "pass"])
    assert bad.exit_code == 1 and "case number" in bad.output
    queued = runner.invoke(
        main,
        ["device", "report", "--dir", str(root), "--major", "01", "--minor", "02",
         "--description", "x", "--grid", "11010800100101"],
    )  # fmt: skip
    assert queued.exit_code == 0 and "queued report 1" in queued.output
    # Files of another kind as --cert, --key or --ca were taken, and every later command
    # failed with OpenSSL's words; they are refused at init, which leaves nothing behind.
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    files = ["--cert", str(picture), "--key", str(picture), "--ca", str(picture)]
    refused = runner.invoke(
        main,
        ["device", "init", "--dir", str(tmp_path / "new"), "--server", "https://127.0.0.1:1",
         *files],
    )  # fmt: skip
    assert refused.exit_code == 1, refused.output
    assert refused.output.startswith("citygrid: error: --cert, --key, --ca: not PEM files")
    assert refused.output.count("\n") == 1 and not (tmp_path / "new").exists()
    # Sending before enrolment: one line, not a blank line of the progress display first.
    from cryptography.hazmat.primitives import serialization

    from auth import pki

    ca_key, device_key = pki.new_key(), pki.new_key()
    ca = pki.make_ca(ca_key, "test CA")
    issued = pki.issue(ca_key, ca, device_key.public_key(), pki.Kind.DEVICE, "dev-1")
    (tmp_path / "ca.crt").write_bytes(pki.pem(ca))
    (tmp_path / "dev.crt").write_bytes(pki.pem(issued))
    (tmp_path / "dev.key").write_bytes(
        device_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files = ["--cert", str(tmp_path / "dev.crt"), "--key", str(tmp_path / "dev.key")]
    made = runner.invoke(
        main,
        ["device", "init", "--dir", str(tmp_path / "new"), "--server", "https://127.0.0.1:1",
         *files, "--ca", str(tmp_path / "ca.crt")],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    unenrolled = runner.invoke(main, ["device", "send", "--dir", str(tmp_path / "new")])
    assert unenrolled.exit_code == 1, unenrolled.output
    assert unenrolled.output == (
        "citygrid: error: no signing certificate yet: citygrid device enrol --code CODE\n"
    )


def test_what_the_server_refuses_is_refused_when_queued(tmp_path: Path) -> None:
    """`report --description $'a\\x01b'` was queued (exit 0) and failed only at `send`, "HTTP
    400 invalid: description must not contain control characters". A text the server refuses
    (a control character, past the server's own length limit, blank) is one line at once,
    and nothing is queued."""
    from mapserver.cases.store import MAX_DESCRIPTION, MAX_NOTE

    root = tmp_path / "d"
    root.mkdir()
    config.save(config.Paths(root), _settings())
    report = ["device", "report", "--dir", str(root), "--major", "01", "--minor", "02"]
    grid = ["--grid", "11010800100101"]
    refused = [
        ([*report, "--description", "a\x01b", *grid], "description must not contain control"),
        ([*report, "--description", "井" * (MAX_DESCRIPTION + 1), *grid],
         f"description is longer than {MAX_DESCRIPTION} characters"),
        ([*report, "--description", "  ", *grid], "description is required"),
        ([*report, "--description", "x", "--address", "路" * 201], "address is longer than 200"),
        ([*report, "--description", "x", "--address", "中关村\n大街"], "address must not contain"),
        (["device", "result", "--dir", str(root), "2026-000001", "pass", "--note", "好\x7f"],
         "note must not contain control characters"),
        (["device", "result", "--dir", str(root), "2026-000001", "fail",
          "--note", "x" * (MAX_NOTE + 1)], f"note is longer than {MAX_NOTE} characters"),
    ]  # fmt: skip
    for args, said in refused:
        done = CliRunner().invoke(main, args)
        assert done.exit_code == 1, (args[-3:], done.output)
        assert done.output.startswith(f"citygrid: error: {said}"), done.output
        assert done.output.count("\n") == 1, done.output
    queue = Queue(config.Paths(root).queue)
    assert queue.items() == []
    queue.close()
    # At the limits, after the server's own stripping: queued.
    fits = CliRunner().invoke(
        main, [*report, "--description", " " + "井" * MAX_DESCRIPTION + "\n", *grid]
    )
    assert fits.exit_code == 0, fits.output
    noted = CliRunner().invoke(
        main, ["device", "result", "--dir", str(root), "2026-000001", "pass", "--note", "已处理"]
    )
    assert noted.exit_code == 0, noted.output


def test_voice_recordings_are_queued_as_they_are(tmp_path: Path) -> None:
    """A report or result takes voice recordings beside its photos (the server cleans both):
    queued with the type their bytes are, never re-encoded; anything else is refused."""
    amr = b"#!AMR\n" + (b"\x3c" + bytes(31)) * 50
    queue = Queue(tmp_path / "queue.sqlite3")
    item = compose.report(
        queue, _settings(), kind="event", major="01", minor="02", description="x",
        place={"grid": "11010800100101"}, photos=[_photo((400, 300))], voices=[amr],
    )  # fmt: skip
    sent = queue.photos(item)
    assert [p.media_type for p in sent] == ["image/jpeg", "audio/amr"]
    assert queue.photo_bytes(sent[1].id, 0, sent[1].length) == amr
    with pytest.raises(InvalidInput, match="AMR, AMR-WB or MP3"):
        compose.result(queue, _settings(), number="2026-000001", outcome="pass",
                       voices=[_photo((10, 10))])  # fmt: skip
    with pytest.raises(InvalidInput, match="at most 9"):
        compose.result(queue, _settings(), number="2026-000001", outcome="pass",
                       photos=[_photo((10, 10))] * 5, voices=[amr] * 5)  # fmt: skip
    assert [i.id for i in queue.pending()] == [item]  # nothing of the refused ones
    queue.close()
    root = tmp_path / "d"
    root.mkdir()
    config.save(config.Paths(root), _settings())
    (tmp_path / "note.amr").write_bytes(amr)
    done = CliRunner().invoke(
        main,
        ["device", "report", "--dir", str(root), "--major", "01", "--minor", "02",
         "--description", "x", "--grid", "11010800100101", "--voice", str(tmp_path / "note.amr")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert done.output.endswith("with 0 photo(s), 1 recording(s)\n")


# -- a task's files, from a tiny real HTTPS server (TLS with the device certificate, a bearer
# token) that answers each file request as a test shapes it


NUMBER = "2026-000001"
FILE = random.Random(5).randbytes(5000)
SHA = hashlib.sha256(FILE).hexdigest()
ITEM = {
    "sha256": SHA, "bytes": len(FILE), "kind": "photo", "media_type": "image/jpeg",
    "url": f"/device/v1/cases/{NUMBER}/attachments/{SHA}",
}  # fmt: skip
Shaped = tuple[int, dict[str, str], bytes]
Scripted = Callable[[str, str, str], Shaped]  # (method, path, Idempotency-Key) → answer
TOKEN = json.dumps({"access_token": "t", "expires_in": 600}).encode()


def ranged(range_header: str | None) -> Shaped:
    """What CityGrid answers: the asked range of FILE."""
    found = re.fullmatch(r"bytes=(\d+)-(\d+)", range_header or "")
    assert found, range_header
    start, end = int(found[1]), min(int(found[2]), len(FILE) - 1)
    return 206, {"Content-Range": f"bytes {start}-{end}/{len(FILE)}"}, FILE[start : end + 1]


class FileServer:
    def __init__(self, tmp: Path, handler: type[http.server.BaseHTTPRequestHandler] | None = None):
        def key_pem(key: Any) -> bytes:
            return key.private_bytes(  # type: ignore[no-any-return]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )

        ca_key, server_key, device_key = pki.new_key(), pki.new_key(), pki.new_key()
        ca = pki.make_ca(ca_key, "test CA")
        self.root = tmp / "device"
        self.root.mkdir()
        self.paths = config.Paths(self.root)
        self.paths.ca.write_bytes(pki.pem(ca))
        self.paths.device_crt.write_bytes(
            pki.pem(pki.issue(ca_key, ca, device_key.public_key(), pki.Kind.DEVICE, "dv-1"))
        )
        config.write_private(self.paths.device_key, key_pem(device_key))
        (tmp / "server.crt").write_bytes(
            pki.pem(pki.issue(ca_key, ca, server_key.public_key(), pki.Kind.SERVER, "127.0.0.1"))
        )
        (tmp / "server.key").write_bytes(key_pem(server_key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp / "server.crt", tmp / "server.key")
        context.load_verify_locations(self.paths.ca)
        context.verify_mode = ssl.CERT_REQUIRED  # the device certificate, as CityGrid asks
        self.tasks: Any = []
        self.answer: Callable[[str | None], Shaped] = ranged
        self.ranges: list[str | None] = []  # the Range of each file request
        self.signing = (pki.make_ca(device_key, "dv-1"), device_key)  # any key signs for a fake
        self.calls: list[tuple[str, str, str]] = []  # _Api: (method, path, Idempotency-Key)
        self.token: Callable[[], Shaped] = lambda: (200, {}, TOKEN)
        self.script: Scripted = lambda method, path, key: (404, {}, b"")
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler or _Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.files = self  # type: ignore[attr-defined]
        port = self.httpd.server_address[1]
        config.save(
            self.paths, config.ClientSettings(f"https://127.0.0.1:{port}", chunk_bytes=1024)
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def link(self) -> Link:
        return Link(self.paths, config.load(self.paths))

    def fetch(self, item: Any = ITEM, number: str = NUMBER) -> downloads.Fetched:
        link = self.link()
        try:
            return downloads.fetch(
                link, number, item, self.root / "files", chunk=1024,
                backoff=Backoff(0.001, 0.001), sleep=lambda s: None,
            )  # fmt: skip
        finally:
            link.close()

    def part(self) -> Path:
        return self.root / "files" / f"{NUMBER}-{SHA[:12]}.jpg.part"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        assert self.path == "/auth/token"
        self._send(200, {}, TOKEN)

    def do_GET(self) -> None:
        files: FileServer = self.server.files  # type: ignore[attr-defined]
        if self.path == "/device/v1/tasks":
            self._send(200, {}, json.dumps({"tasks": files.tasks}).encode())
            return
        assert self.path == ITEM["url"] and self.headers["Authorization"] == "Bearer t"
        files.ranges.append(self.headers.get("Range"))
        self._send(*files.answer(self.headers.get("Range")))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def files(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_a_whole_answer_to_a_range_replaces_the_part(files: FileServer) -> None:
    files.part().parent.mkdir()
    files.part().write_bytes(b"stale" * 100)  # bytes of no use: the server sends the whole file
    files.answer = lambda asked: (200, {}, FILE)
    got = files.fetch()
    assert got.new and got.path.read_bytes() == FILE and not files.part().exists()
    assert files.ranges == ["bytes=500-1523"]


@pytest.mark.parametrize(
    "answer",
    [
        (206, {"Content-Range": f"bytes 0-1023/{len(FILE)}"}, FILE[:1024]),  # not where it ends
        (206, {"Content-Range": "bytes 1000-2023/9999"}, FILE[1000:2024]),  # another file
        (206, {}, FILE[1000:2024]),  # no Content-Range
        (200, {}, FILE + b"more"),  # a whole file, but not this one
    ],
)
def test_a_range_not_where_the_part_ends_is_refused_in_one_line(
    files: FileServer, answer: Shaped
) -> None:
    files.part().parent.mkdir()
    files.part().write_bytes(FILE[:1000])
    files.answer = lambda asked: answer
    with pytest.raises(downloads.DownloadFailed) as refused:
        files.fetch()
    assert "\n" not in refused.value.message and SHA[:12] in refused.value.message
    assert "hash" not in refused.value.message  # not told as if the bytes were tampered with
    assert files.part().read_bytes() == FILE[:1000]  # kept for a run against a sane server
    assert files.ranges == ["bytes=1000-2023"]


def test_a_part_longer_than_the_file_is_begun_again(files: FileServer) -> None:
    """Such a part skipped the loop and failed the hash, read as tampering; it is not this
    file's start, so it goes and the file is fetched from its first byte in the same run."""
    files.part().parent.mkdir()
    files.part().write_bytes(FILE + b"tail")
    got = files.fetch()
    assert got.new and got.path.read_bytes() == FILE and not files.part().exists()
    assert files.ranges[0] == "bytes=0-1023" and len(files.ranges) == 5


@pytest.mark.parametrize(
    "item",
    [
        "a string", [ITEM], None,
        {k: v for k, v in ITEM.items() if k != "sha256"},
        {k: v for k, v in ITEM.items() if k != "url"},
        {k: v for k, v in ITEM.items() if k != "bytes"},
        {k: v for k, v in ITEM.items() if k != "media_type"},
        {**ITEM, "sha256": SHA.upper()}, {**ITEM, "sha256": SHA[:63]}, {**ITEM, "sha256": 7},
        {**ITEM, "bytes": "5000"}, {**ITEM, "bytes": 0}, {**ITEM, "bytes": -5},
        {**ITEM, "bytes": True}, {**ITEM, "bytes": 5000.0}, {**ITEM, "bytes": None},
        {**ITEM, "url": f"/device/v1/cases/2026-000002/attachments/{SHA}"},
        {**ITEM, "url": f"/device/v1/cases/{NUMBER}/attachments/{'0' * 64}"},
        {**ITEM, "url": f"https://elsewhere.example{ITEM['url']}"},
        {**ITEM, "url": ITEM["url"] + "?x=1"}, {**ITEM, "url": None},
        {**ITEM, "media_type": ["image/jpeg"]},
    ],
)  # fmt: skip
def test_a_malformed_file_of_a_task_is_one_line_and_not_asked_for(
    files: FileServer, item: Any
) -> None:
    with pytest.raises(downloads.DownloadFailed) as refused:
        files.fetch(item)
    assert "\n" not in refused.value.message and refused.value.message.startswith(NUMBER)
    assert files.ranges == [] and not (files.root / "files").exists()


def test_files_command_refuses_a_malformed_task_in_one_line(files: FileServer) -> None:
    def run() -> Any:
        return CliRunner().invoke(main, ["device", "files", NUMBER, "--dir", str(files.root)])

    for attachments in ([{**ITEM, "bytes": "5000"}], [{}], "not a list", [3]):
        files.tasks = [{"number": NUMBER, "attachments": attachments}]
        done = run()
        assert done.exit_code == 1 and "Traceback" not in done.output, done.output
        assert done.output.startswith(f"citygrid: error: {NUMBER}: "), done.output
        assert done.output.count("\n") == 1, done.output
    files.tasks = {"tasks": "not a list"}
    assert run().output == "citygrid: error: the server's task list is malformed\n"
    files.tasks = [{"number": NUMBER, "attachments": [ITEM, {"sha256": SHA}]}]
    done = run()  # the first file comes in, then the second is refused
    assert done.exit_code == 1, done.output
    assert done.output.splitlines()[0].endswith(f"photo {len(FILE)} bytes, SHA-256 verified (new)")
    assert (
        done.output.splitlines()[1]
        == f"citygrid: error: {NUMBER}: a file of the task is malformed (no 'bytes')"
    )
    with pytest.raises(downloads.DownloadFailed, match="not a case number"):
        files.fetch(ITEM, number="../2026-000001")


# -- sending the queue to a tiny real HTTPS server that answers each request as a test says


def _problem(status: int, code: str, message: str) -> Shaped:
    return (
        status,
        {"Content-Type": "application/json"},
        json.dumps({"error": code, "message": message}).encode(),
    )


class _Api(http.server.BaseHTTPRequestHandler):
    """Answers /auth/token and /auth/nonce, and everything else as the test's script says;
    every request is noted (method, path, Idempotency-Key)."""

    protocol_version = "HTTP/1.1"

    def _any(self) -> None:
        api: FileServer = self.server.files  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Idempotency-Key", "")
        api.calls.append((self.command, self.path, key))
        if self.path == "/auth/token":
            status, headers, body = api.token()
        elif self.path == "/auth/nonce":
            status, headers, body = 200, {}, json.dumps({"nonce": "n" * 32}).encode()
        else:
            status, headers, body = api.script(self.command, self.path, key)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_POST = do_PATCH = do_HEAD = do_GET = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path, _Api)
    cert, key = server.signing
    server.paths.signing_crt.write_bytes(pki.pem(cert))
    config.write_private(
        server.paths.signing_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    quick = dataclasses.replace(
        config.load(server.paths), backoff_base_s=0.001, backoff_cap_s=0.002
    )
    config.save(server.paths, quick)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _queue_reports(server: FileServer, *descriptions: str) -> list[str]:
    """Reports queued in the device's directory; their Idempotency-Keys."""
    queue = Queue(server.paths.queue)
    try:
        made = [
            compose.report(queue, config.load(server.paths), kind="event", major="01",
                           minor="02", description=d, place={"grid": "11010800100101"})
            for d in descriptions
        ]  # fmt: skip
        return [queue.item(i).key for i in made]
    finally:
        queue.close()


def test_a_server_error_fails_its_item_after_a_few_tries_and_the_queue_goes_on(
    api: FileServer,
) -> None:
    """`send` retried an HTTP 500 for ever (4 minutes, until killed), and the items behind it
    waited. A server error other than 502/503/504 is tried MAX_FAULTS times, then its item
    fails with the server's answer and the queue goes on; a 503 is tried until it passes."""
    from mapserver.device_client.sender import MAX_FAULTS

    broken, busy, fine = _queue_reports(api, "always 500", "503 for a while", "at once")
    tries: dict[str, int] = {}
    created = (201, {}, json.dumps({"number": "2026-000009"}).encode())

    def script(method: str, path: str, key: str) -> Shaped:
        assert (method, path) == ("POST", "/device/v1/reports")
        tries[key] = tries.get(key, 0) + 1
        if key == broken:
            return _problem(500, "internal", "an internal error")
        if key == busy and tries[key] <= MAX_FAULTS + 3:
            return _problem(503, "database_unavailable", "database busy or unreachable")
        return created

    api.script = script
    done = CliRunner().invoke(main, ["device", "send", "--dir", str(api.root), "--quiet"])
    assert done.exit_code == 1, done.output
    assert done.output.startswith("sent 2, failed 1,"), done.output
    assert tries == {broken: MAX_FAULTS, busy: MAX_FAULTS + 4, fine: 1}
    shown = CliRunner().invoke(main, ["device", "status", "--dir", str(api.root), "--json"])
    states = [(r["state"], r["error"]) for r in json.loads(shown.output)]
    assert states == [
        ("failed", f"HTTP 500 internal: an internal error ({MAX_FAULTS} times)"),
        ("sent", None),
        ("sent", None),
    ]


def test_a_token_the_server_fails_to_give_halts_the_send(api: FileServer) -> None:
    """A token the server fails on again and again stops `send` in one line (it was retried
    for ever); nothing was sent, so every item stays queued for the next run."""
    from mapserver.device_client.sender import MAX_FAULTS

    _queue_reports(api, "one", "two")
    api.token = lambda: _problem(500, "internal", "an internal error")
    done = CliRunner().invoke(main, ["device", "send", "--dir", str(api.root), "--quiet"])
    assert done.exit_code == 1, done.output
    assert done.output == (
        f"citygrid: error: the server fails to give a token: an internal error ({MAX_FAULTS}"
        " times)\n"
    )
    assert [c[1] for c in api.calls] == ["/auth/token"] * MAX_FAULTS
    queue = Queue(api.paths.queue)
    assert [i.state for i in queue.items()] == ["queued", "queued"]
    queue.close()


def test_a_creation_answered_gone_or_finished_is_taken_as_it_stands(api: FileServer) -> None:
    """A creation asked again under its key answers for its upload as it stands now: 410
    `upload_expired` once the upload is gone (the photo is created anew under a new key, not
    failed), or the stored attachment once it was finished (nothing is sent again)."""
    queue = Queue(api.paths.queue)
    item = compose.report(
        queue, config.load(api.paths), kind="event", major="01", minor="02", description="x",
        place={"grid": "11010800100101"}, photos=[_photo((64, 48)), _photo((48, 64))],
    )  # fmt: skip
    gone, finished = queue.photos(item)
    queue.close()

    def script(method: str, path: str, key: str) -> Shaped:
        if (method, path, key) == ("POST", "/device/v1/uploads", gone.create_key):
            return _problem(410, "upload_expired", "the upload made under this key is gone")
        if (method, path) == ("POST", "/device/v1/uploads") and key == finished.create_key:
            done = {
                "Location": "/device/v1/uploads/u-finished",
                "Upload-Offset": "0",
                "CityGrid-Attachment": "b" * 64,
                "CityGrid-Received-Sha256": finished.sha256,
            }
            return 201, done, b"{}"  # fmt: skip
        if (method, path) == ("POST", "/device/v1/uploads"):
            return 201, {"Location": "/device/v1/uploads/u-new", "Upload-Offset": "0"}, b"{}"
        if (method, path) == ("PATCH", "/device/v1/uploads/u-new"):
            done = {
                "Upload-Offset": str(gone.length),
                "CityGrid-Attachment": "c" * 64,
                "CityGrid-Received-Sha256": gone.sha256,
            }
            return 204, done, b""  # fmt: skip
        assert (method, path) == ("POST", "/device/v1/reports"), (method, path)
        return 201, {}, json.dumps({"number": "2026-000010"}).encode()

    api.script = script
    done = CliRunner().invoke(main, ["device", "send", "--dir", str(api.root), "--quiet"])
    assert done.exit_code == 0, done.output
    queue = Queue(api.paths.queue)
    again = queue.photos(item)
    assert queue.item(item).state == "sent"
    queue.close()
    assert again[0].create_key != gone.create_key and again[0].attachment == "c" * 64
    assert again[1].create_key == finished.create_key and again[1].attachment == "b" * 64
    assert [c[:2] for c in api.calls if c[1].startswith("/device/")] == [
        ("POST", "/device/v1/uploads"),  # 410: gone
        ("POST", "/device/v1/uploads"),  # under a new key
        ("PATCH", "/device/v1/uploads/u-new"),
        ("POST", "/device/v1/uploads"),  # finished already: no PATCH
        ("POST", "/device/v1/reports"),
    ]
