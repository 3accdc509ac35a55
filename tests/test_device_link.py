"""The reference device client over a GPRS-like link, against the real server (gunicorn,
TLS, client certificates, the CA signer): four inspectors' devices send 100 reports with 3
photos each and 20 check results through a fault-injecting TCP proxy that throttles,
delays and cuts connections at random points of requests and answers; one client is
killed with SIGKILL in the middle of an upload and started again. Every case exists once,
every photo arrives byte for byte, no upload is left behind, and the bytes sent stay
under 1.3 × the payload.

The link is GPRS scaled 200× so that the test runs in seconds, not hours: 40 kbit/s each
way becomes 1 MB/s, 300 ms one way becomes 1.5 ms; which connections are cut, and where,
comes from a seeded random source."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image

from auth import certs, enrol, pki
from mapserver import db
from mapserver.cases import media
from mapserver.cli import main
from mapserver.device import uploads
from mapserver.device_client import compose, config
from mapserver.device_client.queue import Queue

from .app_client import SECRET, Install
from .conftest import demo_database
from .test_cases import Desk
from .tls import Server

SCALE = 200
BYTES_PER_S = 40_000 // 8 * SCALE  # GPRS up and down, scaled
ONE_WAY_S = 0.300 / SCALE
CUT_SHARE = 0.10  # of connections, at least
DEVICES = 4  # 25 reports (75 uploads) each: under the 120 uploads an hour per account
REPORTS, PHOTOS, CHECKS = 100, 3, 20
VOICED = (3, 13, 23)  # the reports of each device that carry a voice recording too


class LossyLink:
    """A TCP proxy in front of the server: each direction throttled to `rate` bytes/s with
    `delay` added to every burst; a seeded share of connections is cut (both sides reset)
    at a random byte of the request or of the answer. Counts what crosses it."""

    def __init__(self, target: int, seed: int, cut: float, rate: float, delay: float):
        self.target, self.cut, self.rate, self.delay = target, cut, rate, delay
        self.rng = random.Random(seed)
        self.connections = self.cuts = self.up = self.down = 0
        self.cut_up = self.cut_down = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        """Stop serving, end the connections still open (their pumps closing both sides on
        the running loop), then the loop: none is left pending for a closed loop."""

        async def stop() -> None:
            self.server.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(stop(), self.loop)
        self.thread.join(10)
        self.loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        plan: tuple[str, int] | None = None
        # About half the planned cuts fall past a connection's end: plan 2.5 × the share.
        if self.rng.random() < self.cut * 2.5:
            up = self.rng.random() < 0.5
            # Anywhere in a request (handshake, headers, a 128 KiB chunk) or an answer.
            plan = (
                ("up", self.rng.randint(1, 140_000)) if up else ("down", self.rng.randint(1, 5000))
            )
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.transport.abort()
            return
        writers = (client_w, server_w)
        try:
            await asyncio.gather(
                self._pump(client_r, server_w, "up", plan, writers),
                self._pump(server_r, client_w, "down", plan, writers),
            )
        finally:
            for w in writers:
                w.close()

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        direction: str,
        plan: tuple[str, int] | None,
        writers: tuple[asyncio.StreamWriter, ...],
    ) -> None:
        cut_at = plan[1] if plan and plan[0] == direction else None
        passed, free = 0, 0.0
        try:
            while True:
                data = await src.read(16384)
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                cutting = cut_at is not None and passed + len(data) >= cut_at
                if cutting:
                    data = data[: cut_at - passed]  # type: ignore[operator]
                now = self.loop.time()
                start = max(now + self.delay, free) if free < now else free
                free = start + len(data) / self.rate
                await asyncio.sleep(max(0.0, free - now))
                dst.write(data)
                passed += len(data)
                if direction == "up":
                    self.up += len(data)
                else:
                    self.down += len(data)
                if cutting:
                    self.cuts += 1
                    self.cut_up += direction == "up"
                    self.cut_down += direction == "down"
                    for w in writers:
                        w.transport.abort()
                    return
                await dst.drain()
        except (ConnectionError, OSError):
            for w in writers:
                w.transport.abort()


@dataclasses.dataclass
class Field:
    install: Install
    server: Server
    link: LossyLink
    dirs: list[Path]
    checks: list[str]
    originals: Future[list[bytes]]
    pictured: tuple[str, str]  # a case waiting to be verified, and its photo's sha256


def _noise(seed: int) -> bytes:
    """An original photo (noise, 640×480) that the client downsizes to about 200 KB."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (640, 480), rng.randbytes(640 * 480 * 3))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def _checking_cases(desk: Desk, count: int) -> list[str]:
    """`count` cases of street 001 waiting for an inspector's check, through the centres."""
    numbers = []
    for i in range(count):
        number = desk.record(description=f"待核查 {i}").get_json()["number"]
        for who, name, params in [
            ("operator", "accept", {}),
            ("leader", "file", {}),
            ("dispatcher", "dispatch", {"bureau": desk.bureau}),
            ("bureau", "receive", {}),
            ("bureau", "handle", {"result": "已处理"}),
            ("dispatcher", "forward", {}),
            ("operator", "request_check", {}),
        ]:
            reply = desk.act(who, number, name, **params)
            assert reply.status_code == 200, (name, reply.get_json())
        numbers.append(number)
    return numbers


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    # The phone's photos are made while the install is set up (one thread beside it).
    making = ThreadPoolExecutor(1)
    originals = making.submit(lambda: [_noise(n) for n in range(REPORTS * PHOTOS)])
    settings = demo_database("citygrid_device_link", tmp_path_factory.mktemp("link-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("link-certs"), rate_limit_api="*=1000000/hour"
    )
    desk = Desk(install)
    checks = _checking_cases(desk, CHECKS)
    uploaded = desk.client("operator").post(
        "/cases/attachments", data=_noise(REPORTS * PHOTOS + 1), content_type="image/jpeg"
    )
    assert uploaded.status_code == 201, uploaded.get_json()
    sha = uploaded.get_json()["sha256"]
    pictured = desk.record(description="待核实，附照片", attachments=[sha]).get_json()["number"]
    base = tmp_path_factory.mktemp("link-devices")
    issued: list[tuple[str, Path, str]] = []
    for k in range(DEVICES):
        name = f"dl-{k}"
        install.account(name, ["inspector"], "street-001")
        with db.transaction(install.settings) as conn:
            certs.issue(conn, install.store, SECRET, name, pki.Kind.DEVICE, base / "issued")
            code = enrol.issue_code(conn, name)
        issued.append((name, base / f"d{k}", code))
    with db.transaction(install.settings) as conn:
        certs.publish_crl(conn, install.store, SECRET)
    install.close()
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
        "CITYGRID_RATE_LIMIT_API": "*=1000000/hour",
    }
    server = Server(env)
    link = LossyLink(server.port, seed=13, cut=CUT_SHARE, rate=BYTES_PER_S, delay=ONE_WAY_S)
    try:
        server.wait_ready()
        runner = CliRunner()
        for name, root, code in issued:
            # Set up and enrolled in the office (directly), then sent over the bad link.
            args = [
                "device",
                "init",
                "--dir",
                str(root),
                "--server",
                f"https://127.0.0.1:{server.port}",
            ]
            args += ["--cert", str(base / "issued" / f"{name}.crt")]
            args += ["--key", str(base / "issued" / f"{name}.key")]
            args += ["--ca", str(install.store.cert_path), "--photo-max-px", "600"]
            args += ["--jpeg-quality", "90"]
            done = runner.invoke(main, args)
            assert done.exit_code == 0, done.output
            done = runner.invoke(main, ["device", "enrol", "--dir", str(root), "--code", code])
            assert done.exit_code == 0, done.output
            paths = config.Paths(root)
            assert (paths.signing_key.stat().st_mode & 0o777) == 0o600
            assert (paths.device_key.stat().st_mode & 0o777) == 0o600
            lossy = dataclasses.replace(
                config.load(paths),
                server=f"https://127.0.0.1:{link.port}",
                reuse_connections=False,  # a mobile NAT forgets idle connections
                timeout_s=10,
                backoff_base_s=0.05,
                backoff_cap_s=1.0,
            )
            config.save(paths, lossy)
        yield Field(
            install, server, link, [r for _, r, _ in issued], checks, originals, (pictured, sha)
        )
    finally:
        making.shutdown(cancel_futures=True)
        link.close()
        server.stop()
        db.drop_database(settings)


