"""Seeding and re-rendering as RQ jobs over Redis: render workers in their own processes,
one of them killed mid-work, Redis metatile locks, and re-renders enqueued by tile expiry."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job as RqJob
from rq.registry import StartedJobRegistry

from mapserver.settings import Settings
from tiles import render_queue
from tiles.cache import DiskCache
from tiles.lock import RedisMetatileLocks
from tiles.seed import Job as SeedJob
from tiles.seed import enqueue_seed, plan, seed
from tiles.service import TileService
from tiles.tile_grid import BBox

from .conftest import first_street_box

PRODUCT, LEVELS = "topo500", [7, 8]


def _digest(root: Path) -> dict[str, str]:
    """Every tile file under `root` (relative path) with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in DiskCache(root).files()
        if p.suffix == ".png"
    }


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RENDER_QUEUE": settings.render_queue,
        "CITYGRID_TILE_LOCKS": settings.tile_locks,
        "CITYGRID_TILE_LOCK_SECONDS": str(settings.tile_lock_seconds),
        "CITYGRID_REDIS_URL": settings.redis_url,
    }


def _worker(settings: Settings, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mapserver.cli", "render-worker", "--dead-after", "2", *extra]
    return subprocess.Popen(
        cmd,
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the worker and its render process (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _children(proc: subprocess.Popen[bytes]) -> set[int]:
    """The processes `render-worker` started (its render process, multiprocessing's helper)."""
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _group_gone(pgid: int, timeout: float = 10) -> None:
    """Wait until no live process of group `pgid` is left. SIGKILL takes effect when a process
    next leaves the kernel: one in the middle of writing a tile finishes that write first."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(group) == pgid and state != "Z":
                alive.append(stat.parent.name)
        if not alive:
            return
        assert time.monotonic() < deadline, f"still alive after SIGKILL: {alive}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def area(demo_settings: Settings) -> BBox:
    """One street of the demo district: a few dozen metatiles over levels 7-8."""
    return first_street_box(demo_settings.database_url)


@pytest.fixture(scope="module")
def reference(
    demo_settings: Settings, area: BBox, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """What the in-process seed renders for the area."""
    settings = dataclasses.replace(demo_settings, data_dir=tmp_path_factory.mktemp("inproc"))
    seed(settings, PRODUCT, LEVELS, area, workers=2, progress=False)
    return _digest(settings.tile_dir)


@pytest.fixture(scope="module")
def queued(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo database with a cache, a render queue and Redis locks of its own."""
    name = f"citygrid-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    settings = dataclasses.replace(
        demo_settings,
        data_dir=tmp_path_factory.mktemp("queued"),
        render_queue=name,
        tile_locks="redis",
        tile_lock_seconds=3.0,  # a dead worker's metatile lock frees within 3 s
    )
    yield settings
    conn = Redis.from_url(settings.redis_url)
    for key in conn.scan_iter(f"rq:*{name}*"):
        conn.delete(key)


def test_a_killed_worker_loses_no_metatile(
    queued: Settings, area: BBox, reference: dict[str, str]
) -> None:
    done = enqueue_seed(queued, PRODUCT, LEVELS, area)
    assert done.skipped == 0 and len(done.job_ids) >= 6
    queue = render_queue.queue_of(queued)
    victim, survivor = _worker(queued, "--processes", "1"), _worker(queued, "--processes", "1")
    try:
        started = StartedJobRegistry(queue.name, connection=queue.connection)
        svc = TileService.for_cache(queued)
        jobs = plan(TileService.from_settings(queued), PRODUCT, LEVELS, area)
        killed_job = None
        deadline = time.monotonic() + 120
        while killed_job is None and time.monotonic() < deadline:
            rendered = sum(svc.metatile_fresh(*j) for j in jobs)
            for member in queue.connection.zrange(started.key, 0, -1):
                execution = Execution.from_composite_key(member.decode(), queue.connection)
                try:
                    execution.refresh()
                except ValueError:  # finished meanwhile
                    continue
                pid = int(execution.worker_name.split(".")[-2])
                if pid in _children(victim) and rendered >= 1:
                    killed_job = execution.job_id
            assert victim.poll() is None and survivor.poll() is None
            time.sleep(0.01)
        assert killed_job is not None, "the victim never took a job"
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        _group_gone(victim.pid)  # its render process too, with any write it was in
        # The kill can land in the instant between the job's last tile and its end: then
        # there is nothing left to re-render, and only the cache comparison below applies.
        cut_short = not svc.metatile_fresh(*RqJob.fetch(killed_job, queue.connection).args)

        try:
            counts = render_queue.wait(queue, done.job_ids, timeout=120)
        except TimeoutError:
            c = queue.connection
            for j in RqJob.fetch_many(done.job_ids, connection=c):
                if j and j.get_status() not in ("finished",):
                    print("render queue: job", j.id, j.get_status(), j.retries_left)
            print("render queue: started", c.zrange(started.key, 0, -1, withscores=True))
            print("render queue: inter", c.lrange(queue.key + ":intermediate", 0, -1), len(queue))
            print("render queue: alive", list(c.scan_iter("citygrid:render-worker:alive:*")))
            _stop(survivor)
            print("render queue: err", survivor.stderr.read()[-3000:] if survivor.stderr else "")
            raise
        assert counts == {"finished": len(done.job_ids)}
        job = RqJob.fetch(killed_job, connection=queue.connection)
        if cut_short:
            assert job.retries_left == render_queue.RETRIES - 1  # re-queued once, then done
            # Rendered by the survivor after the kill. Once (under the whole suite's load) the
            # last result was False, a run that found the metatile fresh: each run's result
            # and worker, to tell which ran it when.
            runs = [(r.type.name, r.return_value, r.created_at) for r in job.results()]
            assert job.return_value() is True, (runs, job.worker_name, killed_job)
    finally:
        _stop(victim)
        _stop(survivor)
    assert _digest(queued.tile_dir) == reference


def test_expiry_enqueues_the_rerenders(
    queued: Settings, area: BBox, reference: dict[str, str]
) -> None:
    seed(queued, PRODUCT, LEVELS, area, workers=1, progress=False)  # whatever is missing
    queue = render_queue.queue_of(queued)
    queue.empty()
    svc = TileService.for_cache(queued)
    assert svc.expired is not None
    x0, y0, x1, y1 = area
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    square = BBox(cx - 20, cy - 20, cx + 20, cy + 20)
    dropped = svc.invalidate(square)
    assert dropped > 0
    jobs = [RqJob.fetch(i, connection=queue.connection) for i in queue.job_ids]
    expected = {
        (PRODUCT, z, mx, my)
        for z in LEVELS
        for mx, my in svc.grid.metatiles(svc.grid.tile_range(z, square), svc.metatile)
    }
    assert sorted(tuple(job.args) for job in jobs) == sorted(expected)
    for job in jobs:
        assert not svc.metatile_fresh(*job.args)
    worker = _worker(queued, "--burst")
    try:
        assert worker.wait(timeout=120) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        _stop(worker)
    assert all(svc.metatile_fresh(*job.args) for job in jobs)
    assert _digest(queued.tile_dir) == reference


def test_redis_locks_exclude_expire_and_check_the_token(queued: Settings) -> None:
    locks = RedisMetatileLocks(queued.redis_url, f"test-{uuid.uuid4().hex}", ttl=0.5)
    inside = 0
    most = 0
    guard = threading.Lock()

    def take() -> None:
        nonlocal inside, most
        for _ in range(5):
            with locks.hold("topo500", 8, 1, 2):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.002)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1

    # A holder that died frees the lock when it expires; its late release is refused.
    dead = locks.redis.lock(locks.key("topo500", 8, 3, 4), timeout=0.3)
    assert dead.acquire(blocking=False)
    t0 = time.monotonic()
    with locks.hold("topo500", 8, 3, 4):
        assert time.monotonic() - t0 >= 0.2
        from redis.exceptions import LockNotOwnedError

        with pytest.raises(LockNotOwnedError):
            dead.release()
        assert locks.redis.exists(locks.key("topo500", 8, 3, 4))
    assert not locks.redis.exists(locks.key("topo500", 8, 3, 4))


def test_an_import_expires_and_enqueues(
    queued: Settings, area: BBox, reference: dict[str, str], tmp_path: Path
) -> None:
    import json

    from click.testing import CliRunner

    from mapserver.cli import main

    seed(queued, PRODUCT, LEVELS, area, workers=1, progress=False)
    queue = render_queue.queue_of(queued)
    queue.empty()
    svc = TileService.for_cache(queued)
    cached = set(plan(TileService.from_settings(queued), PRODUCT, LEVELS, area))
    x, y = area.maxx + 400, (area.miny + area.maxy) / 2  # beside the seeded street, not on it
    src = tmp_path / "label.geojson"
    src.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [x, y]},
                        "properties": {"text": "试验"},
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in _env(queued).items() if k.startswith("CITYGRID_")}
    cmd = ["import", str(src), "--as", "annotations", "--scale", "500"]
    done = CliRunner().invoke(main, [*cmd, "--s-srs", f"EPSG:{queued.srid}"], env=env)
    try:
        assert done.exit_code == 0, done.output
        _expect_rerenders(queued, svc, queue, cached)
    finally:  # the demo database is shared with other test modules
        import psycopg

        with psycopg.connect(queued.database_url) as conn:
            conn.execute("DELETE FROM annotation WHERE text = '试验'")
    worker = _worker(queued, "--burst")
    try:
        assert worker.wait(timeout=120) == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        _stop(worker)
    assert _digest(queued.tile_dir) == reference


def _expect_rerenders(
    queued: Settings, svc: TileService, queue: Queue, cached: set[SeedJob]
) -> None:
    """The queue holds a re-render of each seeded metatile the import's extent reaches."""
    jobs = {tuple(RqJob.fetch(i, connection=queue.connection).args) for i in queue.job_ids}
    import psycopg

    with psycopg.connect(queued.database_url) as conn:
        row = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(geom) AS e FROM annotation) s"
        ).fetchone()
    assert row is not None
    extent = BBox(*row)
    under = {
        (PRODUCT, z, mx, my)
        for z in LEVELS
        for mx, my in svc.grid.metatiles(svc.grid.tile_range(z, extent), svc.metatile)
    }
    expected = {tuple(j) for j in cached} & under  # the seeded metatiles the import reaches
    assert expected and jobs == expected
    assert not any(svc.metatile_fresh(*j) for j in jobs)
