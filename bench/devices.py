"""Device reports over the full path, against tiles through the same server, in one run.

50 simulated devices (threads), each with its own device certificate, bound token, signing
key and the reference client's queue (mapserver/device_client), send signed reports over
HTTPS: TLS with the device certificate, token, nonce, signature check, case creation,
idempotency key, audit entry. Printed: reports/s, and against it tile requests/s through
the same server by the same number of clients (cached 1:500 tiles, person certificate);
the bytes on the wire per report (counted by a pass-through TCP proxy, both ways, TLS
included) against the payload (the signed report body and its photos).

Usage: python bench/devices.py [--area-km2 4] [--devices 50] [--reports 4] [--photos 0]
"""

# ruff: noqa: E402 - the bench directory leaves sys.path before the project is imported
from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import dataclasses
import http.client
import io
import os
import random
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time

from PIL import Image

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from auth.signer import running
from mapserver import db
from mapserver.device_client import compose, config
from mapserver.device_client.backoff import Backoff
from mapserver.device_client.link import Link
from mapserver.device_client.queue import Queue
from mapserver.device_client.sender import Sender
from mapserver.device_client.signer import load as load_signer
from tiles.service import TileService
from tiles.tile_grid import TileRange

HERE = Path(__file__).resolve().parent
# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from tiles_bench_support import bench_settings, free_port, wait_port  # noqa: E402

SECRET = b"devices benchmark passphrase"


