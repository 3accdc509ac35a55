"""`citygrid render-worker --processes N`: N render-worker processes on this machine.

Each process is one RQ worker (tiles.render_queue.work) with its own Mapnik map and database
connection. SIGTERM or SIGINT asks each to finish its metatile and stop.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from types import FrameType

from mapserver.settings import Settings


def _one(settings: Settings, burst: bool, dead_after: float) -> None:
    import psycopg
    from redis.exceptions import RedisError

    from mapserver.errors import CityGridError, NotUpgraded
    from tiles.render_queue import work

    try:
        work(settings, burst, dead_after)
    except CityGridError as exc:
        _fail(exc.message)
    except NotUpgraded.causes() as exc:
        _fail(NotUpgraded(exc).message)
    except (RedisError, psycopg.OperationalError) as exc:  # one line, not a traceback
        _fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _fail(message: str) -> None:
    print(f"citygrid: error: render-worker: {message}", file=sys.stderr)
    sys.exit(1)


def run(settings: Settings, processes: int, burst: bool, dead_after: float) -> int:
    """Run the workers until they stop; 1 if any of them failed, else 0."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_one, args=(settings, burst, dead_after), name=f"render-{i}")
        for i in range(processes)
    ]

    def stop(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()  # RQ's warm shutdown: the current job finishes first

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return 1 if any(p.exitcode for p in procs) else 0
