"""Rendering ahead of time: every metatile of an area and levels, on all cores.

Finished metatiles are skipped, so a seed that was stopped picks up where it left off.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from typing import NamedTuple

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mapserver.errors import InvalidInput
from mapserver.settings import Settings
from tiles.service import TileService
from tiles.tile_grid import BBox


class Job(NamedTuple):
    product: str
    z: int
    mx: int
    my: int


class SeedResult(NamedTuple):
    rendered: int
    skipped: int
    seconds: float


def parse_levels(text: str) -> list[int]:
    """'7-8', '3,5,7' or '8'."""
    levels: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"([0-9]{1,2})(?:-([0-9]{1,2}))?", part)
        if not m:
            raise InvalidInput(f"--levels {text!r}: use e.g. 7-8 or 3,5,7")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo > hi:
            raise InvalidInput(f"--levels {text!r}: {lo} > {hi}")
        levels.update(range(lo, hi + 1))
    return sorted(levels)


def plan(svc: TileService, product: str, levels: list[int], area: BBox | None) -> list[Job]:
    """The metatiles to seed: those of the served range that meet the area. Nothing to
    seed is an error that says why (no district, a level the map lacks, an area outside)."""
    prod = svc.product(product)
    if svc.extent is None:
        raise InvalidInput(
            "nothing to seed: the install has no district yet (citygrid import FILE --as district)"
        )
    jobs = []
    for z in levels:
        served = svc.served_range(prod, z)
        if served is None:
            at = [lv.z for lv in svc.grid.levels if lv.scale in prod.scales]
            if z not in at:
                raise InvalidInput(
                    f"map {product} has no level {z} (its levels: {at[0]}-{at[-1]};"
                    " citygrid tiles levels lists them)"
                )
            raise InvalidInput(
                f"nothing to seed at level {z}: the district lies outside the install's tile"
                " matrix (citygrid config check)"
            )
        rng = served
        if area is not None:
            wanted = svc.grid.tile_range(z, area)
            rng = rng._replace(
                x0=max(rng.x0, wanted.x0),
                y0=max(rng.y0, wanted.y0),
                x1=min(rng.x1, wanted.x1),
                y1=min(rng.y1, wanted.y1),
            )
            if not rng.n_tiles:
                continue
        jobs += [Job(product, z, mx, my) for mx, my in svc.grid.metatiles(rng, svc.metatile)]
    if not jobs:
        raise InvalidInput(
            f"nothing to seed: the area lies outside the district's map {product}"
            f" at level(s) {', '.join(map(str, levels))}"
        )
    return jobs


_worker_service: TileService | None = None


def _init_worker(settings: Settings) -> None:
    global _worker_service
    _worker_service = TileService.from_settings(settings)


def _run(job: Job) -> bool:
    """Render one metatile unless it is already fresh; True when it rendered."""
    svc = _worker_service
    assert svc is not None
    if svc.metatile_fresh(*job):
        return False
    with svc.locks.hold(*job):
        if svc.metatile_fresh(*job):
            return False
        svc.render(*job)
    return True


def seed(
    settings: Settings,
    product: str,
    levels: list[int],
    area: BBox | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> SeedResult:
    started = time.perf_counter()
    svc = TileService.from_settings(settings)
    jobs = plan(svc, product, levels, area)
    todo = [j for j in jobs if not svc.metatile_fresh(*j)]
    skipped = len(jobs) - len(todo)
    workers = max(1, workers or os.cpu_count() or 1)
    rendered = 0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"seed {product} {levels[0]}–{levels[-1]}", total=len(todo))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(settings,)) as pool:
            for did in pool.imap_unordered(_run, todo, chunksize=1):
                rendered += int(did)
                skipped += int(not did)
                bar.advance(task)
    return SeedResult(rendered, skipped, time.perf_counter() - started)


class Enqueued(NamedTuple):
    queue: str
    job_ids: list[str]
    skipped: int


def enqueue_seed(
    settings: Settings, product: str, levels: list[int], area: BBox | None = None
) -> Enqueued:
    """Like `seed`, but each metatile that is not fresh becomes a job on the render queue
    for `citygrid render-worker` processes, on this machine or any sharing the cache."""
    from tiles import render_queue

    svc = TileService.from_settings(settings)
    jobs = plan(svc, product, levels, area)
    todo = [j for j in jobs if not svc.metatile_fresh(*j)]
    queue = render_queue.queue_of(settings)
    ids = render_queue.enqueue(queue, (render_queue.Metatile(*j) for j in todo))
    return Enqueued(queue.name, ids, len(jobs) - len(todo))
