"""Seeding over the render queue: 1 and 2 render-worker processes against the in-process
seed (tiles.seed, 1 process) on the same area, in one run.

Each run starts from an empty cache of its own. The queue is timed two ways for N = 1, 2:

- running workers, as deployed (`citygrid-render-worker.service` keeps them up):
  `citygrid render-worker --processes N` is started and has registered its N workers with
  RQ before the seed enqueues; timed from the enqueue until every job has finished;
- a burst: the seed enqueues, then `citygrid render-worker --processes N --burst` starts and
  the time runs until every job has finished, so the workers' start-up (Python, Mapnik,
  a map each) is counted.

Printed: metatiles/s of each run, the 2-worker/1-worker ratios (target ≥ 0.9 × 2 on 2 free
cores), queue/in-process for 1 worker, and the workers' CPU seconds per metatile with 1 and 2
workers: a ratio that does not depend on other load, where wall time on a shared machine does.

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
import signal
import subprocess
import tempfile
import time
import uuid

from redis import Redis
from rq import Worker

from mapserver.settings import Settings
from tiles import render_queue
from tiles.seed import enqueue_seed, parse_levels, seed

# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
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


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RENDER_QUEUE": settings.render_queue,
        "CITYGRID_TILE_LOCKS": "redis",
        "CITYGRID_REDIS_URL": settings.redis_url,
    }


WORKER = [sys.executable, "-m", "mapserver.cli", "render-worker"]


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the live processes `pids` have used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def children_of(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


class Run:
    """Metatiles, wall seconds and the workers' CPU seconds of one queue run, and how busy
    the whole machine was meanwhile."""

    def __init__(self) -> None:
        self.busy0, self.total0 = machine_busy()
        self.t0 = time.perf_counter()

    def done(self, metatiles: int, cpu: float) -> tuple[int, float, float]:
        seconds = time.perf_counter() - self.t0
        busy1, total1 = machine_busy()
        print(
            f"  whole machine busy during the run: "
            f"{(busy1 - self.busy0) / (total1 - self.total0):.0%} of {os.cpu_count()} cores "
            f"(workers, PostgreSQL, Redis and anything else)"
        )
        return metatiles, seconds, cpu


def burst_run(settings: Settings, levels: list[int], processes: int) -> tuple[int, float, float]:
    """The seed enqueues, then `render-worker --burst` starts: its start-up is counted."""
    run, cpu0 = Run(), children_cpu()
    done = enqueue_seed(settings, "topo500", levels, None)
    cmd = [*WORKER, "--burst", "--processes", str(processes)]
    proc = subprocess.run(cmd, env=worker_env(settings), check=False)
    counts = render_queue.wait(render_queue.queue_of(settings), done.job_ids, timeout=60)
    if proc.returncode or counts.get("finished") != len(done.job_ids):
        raise SystemExit(f"render workers failed: exit {proc.returncode}, {counts}")
    return run.done(len(done.job_ids), children_cpu() - cpu0)


def running_run(settings: Settings, levels: list[int], processes: int) -> tuple[int, float, float]:
    """`render-worker` runs and its workers have registered before the seed enqueues."""
    queue = render_queue.queue_of(settings)
    cmd = [*WORKER, "--processes", str(processes)]
    proc = subprocess.Popen(cmd, env=worker_env(settings))
    try:
        deadline = time.monotonic() + 60
        while Worker.count(queue=queue) < processes:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"render workers did not start: exit {proc.returncode}")
            time.sleep(0.05)
        pids = children_of(proc.pid)
        run, cpu0 = Run(), process_cpu(pids)
        done = enqueue_seed(settings, "topo500", levels, None)
        counts = render_queue.wait(queue, done.job_ids, timeout=120, poll=0.05)
        cpu = process_cpu(pids) - cpu0
        if counts.get("finished") != len(done.job_ids):
            raise SystemExit(f"render workers failed: {counts}")
        return run.done(len(done.job_ids), cpu)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


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
        rates: dict[tuple[str, int], float] = {}
        cpu_per: dict[tuple[str, int], float] = {}
        for kind, timed in (("running", running_run), ("burst", burst_run)):
            for processes in (1, 2):
                s = dataclasses.replace(
                    base,
                    data_dir=scratch / f"{kind}{processes}",
                    render_queue=name,
                    tile_locks="redis",
                )
                n, seconds, cpu = timed(s, levels, processes)
                rates[kind, processes] = n / seconds
                cpu_per[kind, processes] = cpu / n
                print(
                    f"queue, {kind}, {processes} worker(s): {n} metatiles in {seconds:.1f} s, "
                    f"workers' CPU {cpu:.1f} s ({cpu / n * 1000:.0f} ms per metatile)"
                )
        print(f"in-process seed, 1 process: {n_in} metatiles in {s_in:.1f} s")
        print(
            f"metatiles/s: in-process {n_in / s_in:.2f}, "
            + ", ".join(f"{kind}×{p} {rate:.2f}" for (kind, p), rate in rates.items())
        )
        print(f"queue (running)×1 / in-process: {rates['running', 1] / (n_in / s_in):.2f}")
        for kind, what in (("running", "workers already running"), ("burst", "start-up counted")):
            print(
                f"queue×2 / queue×1, {what}: {rates[kind, 2] / rates[kind, 1]:.2f} "
                f"(target ≥ 1.8 on 2 free cores; cores here: {os.cpu_count()}, "
                f"load {os.getloadavg()[0]:.1f})"
            )
        # Wall time needs idle cores; the CPU a metatile costs does not. Equal CPU per
        # metatile with 1 and 2 workers means the queue adds no work per worker, so N
        # workers on N free cores give N × one worker's rate (PostgreSQL's share aside).
        print(
            f"CPU per metatile, 2 workers / 1 worker, workers running: "
            f"{cpu_per['running', 2] / cpu_per['running', 1]:.2f} "
            f"(1.00 = no overhead from spreading; ≤ 1.11 keeps ≥ 0.9 × N on free cores)"
        )
    finally:
        conn = Redis.from_url(base.redis_url)
        for key in conn.scan_iter(f"rq:*{name}*"):
            conn.delete(key)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
