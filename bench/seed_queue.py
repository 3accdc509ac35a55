"""Seeding over the render queue: 1 and 2 render-worker processes against the in-process
seed (tiles.seed, 1 process) on the same area, in one run.

Each run starts from an empty cache of its own; the queue runs enqueue every metatile, start
`citygrid render-worker --processes N --burst` and time until every job has finished (the
workers' start-up, a Mapnik map each, is counted). Printed: metatiles/s of each run, the
2-worker/1-worker ratio (target ≥ 0.9 × 2 on 2 free cores), queue/in-process for 1 worker,
and the workers' CPU seconds per metatile with 1 and 2 workers: a ratio that does not depend
on other load, where wall time on a shared machine does.

Usage: python bench/seed_queue.py [--area-km2 4] [--levels 8] [--street-count 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid

from redis import Redis

from mapserver.settings import Settings
from tiles import render_queue
from tiles.seed import enqueue_seed, parse_levels, seed

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiles_bench_support import bench_settings  # noqa: E402


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished, waited-for descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def queued_run(settings: Settings, levels: list[int], processes: int) -> tuple[int, float, float]:
    """Metatiles, wall seconds and the workers' CPU seconds of one queue run."""
    t0 = time.perf_counter()
    cpu0 = children_cpu()
    busy0, total0 = machine_busy()
    done = enqueue_seed(settings, "topo500", levels, None)
    env = {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RENDER_QUEUE": settings.render_queue,
        "CITYGRID_TILE_LOCKS": "redis",
        "CITYGRID_REDIS_URL": settings.redis_url,
    }
    cmd = [sys.executable, "-m", "mapserver.cli", "render-worker", "--burst"]
    proc = subprocess.run([*cmd, "--processes", str(processes)], env=env, check=False)
    queue = render_queue.queue_of(settings)
    counts = render_queue.wait(queue, done.job_ids, timeout=60)
    seconds = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    busy1, total1 = machine_busy()
    print(
        f"  whole machine busy during the run: {(busy1 - busy0) / (total1 - total0):.0%} "
        f"of {os.cpu_count()} cores (workers, PostgreSQL, Redis and anything else)"
    )
    if proc.returncode or counts.get("finished") != len(done.job_ids):
        raise SystemExit(f"render workers failed: exit {proc.returncode}, {counts}")
    return len(done.job_ids), seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=4.0)
    parser.add_argument("--levels", default="8")
    args = parser.parse_args()
    base = bench_settings(args.area_km2, "citygrid_bench_seedq")
    levels = parse_levels(args.levels)
    scratch = Path(tempfile.mkdtemp(prefix="citygrid-seedq-"))
    name = f"citygrid-bench-{uuid.uuid4().hex[:8]}"
    try:
        inproc = dataclasses.replace(base, data_dir=scratch / "inproc")
        r = seed(inproc, "topo500", levels, None, workers=1, progress=False)
        n_in, s_in = r.rendered, r.seconds
        rates, cpu_per = {}, {}
        for processes in (1, 2):
            s = dataclasses.replace(
                base, data_dir=scratch / f"q{processes}", render_queue=name, tile_locks="redis"
            )
            n, seconds, cpu = queued_run(s, levels, processes)
            rates[processes] = n / seconds
            cpu_per[processes] = cpu / n
            print(
                f"queue, {processes} worker(s): {n} metatiles in {seconds:.1f} s, "
                f"workers' CPU {cpu:.1f} s ({cpu / n * 1000:.0f} ms per metatile)"
            )
        print(f"in-process seed, 1 process: {n_in} metatiles in {s_in:.1f} s")
        print(
            f"metatiles/s: in-process {n_in / s_in:.2f}, queue×1 {rates[1]:.2f}, "
            f"queue×2 {rates[2]:.2f}"
        )
        print(f"queue×1 / in-process: {rates[1] / (n_in / s_in):.2f}")
        print(
            f"queue×2 / queue×1: {rates[2] / rates[1]:.2f} (target ≥ 1.8 on 2 free cores; "
            f"cores here: {os.cpu_count()}, load {os.getloadavg()[0]:.1f})"
        )
        # Wall time needs idle cores; the CPU a metatile costs does not. Equal CPU per
        # metatile with 1 and 2 workers means the queue adds no work per worker, so N
        # workers on N free cores give N × one worker's rate (PostgreSQL's share aside).
        print(
            f"CPU per metatile, 2 workers / 1 worker: {cpu_per[2] / cpu_per[1]:.2f} "
            f"(1.00 = no overhead from spreading; ≤ 1.11 keeps ≥ 0.9 × N on free cores)"
        )
    finally:
        conn = Redis.from_url(base.redis_url)
        for key in conn.scan_iter(f"rq:*{name}*"):
            conn.delete(key)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
