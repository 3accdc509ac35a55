"""What one cached tile costs in the app itself: CPU per request, in process, no server.

The production app (`create_app`) is called as a WSGI application with the environ nginx's
channel gives it (forwarded certificate, `X-Accel-Redirect` answer), one request after the
other, in `--rounds` alternating turns of four kinds:
- app: the whole path (identity, rate limit, policy, view, audit entry flushed to the spool);
- unflushed: the same with the spool's `fdatasync` a no-op (what the flush itself costs);
- no-audit: the same with the audit write a no-op;
- baseline: bench/apps/gateway_baseline.py, the bare WSGI file server of bench/gateway.py.
Printed per kind: the process's CPU (user and system, every thread: the spool's shipper
and the sequencer included) and the wall time per request, then each as a multiple of the
baseline's, and the audit's share. PostgreSQL's own CPU for the shipped entries is not in
these figures (bench/gateway.py measures the whole machine).

Usage: python bench/app_cost.py [--requests 3000] [--rounds 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import quote

from werkzeug.test import EnvironBuilder

import audit.spool
from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import create_app, db
from mapserver import settings as settings_mod
from mapserver.services import services
from tiles.service import TileService
from tiles.tile_grid import TileRange

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE))  # after the project: bench/audit.py is not the audit package
from tiles_bench_support import bench_settings  # noqa: E402

SECRET = "app cost benchmark passphrase"
KINDS = ("app", "unflushed", "no-audit", "baseline")
Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Cost(NamedTuple):
    user_us: float
    system_us: float
    wall_us: float

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.system_us


class UnixPeer:
    """What the app sees of gunicorn's socket on nginx's channel: a Unix socket."""

    family = socket.AF_UNIX


def _answered(app: Wsgi, environ: dict[str, Any]) -> str:
    status: list[str] = []
    body = app(environ, lambda s, headers, exc=None: status.append(s))
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return status[0]


def _turn(app: Wsgi, environs: list[dict[str, Any]]) -> Cost:
    before, began = os.times(), time.perf_counter()
    for environ in environs:
        _answered(app, environ)
    wall, after = time.perf_counter() - began, os.times()
    n = len(environs)
    return Cost(
        (after.user - before.user) / n * 1e6,
        (after.system - before.system) / n * 1e6,
        wall / n * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per turn")
    parser.add_argument("--rounds", type=int, default=4, help="alternating turns per kind")
    args = parser.parse_args()

    base = bench_settings(4.0)
    data_dir = Path(tempfile.mkdtemp())
    store = CaStore(data_dir / "pki")
    store.init(SECRET.encode())
    out = data_dir / "certs"
    who = f"bench-{uuid.uuid4().hex[:8]}"  # issued certificates stay in the register
    settings = dataclasses.replace(base, data_dir=data_dir)
    with db.transaction(settings) as conn:
        accounts.add(conn, who, ["operator"])
        certs.issue(conn, store, SECRET.encode(), who, pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    svc = TileService.from_settings(settings)
    z = svc.grid.z_of_scale(500)
    assert svc.extent is not None
    e = svc.extent
    x, y, _, _ = svc.grid.locate(z, (e.minx + e.maxx) / 2, (e.miny + e.maxy) / 2)
    for mx, my in svc.grid.metatiles(TileRange(z, x, y, x, y), svc.metatile):
        svc.render("topo500", z, mx, my)

    # The app as `citygrid serve --behind-nginx` runs it, its settings as the server reads them.
    os.environ["CITYGRID_TLS_BEHIND_NGINX"] = "1"
    os.environ["CITYGRID_RATE_LIMIT_TILES"] = "*=100000000/hour"
    os.environ["BENCH_TILE_DIR"] = str(settings.tile_dir)
    loaded = dataclasses.replace(
        settings_mod.load(), database_url=settings.database_url, data_dir=data_dir
    )
    app = create_app(loaded)
    gateway = services(app).gateway
    record = gateway.record
    from apps.gateway_baseline import app as baseline

    headers = {
        "X-SSL-Client-Cert": quote((out / f"{who}.crt").read_text(), safe=""),
        "X-SSL-Client-Verify": "SUCCESS",
        "X-Real-IP": "10.20.30.40",
        "Host": "localhost",
    }
    path = f"/tiles/topo500/{z}/{x}/{y}.png"

    def environs() -> list[dict[str, Any]]:
        made = []
        for _ in range(args.requests):
            environ = EnvironBuilder(path=path, headers=headers).get_environ()
            environ["gunicorn.socket"] = UnixPeer()
            made.append(environ)
        return made

    fdatasync = audit.spool.os.fdatasync

    def kind(name: str) -> Wsgi:
        """The app set up for `name` (the audit write and the flush as the kind has them)."""
        gateway.record = (lambda entry: None) if name == "no-audit" else record
        audit.spool.os.fdatasync = (lambda fd: None) if name == "unflushed" else fdatasync
        return baseline if name == "baseline" else app

    for name in KINDS:  # warm: connections open, the spool file made, the tile in memory
        status = _answered(kind(name), environs()[0])
        if not status.startswith("200"):
            raise SystemExit(f"{name}: a warm-up request was answered {status}")
    turns: dict[str, list[Cost]] = {name: [] for name in KINDS}
    for r in range(args.rounds):
        for name in KINDS if r % 2 == 0 else KINDS[::-1]:
            ready = environs()
            turns[name].append(_turn(kind(name), ready))
    kind("app")  # the flush restored

    costs = {
        name: Cost(*(statistics.median(getattr(t, f) for t in done) for f in Cost._fields))
        for name, done in turns.items()
    }
    floor = costs["baseline"]
    for name, c in costs.items():
        print(
            f"{name:10s}: CPU {c.cpu_us:6.0f} µs/request (user {c.user_us:5.0f}, system "
            f"{c.system_us:4.0f})  wall {c.wall_us:6.0f} µs  ×{c.cpu_us / floor.cpu_us:5.1f} "
            f"the baseline's CPU",
            flush=True,
        )
    full, unflushed, bare = costs["app"], costs["unflushed"], costs["no-audit"]
    print(
        f"audit entry, CPU: {full.cpu_us - bare.cpu_us:.0f} µs/request, of it the flush "
        f"{full.cpu_us - unflushed.cpu_us:.0f}"
    )
    print(f"no-audit / app, CPU per request:  {bare.cpu_us / full.cpu_us:.3f}")
    os._exit(0)  # the app's background threads (shipper, sequencer) end with the process


if __name__ == "__main__":
    main()
