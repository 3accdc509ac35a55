"""Case workflow benchmarks; every figure is a ratio within one run.

1. Signed transitions/s over the full HTTPS path (mTLS, identity, policy, signature and nonce
   check, row lock, history, audit entry) against cached tile requests/s through the same
   server, same clients and duration.
2. The p95 of one inbox page (`GET /cases/inbox`, a dispatcher's, 50 cases) over HTTPS with
   10⁵ cases in the database, against the p95 of the bare SQL query for the same page.

Usage: python bench/cases.py [--area-km2 4] [--seconds 5] [--clients 8] [--cases 100000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import base64
import dataclasses
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from auth import accounts, actions, certs, pki, signed_action
from auth.ca_store import CaStore
from auth.signer import running
from mapserver import db
from tiles.service import TileService
from tiles.tile_grid import TileRange

HERE = Path(__file__).resolve().parent
# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from gateway import Client, load_python  # noqa: E402
from tiles_bench_support import bench_settings, free_port, fresh_copy, wait_port  # noqa: E402

SECRET = "cases benchmark passphrase"
PEOPLE = {"bc-operator": "operator", "bc-dispatcher": "dispatcher"}


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[int(0.95 * (len(ordered) - 1))]


def fill(settings: Any, n: int) -> None:
    """n filed cases spread over the district's grids, numbered in a year of their own."""
    with db.transaction(settings) as conn:
        have = conn.execute("SELECT count(*) FROM city_case WHERE number LIKE '1999-%'").fetchone()
        if have and have[0] >= n:
            return
        conn.execute(
            """INSERT INTO city_case (number, district, kind, major, minor, source, state,
                   description, geom, grid_code, community_code, street_code, reporter, stage,
                   stage_deadline)
               SELECT '1999-' || lpad(i::text, 6, '0'), %s, 'event', '01', '02', 'phone',
                      (ARRAY['filed', 'handling', 'closed', 'reported'])[1 + i %% 4],
                      'benchmark case', ST_PointOnSurface(g.geom), g.code,
                      g.community_code, left(g.code, 9), 'bc-operator', 'dispatch',
                      now() + (i %% 1000) * interval '1 minute'
               FROM generate_series(%s, %s) AS i
               JOIN LATERAL (SELECT code, community_code, geom FROM unit_grid
                             ORDER BY code OFFSET i %% (SELECT count(*) FROM unit_grid)
                             LIMIT 1) g ON true
               ON CONFLICT (number) DO NOTHING""",
            (settings.district_code, (have[0] if have else 0) + 1, n),
        )


def envelope(conn: Any, account: str, cert: Any, key: Any, number: str) -> bytes:
    nonce, _ = actions.new_nonce(conn, account)
    data = signed_action.payload(
        "case.accept", f"case {number}", {"from": "reported"}, nonce, pki.now(),
        pki.thumbprint(cert),
    )  # fmt: skip
    return json.dumps(
        {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
            "certificate": pki.pem(cert).decode(),
        }
    ).encode()