def _fill(field: Field) -> None:
    """Each device's queue: its share of the reports (3 photos each) and check results."""
    with psycopg.connect(field.install.settings.database_url) as conn:
        grid, lon, lat = conn.execute(
            """SELECT code, ST_X(ST_Transform(p, 4326)), ST_Y(ST_Transform(p, 4326))
               FROM (SELECT code, ST_PointOnSurface(geom) AS p FROM unit_grid
                     WHERE code LIKE '110108001%%' ORDER BY code LIMIT 1) g"""
        ).fetchone()

    originals = field.originals.result()

    def one(k: int) -> None:
        paths = config.Paths(field.dirs[k])
        settings = config.load(paths)
        queue = Queue(paths.queue)
        per = REPORTS // DEVICES
        checks = field.checks[k::DEVICES]
        for i in range(per):
            at = (k * per + i) * PHOTOS
            shots = originals[at : at + PHOTOS]
            place = {"gps": (lon, lat)} if i % 2 else {"place": {"grid": grid}}
            compose.report(
                queue,
                settings,
                kind="event",
                major="01",
                minor="02",
                description=f"弱网上报 {k}-{i}",
                photos=shots,
                voices=[_voice(k * per + i)] if i in VOICED else [],
                **place,  # type: ignore[arg-type]
            )
            if i % 5 == 4 and checks:
                compose.result(queue, settings, number=checks.pop(), outcome="pass", note="已核查")
        queue.close()

    with ThreadPoolExecutor(DEVICES) as pool:
        list(pool.map(one, range(DEVICES)))


