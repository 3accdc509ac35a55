"""Seeding and re-rendering as jobs on an RQ queue over Redis, for render workers on any
number of machines that share the tile cache.

A job is one metatile: (product, z, mx, my). It renders under the metatile lock and only
when the metatile is not fresh, so a job run twice (a retry, a duplicate from two edits)
costs a cache check, never a different picture.

A worker that dies mid-job leaves its job in RQ's StartedJobRegistry. RQ itself treats it as
abandoned once its execution heartbeat runs out (job timeout + 60 s) and retries it (jobs are
enqueued with a `Retry`). Render workers find the dead sooner: each keeps a liveness key in
Redis (expiring after `dead_after` seconds, renewed every `dead_after / 5`), and each looks
through the started jobs for executions whose worker's key has gone, and hands those to
RQ's own abandoned-job handling at once; a job taken off the queue by a worker that died
before starting it is failed into its retry after `dead_after` too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, cast

from redis import Redis
from rq import Queue, Retry, SimpleWorker
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.utils import now

from mapserver.settings import Settings
from tiles.service import TileService

log = logging.getLogger("citygrid.render")

DEFAULT_QUEUE = "citygrid-render"
JOB_TIMEOUT = 600  # seconds one metatile may take before RQ stops it
RETRIES = 3  # a metatile whose worker died this many times goes to the failed registry
_ALIVE = "citygrid:render-worker:alive:"


class Metatile(NamedTuple):
    product: str
    z: int
    mx: int
    my: int


def queue_name(settings: Settings) -> str:
    return settings.render_queue or DEFAULT_QUEUE


def connect(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url)


def queue_of(settings: Settings, connection: Redis | None = None) -> Queue:
    return Queue(queue_name(settings), connection=connection or connect(settings))


def enqueue(queue: Queue, metatiles: Iterable[Metatile]) -> list[str]:
    """One job per metatile, in order; returns the job ids."""
    retry = Retry(max=RETRIES)
    ids = []
    with queue.connection.pipeline() as pipe:
        for m in metatiles:
            job = queue.enqueue_call(
                render_metatile,
                args=tuple(m),
                timeout=JOB_TIMEOUT,
                result_ttl=3600,
                failure_ttl=7 * 86400,
                retry=retry,
                description=f"render {m.product} {m.z}/{m.mx}-{m.my}",
                pipeline=pipe,
            )
            ids.append(job.id)
        pipe.execute()
    return ids


def wait(queue: Queue, ids: Sequence[str], timeout: float, poll: float = 0.1) -> dict[str, int]:
    """Wait until every job has finished or failed for good; counts by final status. Each
    poll reads only the status field of the jobs still pending, in one round trip."""
    deadline = time.monotonic() + timeout
    pending = list(ids)
    counts: dict[str, int] = {}
    final = {JobStatus.FINISHED.value, JobStatus.FAILED.value}
    while pending:
        with queue.connection.pipeline(transaction=False) as pipe:
            for job_id in pending:
                pipe.hget(RqJob.key_for(job_id), "status")
            statuses = pipe.execute()
        still = []
        for job_id, raw in zip(pending, statuses, strict=True):
            status = raw.decode() if raw is not None else "gone"  # no hash: expired or deleted
            if status in final or status == "gone":
                counts[status] = counts.get(status, 0) + 1
            else:
                still.append(job_id)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} render job(s) not done in {timeout:.0f} s")
            time.sleep(poll)
    return counts


# -- the job (runs in a render worker)

_service: TileService | None = None


def render_metatile(product: str, z: int, mx: int, my: int) -> bool:
    """Render one metatile unless it is fresh; True when it rendered."""
    svc = _service
    if svc is None:
        raise RuntimeError("render jobs run in `citygrid render-worker`")
    if svc.metatile_fresh(product, z, mx, my):
        return False
    with svc.locks.hold(product, z, mx, my):
        if svc.metatile_fresh(product, z, mx, my):
            return False
        svc.render(product, z, mx, my)
    return True


# -- the worker


def _reap(queue: Queue, me: str) -> int:
    """Hand the started jobs of workers whose liveness key has gone to RQ's abandoned-job
    handling (retry, or the failed registry when out of retries); returns how many."""
    registry = StartedJobRegistry(queue.name, connection=queue.connection)
    conn = queue.connection
    dead = []
    for raw in cast(list[bytes], conn.zrange(registry.key, 0, -1)):
        member = raw.decode()
        execution = Execution.from_composite_key(member, conn)
        try:
            execution.refresh()  # the worker's name is in the execution's hash
        except ValueError:  # the hash is gone: RQ's own cleanup will see to the entry
            continue
        worker = execution.worker_name
        if worker and worker != me and not conn.exists(_ALIVE + worker):
            dead.append(member)
    if not dead:
        return 0
    conn.zadd(registry.key, dict.fromkeys(dead, 0), xx=True)
    registry.cleanup(timestamp=1)  # exactly the entries just marked (score 0)
    log.warning("re-queued %d render job(s) of dead workers", len(dead))
    return len(dead)


def _unstick(queue: Queue, worker: SimpleWorker, dead_after: float) -> int:
    """A job a worker took off the queue (into RQ's intermediate list) but died before
    starting stays there; RQ fails it (and so retries it) after a minute at its next
    maintenance. Do the same after `dead_after`; returns how many."""
    stuck = IntermediateQueue(queue.key, queue.connection)
    n = 0
    for job_id in stuck.get_job_ids():
        if job_id in queue.started_job_registry or stuck.set_first_seen(job_id):
            continue
        first = stuck.get_first_seen(job_id)
        if first is None or (now() - first).total_seconds() < dead_after:
            continue
        job = queue.fetch_job(job_id)
        if job is not None:
            worker.handle_job_failure(job, queue, exc_string="its worker died before starting")
        stuck.remove(job_id)
        n += 1
    return n


def _watch(queue: Queue, worker: SimpleWorker, dead_after: float, stop: threading.Event) -> None:
    conn = queue.connection
    beat = max(dead_after / 5, 0.2)
    while not stop.is_set():
        try:
            conn.set(_ALIVE + worker.name, b"1", px=int(dead_after * 1000))
            _reap(queue, worker.name)
            _unstick(queue, worker, dead_after)
        except Exception as exc:  # Redis away: the worker's own loop reports it
            log.warning("render worker watch: %s", type(exc).__name__)
        stop.wait(beat)


def work(settings: Settings, burst: bool = False, dead_after: float = 15.0) -> None:
    """Consume render jobs in this process until stopped (or, `burst`, the queue is empty)."""
    global _service
    _service = TileService.from_settings(settings)
    conn = connect(settings)
    queue = queue_of(settings, conn)
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    worker = SimpleWorker([queue], connection=conn, name=name)
    conn.set(_ALIVE + name, b"1", px=int(dead_after * 1000))
    watcher = threading.Thread(
        target=_watch, args=(queue, worker, dead_after, stop), name="render-watch", daemon=True
    )
    watcher.start()
    try:
        worker.work(burst=burst, logging_level="WARNING", with_scheduler=False)
    finally:
        stop.set()
        conn.delete(_ALIVE + name)


def rerender(settings: Settings) -> Callable[[list[tuple[str, int, int, int]]], None]:
    """What an invalidation calls with the metatiles it dropped tiles of: enqueue their
    re-render. The drop has happened already; if Redis is away the tiles render on demand."""
    from redis.exceptions import RedisError

    queue = queue_of(settings)

    def enqueue_dropped(metatiles: list[tuple[str, int, int, int]]) -> None:
        try:
            enqueue(queue, (Metatile(*m) for m in metatiles))
        except RedisError as exc:
            log.warning("re-render of %d metatile(s) not enqueued: %s", len(metatiles), exc)

    return enqueue_dropped
