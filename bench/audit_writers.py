"""The two places a request's audit entry can be durable, side by side in one run: the host's
spool file (audit.spool.SpoolWriter, the default) and the database queue
(audit.writer.GroupCommitWriter, `audit_durability = "database"`); and the spool without the
zeros its shipper writes ahead of the lines (`room=0`: each line then grows the file).

Each writer records the same entries from `--threads` threads at once, in alternating turns;
printed per writer: a write's p50 and p99 (the time a request waits for its entry to be
durable), the process's CPU per entry (its threads: writing, shipping, sequencing), and the
database's commits per 1,000 entries; then the spool's figures as ratios of the queue's and
of the spool's without room.

Usage: python bench/audit_writers.py [--entries 4000] [--threads 1,8] [--rounds 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psycopg

from audit.keys import signer
from audit.record import Entry
from audit.spool import SpoolWriter
from audit.writer import AuditWriter, GroupCommitWriter
from mapserver import db, migrate
from mapserver.settings import Settings, load

ENTRY = Entry(
    action="tiles.read",
    account="bench-viewer",
    role="viewer",
    cert_serial="4f1c2a9b33d0e871",
    cert_sha256="9" * 64,
    client_addr="10.20.30.40",
    method="GET",
    resource="tile topo500/8/2150/1480",
    request_id="f" * 32,
    status=200,
    bytes=14_203,
    latency_ms=1.234,
    detail={"product": "topo500"},
)


class Turn(NamedTuple):
    waits: list[float]  # seconds per write
    cpu: float  # process CPU seconds
    commits: int  # the database's commits meanwhile


def _commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def _turn(writer: AuditWriter, settings: Settings, entries: int, threads: int) -> Turn:
    def one(_: int) -> float:
        began = time.perf_counter()
        writer.write(ENTRY)
        return time.perf_counter() - began

    before, cpu = _commits(settings.database_url), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        waits = list(pool.map(one, range(entries)))
    if isinstance(writer, SpoolWriter):
        writer.ship_now(timeout=60)  # its shipments are part of its cost
    time.sleep(0.3)  # pg_stat_database counts a backend's commits with a short delay
    return Turn(waits, time.process_time() - cpu, _commits(settings.database_url) - before)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=4000, help="entries per turn")
    parser.add_argument("--threads", default="1,8", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=4, help="alternating turns per writer")
    args = parser.parse_args()
    base = load()
    url = urlunsplit(urlsplit(base.database_url)._replace(path="/citygrid_bench_writers"))
    with tempfile.TemporaryDirectory() as tmp:
        settings = dataclasses.replace(base, database_url=url, data_dir=Path(tmp))
        db.drop_database(settings)
        db.ensure_database(settings)
        with db.connect(settings) as conn:
            migrate.upgrade(conn, settings)
        try:
            _run(settings, args)
        finally:
            db.drop_database(settings)


def _run(settings: Settings, args: argparse.Namespace) -> None:
    key = signer(settings.pki_dir)
    app = settings.serving_database_url
    writers: dict[str, AuditWriter] = {
        "spool": SpoolWriter(app, key, 1000, 10, settings.data_dir / "audit-spool"),
        "spool-no-room": SpoolWriter(app, key, 1000, 10, settings.data_dir / "spool-b", room=0),
        "queue": GroupCommitWriter(app, key, 1000, 10),
    }
    for writer in writers.values():
        for _ in range(200):
            writer.write(ENTRY)  # connections open, files registered
    for threads in (int(t) for t in args.threads.split(",")):
        turns: dict[str, list[Turn]] = {name: [] for name in writers}
        for r in range(args.rounds):
            for name in writers if r % 2 == 0 else list(writers)[::-1]:
                turns[name].append(_turn(writers[name], settings, args.entries, threads))
        figures = {}
        for name, done in turns.items():
            waits = sorted(w for t in done for w in t.waits)
            n = len(waits)
            p50 = statistics.median(waits) * 1000
            p99 = waits[int(n * 0.99)] * 1000
            cpu = sum(t.cpu for t in done) / n * 1e6
            commits = sum(t.commits for t in done) / n * 1000
            figures[name] = (p50, p99, cpu, commits)
            print(
                f"{name} × {threads} threads: write p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
                f"CPU {cpu:5.0f} µs/entry  {commits:6.1f} commits/1000 entries",
                flush=True,
            )
        s, q, b = figures["spool"], figures["queue"], figures["spool-no-room"]
        print(
            f"spool / queue × {threads} threads: p50 {s[0] / q[0]:.2f}  p99 {s[1] / q[1]:.2f}  "
            f"CPU {s[2] / q[2]:.2f}  commits {s[3] / q[3]:.3f}"
        )
        print(
            f"spool / spool without room × {threads} threads: p50 {s[0] / b[0]:.2f}  "
            f"p99 {s[1] / b[1]:.2f}  CPU {s[2] / b[2]:.2f}"
        )


if __name__ == "__main__":
    main()