def transitions(port: int, ca: Path, cert: Path, key: Path, jobs: list[tuple[str, bytes]],
                clients: int) -> float:  # fmt: skip
    """Signed `accept` transitions/s, `clients` threads on kept-alive connections."""
    done = [0] * clients

    def run(i: int) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(cert), str(key))
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        for number, body in jobs[i::clients]:
            conn.request("POST", f"/cases/{number}/accept", body=body,
                         headers={"Content-Type": "application/json"})  # fmt: skip
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{number}: status {response.status}")
            done[i] += 1
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
    parser.add_argument("--area-km2", type=float, default=4.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--transitions", type=int, default=400)
    args = parser.parse_args()
    kept = bench_settings(args.area_km2, fresh=False)
    print(f"filling {args.cases} cases …")
    fill(kept, args.cases)  # once, into the kept database; each run takes a copy
    settings = dataclasses.replace(fresh_copy(kept), data_dir=Path(tempfile.mkdtemp()))
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    out = settings.data_dir / "certs"
    signing: dict[str, tuple[Any, Any]] = {}
    with db.transaction(settings) as conn:
        for name, role in PEOPLE.items():
            if conn.execute("SELECT 1 FROM account WHERE name = %s", (name,)).fetchone() is None:
                accounts.add(conn, name, [role])
            certs.issue(conn, store, SECRET.encode(), name, pki.Kind.PERSON, out)
            certs.issue(conn, store, SECRET.encode(), name, pki.Kind.SIGNING, out)
            signing[name] = (
                x509.load_pem_x509_certificates((out / f"{name}.signing.crt").read_bytes())[0],
                serialization.load_pem_private_key(
                    (out / f"{name}.signing.key").read_bytes(), None
                ),
            )
        certs.publish_crl(conn, store, SECRET.encode())

    svc = TileService.from_settings(settings)
    z = svc.grid.z_of_scale(500)
    assert svc.extent is not None
    e = svc.extent
    x, y, _, _ = svc.grid.locate(z, (e.minx + e.maxx) / 2, (e.miny + e.maxy) / 2)
    rng = TileRange(z, x, y, x + 15, y + 15)
    for mx, my in svc.grid.metatiles(rng, svc.metatile):
        svc.render("topo500", z, mx, my)
    paths = [f"/tiles/topo500/{z}/{tx}/{ty}.png" for tx, ty in rng.tiles()]

    # Cases to accept: fresh `reported` ones, each with its signed envelope made beforehand
    # (signing happens in the person's browser, not on the server).
    with db.transaction(settings) as conn:
        start = conn.execute(
            "SELECT coalesce(max(substr(number, 6)::int), 0) FROM city_case"
            " WHERE number LIKE '1998-%'"
        ).fetchone()[0]
        numbers = [f"1998-{start + i + 1:06d}" for i in range(args.transitions)]
        conn.execute(
            """INSERT INTO city_case (number, district, kind, major, minor, source, state,
                   description, geom, grid_code, community_code, street_code, reporter, stage)
               SELECT n, %s, 'event', '01', '02', 'phone', 'reported', 'benchmark case',
                      ST_PointOnSurface(g.geom), g.code, g.community_code, left(g.code, 9),
                      'bc-operator', 'accept'
               FROM unnest(%s::text[]) AS n,
                    (SELECT code, community_code, geom FROM unit_grid ORDER BY code LIMIT 1) g""",
            (settings.district_code, numbers),
        )
        cert, key = signing["bc-operator"]
        jobs = [(n, envelope(conn, "bc-operator", cert, key, n)) for n in numbers]

    env = {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_CA_PASSPHRASE": SECRET,
        "CITYGRID_RATE_LIMIT_TILES": "*=100000000/hour",
        "CITYGRID_RATE_LIMIT_API": "*=100000000/hour",
    }
    socket_path = settings.data_dir / "run" / "signer.sock"
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
    try:
        deadline = time.monotonic() + 60
        while not running(socket_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        wait_port(port)
        ca = store.cert_path
        op = (out / "bc-operator.crt", out / "bc-operator.key")
        client = Client("https", ca, *op)
        load_python(port, paths, client, args.clients, 1.0)  # warm up
        tiles = load_python(port, paths, client, args.clients, args.seconds).rate
        acts = transitions(port, ca, *op, jobs, args.clients)
        print(f"tiles      : {tiles:8.0f} /s ({args.clients} clients)")
        print(f"transitions: {acts:8.1f} /s ({len(jobs)} signed accepts, {args.clients} clients)")
        print(f"signed transitions / tile requests: {acts / tiles:.3f}")

        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.load_cert_chain(str(out / "bc-dispatcher.crt"), str(out / "bc-dispatcher.key"))
        https = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        page: list[float] = []
        for _ in range(40):
            t0 = time.perf_counter()
            https.request("GET", "/cases/inbox?per_page=50")
            reply = https.getresponse()
            body = reply.read()
            page.append(time.perf_counter() - t0)
            assert reply.status == 200, body[:200]
        https.close()
        bare: list[float] = []
        with db.connect(settings) as conn:
            for _ in range(40):
                t0 = time.perf_counter()
                conn.execute(
                    """SELECT c.number, c.state, c.stage_deadline, c.grid_code, c.description
                       FROM city_case c
                       WHERE (c.state IN ('filed', 'handled')
                              OR (c.state = 'handling' AND c.postpone_pending))
                       ORDER BY c.stage_deadline ASC NULLS LAST, c.id LIMIT 50"""
                ).fetchall()
                bare.append(time.perf_counter() - t0)
        print(f"inbox page p95 over HTTPS: {p95(page) * 1000:.1f} ms; bare SQL p95: "
              f"{p95(bare) * 1000:.1f} ms; ratio {p95(page) / p95(bare):.1f}x "
              f"({args.cases} cases)")  # fmt: skip
    finally:
        for proc in (server, signer):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
