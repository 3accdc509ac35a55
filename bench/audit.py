"""The audit log as tiles: proof latency at 10^4 and 10^6 entries (ratio ≤ 2), append
throughput with tiles written, and `audit verify` time per 10^6 entries.

The log is generated with the real writer (audit.record.append, tiles included, checkpoints
every 1000 entries) in batches of --batch entries per transaction, in-process: no HTTP.

Usage: python bench/audit.py [--entries 1000000] [--batch 1000] [--proofs 300]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import random
import statistics
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

from audit import review
from audit.keys import signer, verifier
from audit.record import Entry, append, checkpoint_now
from audit.verify import verify
from mapserver import db, migrate
from mapserver.settings import Settings, load


def _grow(settings: Settings, start: int, stop: int, batch: int) -> float:
    """Append entries start..stop with the real writer; returns the seconds it took."""
    key = signer(settings.pki_dir)
    began = time.perf_counter()
    with db.connect(settings) as conn:
        done = start
        while done < stop:
            k = min(batch, stop - done)
            entries = [
                Entry(
                    action="tiles.read",
                    account=f"user{(done + i) % 97}",
                    client_addr="10.0.0.1",
                    resource=f"tile topo500/8/{done + i}/1",
                    status=200,
                    latency_ms=1.5,
                )
                for i in range(k)
            ]
            with conn.transaction():
                append(conn, entries, key, every=1000, seconds=3600)
            done += k
        with conn.transaction():
            checkpoint_now(conn, key)
    return time.perf_counter() - began


def _proof_ms(settings: Settings, size: int, count: int) -> tuple[float, float]:
    """Median and 95th percentile of an inclusion proof plus a consistency proof, in ms."""
    rnd = random.Random(size)
    times = []
    with db.connect(settings) as conn:
        sizes = [s for (s,) in conn.execute("SELECT size FROM audit_checkpoint ORDER BY size")]
        for _ in range(count):
            began = time.perf_counter()
            review.inclusion(conn, rnd.randrange(size))
            review.consistency(conn, rnd.choice(sizes[:-1]), sizes[-1])
            times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


def _interleaved_ms(settings: Settings, sizes: list[int], count: int) -> dict[int, float]:
    """Median ms of an inclusion plus a consistency proof into the checkpoint at each size,
    all on the grown log and taken in turns, so that machine load falls on all sizes alike."""
    from audit import tiles

    rnd = random.Random(1)
    times: dict[int, list[float]] = {s: [] for s in sizes}
    with db.connect(settings) as conn:
        points = [s for (s,) in conn.execute("SELECT size FROM audit_checkpoint ORDER BY size")]
        for _ in range(count):
            for size in sizes:
                index, old = rnd.randrange(size), rnd.choice([p for p in points if p < size])
                began = time.perf_counter()
                conn.execute("SELECT root FROM audit_checkpoint WHERE size = %s", (size,))
                plan = tiles.needed(
                    lambda r, i=index, o=old, n=size: (
                        tiles.inclusion_proof(i, n, r),
                        tiles.consistency_proof(o, n, r),
                    )
                )
                read = review.tile_reader(conn, plan)
                tiles.inclusion_proof(index, size, read)
                tiles.consistency_proof(old, size, read)
                times[size].append((time.perf_counter() - began) * 1000)
    return {s: statistics.median(t) for s, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--proofs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = load()
        url = urlunsplit(urlsplit(base.database_url)._replace(path="/citygrid_bench_audit"))
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
    marks = [m for m in (10_000, 100_000, 1_000_000) if m < args.entries] + [args.entries]
    size, total_s, latency = 0, 0.0, {}
    print(f"generating {args.entries} entries with the real writer, {args.batch} per transaction")
    for mark in marks:
        seconds = _grow(settings, size, mark, args.batch)
        total_s += seconds
        print(
            f"  {size:>9} → {mark:>9}: {seconds:7.1f} s, "
            f"{(mark - size) / seconds:8.0f} entries/s appended (tiles written)"
        )
        size = mark
        with db.connect(settings) as conn:
            size = int(conn.execute("SELECT size FROM audit_tree").fetchone()[0])  # type: ignore[index]
        latency[mark] = _proof_ms(settings, size, args.proofs)
        median, p95 = latency[mark]
        print(f"  proofs at {size:>9}: median {median:6.2f} ms, p95 {p95:6.2f} ms")
    print(f"generation: {total_s:.1f} s for {size} entries ({size / total_s:.0f} entries/s)")
    first, last = marks[0], marks[-1]
    ratio = latency[last][0] / latency[first][0]
    print(f"proof latency ratio {last} / {first} entries, as grown: {ratio:.2f} (goal ≤ 2)")
    turns = _interleaved_ms(settings, marks, args.proofs)
    print(
        "taken in turns on the grown log: "
        + ", ".join(f"{s}: {ms:.2f} ms" for s, ms in turns.items())
        + f"; ratio {turns[last] / turns[first]:.2f}"
    )
    began = time.perf_counter()
    with db.connect(settings) as conn:
        report = verify(conn, verifier(settings.pki_dir))
    seconds = time.perf_counter() - began
    assert report.ok, report.problem
    print(
        f"audit verify: {seconds:.1f} s for {report.entries} entries and "
        f"{report.checkpoints} checkpoints = {seconds * 1e6 / report.entries:.1f} s per 10^6"
    )


if __name__ == "__main__":
    main()