def _voice(seed: int) -> bytes:
    """An AMR recording of 3 s (12.2 kbit/s frames), different for every seed."""
    rng = random.Random(seed)
    return b"#!AMR\n" + b"".join(b"\x3c" + rng.randbytes(31) for _ in range(150))


def _send(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mapserver.cli", "device", "send", "--dir", str(root), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _mid_upload(root: Path) -> tuple[int, str, int] | None:
    """(photo, upload location, offset) of a photo part-way up, once 5 items are sent."""
    db_ = sqlite3.connect(f"file:{config.Paths(root).queue}?mode=ro", uri=True)
    try:
        sent = db_.execute("SELECT count(*) FROM item WHERE state = 'sent'").fetchone()[0]
        row = db_.execute(
            "SELECT id, location, sent FROM photo WHERE location IS NOT NULL"
            " AND attachment IS NULL AND sent > 0 AND sent < length(data)"
        ).fetchone()
    finally:
        db_.close()
    return (row[0], row[1], row[2]) if sent >= 5 and row else None


def test_lossy_link_nothing_lost_nothing_doubled(field: Field) -> None:
    _fill(field)
    started = time.monotonic()
    procs = [_send(root) for root in field.dirs]
    # Device 0 is killed in the middle of an upload, then started again.
    caught = None
    while caught is None and procs[0].poll() is None:
        caught = _mid_upload(field.dirs[0])
        time.sleep(0.01)
    assert caught is not None, "device 0 finished before it could be killed mid-upload"
    procs[0].kill()  # SIGKILL: no cleanup of any kind
    procs[0].wait()
    photo_id, location, offset = caught
    procs[0] = _send(field.dirs[0])
    outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    elapsed = time.monotonic() - started
    assert [p.returncode for p in procs] == [0] * DEVICES, outputs

    link = field.link
    with psycopg.connect(field.install.settings.database_url) as conn:
        # Every report is one case, every check result one closing.
        counts = dict(
            conn.execute(
                "SELECT description, count(*) FROM city_case WHERE description LIKE '弱网上报 %%'"
                " GROUP BY description"
            ).fetchall()
        )
        assert len(counts) == REPORTS and set(counts.values()) == {1}
        passes = conn.execute(
            """SELECT c.number, c.state, count(e.id) FROM city_case c
               LEFT JOIN case_event e ON e.case_id = c.id AND e.transition = 'check_pass'
               WHERE c.number = ANY(%s) GROUP BY c.number, c.state""",
            (field.checks,),
        ).fetchall()
        assert {(state, n) for _, state, n in passes} == {("closed", 1)} and len(passes) == CHECKS
        # Every photo: received whole (the sha256 the server took of the joined bytes is
        # that of the bytes the client sent) and linked to its own report; the stored bytes
        # are the cleaning of exactly those bytes (checked on every tenth photo: cleaning
        # is deterministic, and a re-encoding costs time).
        stored = {
            sha: (number, received)
            for sha, number, received in conn.execute(
                """SELECT a.sha256, c.number, u.received_sha256 FROM case_attachment a
                   JOIN case_attachment_link l ON l.attachment_id = a.id
                   JOIN city_case c ON c.id = l.case_id
                   JOIN device_upload u ON u.sha256 = a.sha256
                   WHERE a.uploader LIKE 'dl-%%'"""
            ).fetchall()
        }
        payload = photos_seen = voices_seen = 0
        for root in field.dirs:
            queue = Queue(config.Paths(root).queue)
            assert {i.state for i in queue.items()} == {"sent"}
            for item in queue.items():
                assert item.body is not None
                payload += len(item.body)
                number = json.loads(item.answer or "{}")["number"]
                for photo in queue.photos(item.id):
                    sent = queue.photo_bytes(photo.id, 0, photo.length)
                    assert hashlib.sha256(sent).hexdigest() == photo.sha256
                    payload += photo.length
                    assert stored[str(photo.attachment)] == (number, photo.sha256)
                    if photos_seen % 10 == 0:
                        kept = conn.execute(
                            "SELECT data FROM case_attachment WHERE sha256 = %s",
                            (photo.attachment,),
                        ).fetchone()[0]
                        assert bytes(kept) == media.clean(photo.media_type, sent).data
                    photos_seen += 1
                    voices_seen += photo.media_type == "audio/amr"
            if root == field.dirs[0]:
                # The killed upload was resumed where the server stood, not started again.
                assert queue.photo(photo_id).location == location
            queue.close()
        voiced = DEVICES * len(VOICED)
        assert photos_seen == len(stored) == REPORTS * PHOTOS + voiced and voices_seen == voiced
        # Nothing left half-way, and nothing once every upload's time has passed.
        assert (
            conn.execute("SELECT count(*) FROM device_upload WHERE sha256 IS NULL").fetchone()[0]
            == 0
        )
        conn.execute("UPDATE device_upload SET expires_at = now() - interval '1 s'")
        uploads.purge(conn)
        assert conn.execute(
            "SELECT (SELECT count(*) FROM device_upload WHERE sha256 IS NULL),"
            " (SELECT count(*) FROM device_upload_chunk)"
        ).fetchone() == (0, 0)
    photos = REPORTS * PHOTOS
    print(
        f"\nlossy link: {link.connections} connections, {link.cuts} cut"
        f" ({link.cut_up} in requests, {link.cut_down} in answers),"
        f" sent {link.up / 1e6:.1f} MB for {payload / 1e6:.1f} MB payload"
        f" ({link.up / payload:.3f}×), received {link.down / 1e6:.2f} MB, {elapsed:.1f} s;"
        f" killed at {offset} B of photo {photo_id}"
    )
    assert link.cuts >= CUT_SHARE * link.connections
    assert link.cut_up and link.cut_down
    assert link.up <= 1.3 * payload
    assert payload > photos * 150_000  # the photos were about 200 KB each
    assert os.stat(config.Paths(field.dirs[0]).queue).st_mode & 0o077 == 0


def _through(args: list[str]) -> Any:
    """A device command run again while the link defeats it (a run that fails on the link
    leaves a download's part for the next to resume), as an inspector would."""
    for _ in range(20):
        done = CliRunner().invoke(main, args)
        if "link failed" not in done.output and "cannot be reached" not in done.output:
            return done
    raise AssertionError(f"the link defeated 20 runs: {done.output}")


def test_a_tasks_photo_comes_down_the_lossy_link_in_ranges(field: Field) -> None:
    """`citygrid device files NUMBER` over the same link: the reporter's photo arrives whole
    and checked against the hash the case's step signed, each cut costing at most one range
    (what crossed the link stays near the photo's size); asked again, nothing is fetched."""
    number, sha = field.pictured
    root, link = field.dirs[1], field.link
    with psycopg.connect(field.install.settings.database_url) as conn:
        size = conn.execute(
            "SELECT bytes FROM case_attachment WHERE sha256 = %s", (sha,)
        ).fetchone()[0]
    paths = config.Paths(root)
    config.save(paths, dataclasses.replace(config.load(paths), chunk_bytes=8 * 1024))
    listed = _through(["device", "tasks", "--dir", str(root)])
    assert listed.exit_code == 0 and f"citygrid device files {number}" in listed.output
    cuts, down, share = link.cuts, link.down, link.cut
    link.cut = 0.2  # a cut planned for every second connection, half of them in the answer
    try:
        done = _through(["device", "files", number, "--dir", str(root)])
    finally:
        link.cut = share
    assert done.exit_code == 0, done.output
    got = root / "files" / f"{number}-{sha[:12]}.jpg"
    assert f"{got}  photo {size} bytes, SHA-256 verified (new)" in done.output
    assert hashlib.sha256(got.read_bytes()).hexdigest() == sha
    assert not list((root / "files").glob("*.part"))
    # Ranges of 8 KiB, each on a new connection with its TLS handshake (a mobile NAT forgets
    # idle ones), and the cut ones again: not the whole photo once per cut.
    crossed = link.down - down
    print(f"\nphoto {size} B: {crossed} B down the link, {link.cuts - cuts} connections cut")
    assert link.cuts > cuts and crossed < 3 * size
    again = _through(["device", "files", "--all", "--dir", str(root)])
    assert again.exit_code == 0 and f"{got}  photo {size} bytes, SHA-256 verified (held)" in (
        again.output
    ), again.output
    both = _through(["device", "files", number, "--all", "--dir", str(root)])
    assert both.exit_code == 1 and "not both" in both.output
    missing = _through(["device", "files", "2026-999999", "--dir", str(root)])
    assert missing.exit_code == 1 and "is not among your tasks" in missing.output
