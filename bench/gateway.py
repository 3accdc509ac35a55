"""Warm tiles/s through the whole gateway vs a bench-only TLS file server, same run.

Full path: `citygrid serve` (gunicorn gthread, mTLS with CRL check, certificate → account,
policy, Redis rate limit, audit entry per request). Baseline: gunicorn serving the same
cached files over TLS with none of those checks (bench/apps/gateway_baseline.py). Same workers,
threads and client concurrency; the client keeps its connections open.

Usage: python bench/gateway.py [--area-km2 50] [--seconds 10] [--clients 8]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import http.client
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.serve import GUNICORN_CONF, prepare_tls
from tiles.service import TileService
from tiles.tile_grid import TileRange

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from tiles_bench_support import bench_settings, free_port, wait_port  # noqa: E402

SECRET = "gateway benchmark passphrase"


def load(
    port: int,
    paths: list[str],
    ca: Path,
    cert: Path | None,
    key: Path | None,
    clients: int,
    seconds: float,
) -> float:
    """Requests per second from `clients` threads, each on one kept-alive connection."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        if cert:
            ctx.load_cert_chain(str(cert), str(key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        n = i
        while time.monotonic() < stop:
            conn.request("GET", paths[n % len(paths)])
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    base = bench_settings(args.area_km2)
    settings = dataclasses.replace(base, data_dir=Path(tempfile.mkdtemp()))
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    out = settings.data_dir / "certs"
    with db.transaction(settings) as conn:
        conn.execute(
            "DELETE FROM account_role WHERE account_id IN "
            "(SELECT id FROM account WHERE name = 'bench-inspector')"
        )
        conn.execute(
            "DELETE FROM certificate WHERE account_id IN "
            "(SELECT id FROM account WHERE name = 'bench-inspector')"
        )
        conn.execute("DELETE FROM account WHERE name = 'bench-inspector'")
        accounts.add(conn, "bench-inspector", ["operator"])
        certs.issue(conn, store, SECRET.encode(), "bench-inspector", pki.Kind.PERSON, out)
    os.environ["CITYGRID_CA_PASSPHRASE"] = SECRET
    files = prepare_tls(settings, "127.0.0.1")

    svc = TileService.from_settings(settings)
    z = svc.grid.z_of_scale(500)
    assert svc.extent is not None
    e = svc.extent
    x, y, _, _ = svc.grid.locate(z, (e.minx + e.maxx) / 2, (e.miny + e.maxy) / 2)
    rng = TileRange(z, x, y, x + 15, y + 15)
    for mx, my in svc.grid.metatiles(rng, svc.metatile):
        svc.render("topo500", z, mx, my)
    paths = [f"/tiles/topo500/{z}/{tx}/{ty}.png" for tx, ty in rng.tiles()]

    env = {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RATE_LIMIT_TILES": "*=100000000/hour",
    }
    results: dict[str, float] = {}
    since: dict[str, float] = {}
    gunicorn = str(shutil.which("gunicorn", path=str(Path(sys.executable).parent)))
    tls = {
        "CITYGRID_TLS_WORKERS": "2",
        "CITYGRID_TLS_THREADS": "8",
        "CITYGRID_TLS_CERT": str(files.cert),
        "CITYGRID_TLS_KEY": str(files.key),
        "CITYGRID_TLS_CA": str(files.ca),
        "CITYGRID_TLS_CRL": str(files.crl),
    }
    for name in ("gateway", "no-audit", "baseline"):
        port = free_port()
        extra: dict[str, str] = {"BENCH_TILE_DIR": str(settings.tile_dir)}
        if name == "gateway":
            cmd = [sys.executable, "-m", "mapserver.cli", "serve", "--bind", f"127.0.0.1:{port}"]
            cmd += ["--workers", "2", "--threads", "8"]
        elif name == "no-audit":  # the same gunicorn configuration, audit write a no-op
            cmd = [gunicorn, "-c", str(GUNICORN_CONF), "--chdir", str(HERE / "apps")]
            cmd += ["gateway_noaudit:create()"]
            extra.update(tls, CITYGRID_TLS_BIND=f"127.0.0.1:{port}")
        else:
            cmd = [gunicorn, "-k", "gthread", "-w", "2", "--threads", "8"]
            cmd += ["--certfile", str(files.cert), "--keyfile", str(files.key)]
            cmd += [
                "--bind",
                f"127.0.0.1:{port}",
                "--chdir",
                str(HERE / "apps"),
                "gateway_baseline:app",
            ]
        proc = subprocess.Popen(
            cmd, env={**env, **extra}, start_new_session=True, stderr=subprocess.DEVNULL
        )
        try:
            wait_port(port)
            cert, key = (out / "bench-inspector.crt", out / "bench-inspector.key")
            load(port, paths, files.ca, cert, key, args.clients, 1.0)  # warm up
            since[name] = time.time()
            results[name] = load(port, paths, files.ca, cert, key, args.clients, args.seconds)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait()
        print(
            f"{name:9s}: {results[name]:8.0f} tiles/s ({args.clients} clients, {args.seconds:g} s)"
        )
    print(f"full gateway path / no-check baseline: {results['gateway'] / results['baseline']:.2f}")
    print(f"with audit / audit write as a no-op: {results['gateway'] / results['no-audit']:.2f}")
    with db.connect(settings) as conn:
        sizes = sorted(
            n
            for (n,) in conn.execute(
                "SELECT count(*) FROM audit_entry WHERE at >= to_timestamp(%s)"
                " AND at < to_timestamp(%s) GROUP BY at",
                (since["gateway"], since["gateway"] + args.seconds),
            ).fetchall()
        )
    if sizes:
        print(
            f"group commit: {len(sizes)} commits for {sum(sizes)} entries, mean batch "
            f"{sum(sizes) / len(sizes):.1f}, median {sizes[len(sizes) // 2]}, max {sizes[-1]}"
        )
    shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
