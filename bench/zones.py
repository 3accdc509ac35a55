"""Cached-tile latency through two zones vs one process, in one run.

- one-process: `citygrid serve` on the map database, rendering and caching in itself (what
  `make run` serves);
- renderer: the renderer alone, asked as the gateway asks it (the hop's share): on its tile
  channel (tiles.tile_channel) with the gateway's own client (tiles.tile_line.TileLine), and
  at its app with http.client (`renderer-app`, the way without a channel); `renderer-paced`
  asks the channel once per one-process p50 (a pause before each request, as the gateway's
  requests come), so that both ends idle between requests as they do behind the gateway;
- two-zone: `citygrid serve` with renderer_url (the gateway, on a database of its own) in
  front of `citygrid renderer serve` (tests/zones.py: separate processes, settings and
  databases; here the map database also admits the one-process server's role).

Both gateways do everything they do in production (mTLS with CRL check, identity, policy,
Redis rate limit with a limit high enough not to refuse, audit entry per request); both caches
are warmed first. The audit sequencers run as services of their own, as deployed
(citygrid-sequencer.service, citygrid-renderer-sequencer.service; the one-process server's
log is the map database's, whose sequencer service leads it too), so that no serving process
integrates, hashes and signs beside its requests; `--in-process-sequencers` leaves them to
the serving processes (whichever leads first: the renderer, for its own log and the
one-process server's). One client connection per target, kept alive; requests of the two targets
are interleaved in rounds so that the machine's other load falls on both. Prints p50 and p99
per target and their ratios (target: two-zone within 1.3× of one-process), and what the hop
adds inside the gateway (two-zone minus one-process at p50) beside the renderer asked from
this process, back to back and paced, and the machine's CPU idle driver and its guest halt
polling (on a virtual machine a vCPU that halts when idle is slow to wake, and runs cold:
docs/performance.md, "The hop on a virtual machine"). The tiles are the
`--tiles` nearest the district's centre at topo500's finest level (before 2026-11-27: the
served range's first ones, blank tiles at its corner).

With `--cpu-latency US` the run holds a PM QoS request that idle CPUs wake within US µs
(mapserver.cpu_latency, as deploy/systemd/citygrid-cpu-latency.service does; root only).

Usage: python bench/zones.py [--tiles 64] [--rounds 10] [--per-round 200]
       [--in-process-sequencers] [--cpu-latency US]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

# Run as a script: this folder's names must not hide modules; the tests' helpers are used.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tiles.tile_line import TileLine  # noqa: E402 - after the path is set

RATE = {"CITYGRID_RATE_LIMIT_TILES": "*=10000000/minute"}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _client(port: int, ca: Path, cert: tuple[Path, Path]) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)


def _line(port: int, ca: Path, cert: tuple[Path, Path]) -> TileLine:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return TileLine("127.0.0.1", port, ctx, 30)


RECONNECTS = [0]
SIZES: list[int] = []  # bytes of each answer


def _get(conn: http.client.HTTPSConnection, path: str, token: str = "") -> float:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    start = time.perf_counter()
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
    except (http.client.RemoteDisconnected, ConnectionResetError):  # the server closed it
        RECONNECTS[0] += 1
        conn.close()
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
    body = response.read()
    spent = time.perf_counter() - start
    SIZES.append(len(body))
    if response.status != 200 or not body:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    return spent * 1000


def _exchange(line: TileLine, path: str, token: str) -> float:
    """`path` asked on the tile channel as the gateway asks it (tiles.remote)."""
    headers = {"Authorization": f"Bearer {token}"}
    start = time.perf_counter()
    try:
        reply = line.exchange("GET", path, None, headers)
    except (http.client.HTTPException, OSError):  # the renderer closed it
        RECONNECTS[0] += 1
        line.close()
        start = time.perf_counter()
        reply = line.exchange("GET", path, None, headers)
    spent = time.perf_counter() - start
    if reply.will_close:
        line.close()
    SIZES.append(len(reply.body))
    if reply.status != 200 or not reply.body:
        raise RuntimeError(f"{path}: {reply.status} {reply.body[:200]!r}")
    return spent * 1000


def _pace(one_process: list[float]) -> float:
    """Seconds between paced requests: the one-process p50 so far (0.8 ms before any)."""
    return (_percentile(one_process, 0.5) if one_process else 0.8) / 1000


def _idle_driver() -> str:
    """The CPU idle driver, under haltpoll how long an idle vCPU polls before halting, and the
    wake-up latency in force (mapserver.cpu_latency: readable by root only)."""
    from mapserver import cpu_latency

    driver = Path("/sys/devices/system/cpu/cpuidle/current_driver")
    poll = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    found = driver.read_text().strip() if driver.exists() else "unknown"
    if poll.exists():
        found += f", guest_halt_poll_ns {poll.read_text().strip()}"
    with contextlib.suppress(cpu_latency.CpuLatencyError):
        found += f"; wake-up latency in force {cpu_latency.current()} µs"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument(
        "--in-process-sequencers", action="store_true",
        help="no sequencer services: the serving processes sequence their logs",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-latency", type=int, default=None, metavar="US",
        help="hold a PM QoS request: idle CPUs wake within US µs (root)",
    )  # fmt: skip
    args = parser.parse_args()
    from mapserver import cpu_latency

    with contextlib.ExitStack() as stack:
        if args.cpu_latency is not None:
            try:
                stack.enter_context(cpu_latency.held(args.cpu_latency))
            except cpu_latency.CpuLatencyError as exc:
                parser.error(exc.message)
        measure(args)


def measure(args: argparse.Namespace) -> None:

    from auth import accounts, certs, pki
    from auth.ca_store import CaStore
    from mapserver import db
    from tests.tls import Server
    from tests.zones import SECRET, two_zones

    tmp = Path(tempfile.mkdtemp(prefix="citygrid-bench-zones-"))
    try:
        with two_zones(
            tmp, isolate=False, gateway_env=RATE, sequencers=not args.in_process_sequencers
        ) as z:
            # The one-process server: the map database itself, the same CA, its own cache.
            one = tmp / "one-process" / "var"
            shutil.copytree(z.gateway_db.pki_dir, one / "pki")
            store = CaStore(one / "pki")
            with db.transaction(z.map_db) as conn:
                accounts.add(conn, "zone-operator", ["operator"], None)
                person = certs.issue(
                    conn, store, SECRET, "zone-operator", pki.Kind.PERSON, tmp / "one-process"
                )
            single = Server(
                {"CITYGRID_DATABASE_URL": z.map_db.database_url, "CITYGRID_DATA_DIR": str(one),
                 **RATE},
                workers=1,
            )  # fmt: skip
            single.wait_ready()
            try:
                ones = _client(single.port, z.ca, (person.files[0], person.files[1]))
                twos = _client(z.gateway_port, z.ca, z.person)
                twos.request("GET", "/tiles/topo500")
                level = json.loads(twos.getresponse().read())["levels"][-1]
                t, zl = level["tiles"], level["level"]
                # The tiles nearest the district's centre (streets and buildings, 1.7 kB at
                # the median): the served range's corner holds blank tiles of 103 bytes.
                cx, cy = (t["x_min"] + t["x_max"]) / 2, (t["y_min"] + t["y_max"]) / 2
                served = [
                    (x, y)
                    for y in range(t["y_min"], t["y_max"] + 1)
                    for x in range(t["x_min"], t["x_max"] + 1)
                ]
                served.sort(key=lambda xy: (xy[0] - cx) ** 2 + (xy[1] - cy) ** 2)
                paths = [f"/tiles/topo500/{zl}/{x}/{y}.png" for x, y in served[: args.tiles]]
                for conn in (ones, twos):  # warm both caches (renders happen here)
                    for path in paths:
                        _get(conn, path)
                # The renderer alone, asked as the gateway asks it (service certificate, grant):
                # the hop's share of the two-zone time.
                inner = _line(z.tile_port, z.ca, z.service)
                inner_app = _client(z.renderer_port, z.ca, z.service)
                from cryptography import x509

                from tiles import grant as grants

                leaf = x509.load_pem_x509_certificates(z.service[0].read_bytes())[0]
                token = grants.sign(
                    grants.load_private(z.grant_key),
                    grants.Grant("zone-operator", ("topo500",), zl, None),
                    pki.thumbprint(leaf), lifetime=300,
                )  # fmt: skip
                inner_paths = [p.replace("/tiles/", "/tile/", 1) for p in paths]
                times: dict[str, list[float]] = {
                    "one-process": [], "two-zone": [], "renderer": [], "renderer-app": [],
                    "renderer-paced": [],
                }  # fmt: skip
                RECONNECTS[0] = 0
                for r in range(args.rounds):
                    order = [
                        ("one-process", ones), ("two-zone", twos), ("renderer", inner),
                        ("renderer-app", inner_app), ("renderer-paced", inner),
                    ]  # fmt: skip
                    for name, conn in order if r % 2 == 0 else order[::-1]:
                        for i in range(args.per_round):
                            inner_path = inner_paths[i % len(paths)]
                            if name == "renderer":
                                times[name].append(_exchange(inner, inner_path, token))
                            elif name == "renderer-paced":
                                time.sleep(_pace(times["one-process"]))
                                times[name].append(_exchange(inner, inner_path, token))
                            elif name == "renderer-app":
                                times[name].append(_get(conn, inner_path, token))
                            else:
                                times[name].append(_get(conn, paths[i % len(paths)]))
                p = {n: (_percentile(v, 0.5), _percentile(v, 0.99)) for n, v in times.items()}
                for name, (p50, p99) in p.items():
                    n = len(times[name])
                    print(f"{name:14s}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({n} requests)")
                print(
                    f"two-zone / one-process: p50 {p['two-zone'][0] / p['one-process'][0]:.2f}×"
                    f"  p99 {p['two-zone'][1] / p['one-process'][1]:.2f}×  (target ≤ 1.3×)"
                )
                added = p["two-zone"][0] - p["one-process"][0]
                print(
                    f"the hop at p50: {added:.2f} ms in the gateway (two-zone − one-process),"
                    f" {p['renderer'][0]:.2f} ms from a process doing nothing else, back to back;"
                    f" {p['renderer-paced'][0]:.2f} ms paced"
                    f" (one request per {_pace(times['one-process']) * 1000:.2f} ms)"
                )
                print(f"CPU idle: {_idle_driver()}")
                print(f"connections the servers closed during the measurement: {RECONNECTS[0]}")
                sizes = sorted(SIZES)
                print(f"tile bytes: median {sizes[len(sizes) // 2]}, largest {sizes[-1]}")
            finally:
                single.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