class Counter:
    """A pass-through TCP proxy that counts the bytes each way."""

    def __init__(self, target: int):
        self.target, self.up, self.down = target, 0, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0)
            )
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        await asyncio.gather(self._pump(cr, sw, True), self._pump(sr, cw, False))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await src.read(65536):
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                dst.write(data)
                await dst.drain()
            dst.close()
        except (ConnectionError, OSError):
            dst.transport.abort()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def tiles_per_s(port: int, paths: list[str], ca: Path, crt: Path, key: Path, clients: int,
                seconds: float) -> float:  # fmt: skip
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(crt), str(key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
        n = i
        while time.monotonic() < stop:
            conn.request("GET", paths[n % len(paths)])
            reply = conn.getresponse()
            reply.read()
            if reply.status != 200:
                raise RuntimeError(f"tile: status {reply.status}")
            done[i] += 1
            n += clients
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def photo(seed: int) -> bytes:
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (640, 480), rng.randbytes(640 * 480 * 3))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=4.0)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--reports", type=int, default=4, help="per device")
    parser.add_argument("--photos", type=int, default=0, help="per report (about 200 KB each)")
    parser.add_argument("--seconds", type=float, default=5.0, help="of tile load")
    args = parser.parse_args()
    base = bench_settings(args.area_km2, "citygrid_bench_devices")
    settings = dataclasses.replace(base, data_dir=Path(tempfile.mkdtemp()))
    store = CaStore(settings.pki_dir)
    store.init(SECRET)
    out = settings.data_dir / "certs"
    names = [f"bd-dev-{i:03d}" for i in range(args.devices)]
    with db.transaction(settings) as conn:
        if conn.execute("SELECT 1 FROM account WHERE name = 'bd-operator'").fetchone() is None:
            accounts.add(conn, "bd-operator", ["operator"])
        certs.issue(conn, store, SECRET, "bd-operator", pki.Kind.PERSON, out)
        for name in names:
            if conn.execute("SELECT 1 FROM account WHERE name = %s", (name,)).fetchone() is None:
                accounts.add(conn, name, ["inspector"], "street-001")
            certs.issue(conn, store, SECRET, name, pki.Kind.DEVICE, out)
            certs.issue(conn, store, SECRET, name, pki.Kind.SIGNING, out)
        certs.publish_crl(conn, store, SECRET)
        grid = conn.execute(
            "SELECT code FROM unit_grid WHERE code LIKE %s ORDER BY code LIMIT 1",
            (settings.district_code + "001%",),
        ).fetchone()[0]

    svc = TileService.from_settings(settings)
    z = svc.grid.z_of_scale(500)
    assert svc.extent is not None
    e = svc.extent
    x, y, _, _ = svc.grid.locate(z, (e.minx + e.maxx) / 2, (e.miny + e.maxy) / 2)
    rng = TileRange(z, x, y, x + 7, y + 7)
    for mx, my in svc.grid.metatiles(rng, svc.metatile):
        svc.render("topo500", z, mx, my)
    paths = [f"/tiles/topo500/{z}/{tx}/{ty}.png" for tx, ty in rng.tiles()]

    env = {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
        "CITYGRID_RATE_LIMIT_TILES": "*=100000000/hour",
        "CITYGRID_RATE_LIMIT_API": "*=100000000/hour",
    }
    signer = subprocess.Popen(
        [sys.executable, "-m", "mapserver.cli", "signer"], env=env, start_new_session=True,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mapserver.cli", "serve", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "8"],
        env=env, start_new_session=True, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    counter = Counter(port)
    try:
        deadline = time.monotonic() + 60
        sock = settings.data_dir / "run" / "signer.sock"
        while not running(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_port(port)

        # The devices' directories, as `citygrid device init` and `enrol` leave them.
        roots = []
        print(f"queueing {args.devices} × {args.reports} reports …")
        for i, name in enumerate(names):
            root = settings.data_dir / "devices" / name
            root.mkdir(parents=True)
            paths_ = config.Paths(root)
            config.write_private(paths_.device_key, (out / f"{name}.key").read_bytes())
            shutil.copyfile(out / f"{name}.crt", paths_.device_crt)
            config.write_private(paths_.signing_key, (out / f"{name}.signing.key").read_bytes())
            paths_.signing_crt.write_bytes((out / f"{name}.signing.crt").read_bytes())
            shutil.copyfile(store.cert_path, paths_.ca)
            config.save(
                paths_,
                config.ClientSettings(f"https://127.0.0.1:{counter.port}", photo_max_px=600,
                                      jpeg_quality=90),
            )  # fmt: skip
            queue = Queue(paths_.queue)
            cs = config.load(paths_)
            for r in range(args.reports):
                shots = [photo(i * 1000 + r * 10 + k) for k in range(args.photos)]
                compose.report(queue, cs, kind="event", major="01", minor="02",
                               description=f"bench {name} {r}", place={"grid": grid},
                               photos=shots)  # fmt: skip
            queue.close()
            roots.append(root)

        op = (out / "bd-operator.crt", out / "bd-operator.key")
        tiles_per_s(port, paths, store.cert_path, *op, 8, 1.0)  # warm up
        tiles = tiles_per_s(port, paths, store.cert_path, *op, args.devices, args.seconds)

        errors: list[BaseException] = []
        sent = [0] * len(roots)

        def device(i: int) -> None:
            paths_ = config.Paths(roots[i])
            cs = config.load(paths_)
            queue = Queue(paths_.queue)
            try:
                link = Link(paths_, cs)
                summary = Sender(queue, link, load_signer(paths_), cs.chunk_bytes,
                                 Backoff(0.1, 2.0)).drain()  # fmt: skip
                sent[i] = summary.sent
                if summary.failed:
                    errors.append(RuntimeError(f"{roots[i].name}: {summary.failed} failed"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                queue.close()

        up0, down0 = counter.up, counter.down
        threads = [threading.Thread(target=device, args=(i,)) for i in range(len(roots))]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        if errors:
            raise SystemExit(f"devices failed: {errors[0]!r}")
        reports = sum(sent)
        payload = 0
        for root in roots:
            queue = Queue(config.Paths(root).queue)
            payload += sum(len(i.body or b"") for i in queue.items())
            payload += sum(p.length for p in queue.photos())
            queue.close()
        wire = (counter.up - up0) + (counter.down - down0)
        per = reports / elapsed
        print(f"tiles            : {tiles:8.1f} /s ({args.devices} clients, kept-alive)")
        print(f"device reports   : {per:8.1f} /s ({reports} reports, {args.photos} photos"
              f" each, {args.devices} devices: token, nonce, signed report, audit)")  # fmt: skip
        print(f"reports / tiles  : {per / tiles:.3f}")
        over = (wire - payload) / reports
        print(f"bytes per report : {wire / reports:,.0f} on the wire (both ways, TLS included)"
              f" for {payload / reports:,.0f} of payload: overhead {over:,.0f}"
              f" ({wire / payload:.2f}×)")  # fmt: skip
    finally:
        counter.close()
        for proc in (server, signer):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
