"""A lock per metatile that holds across threads and processes (flock on a lock file), or
across machines (a Redis lock), behind one `hold()`.

flock locks belong to an open file description, so two threads that each open the lock
file exclude each other just as two gunicorn workers do.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mapserver.settings import Settings

log = logging.getLogger("citygrid.tiles")


class MetatileLocks:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, product: str, z: int, mx: int, my: int) -> Path:
        return self.root / product / str(z) / f"{mx}-{my}.lock"

    @contextmanager
    def hold(self, product: str, z: int, mx: int, my: int) -> Iterator[None]:
        """Block until this metatile is ours; release on exit, even on error."""
        path = self.path(product, z, mx, my)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the description releases the lock


class RedisMetatileLocks:
    """The same lock held in Redis, so render workers on several machines exclude each other.

    A lock expires after `ttl` seconds unless its holder renews it (every third of `ttl`, from
    a thread, while the render runs), so a holder that died frees it within `ttl`; it is
    released only by the token that took it (redis-py's Lock: SET NX PX, then a Lua
    compare-and-delete).
    """

    def __init__(self, url: str, namespace: str, ttl: float = 300.0):
        import redis

        self.redis = redis.Redis.from_url(url)
        self.namespace = namespace
        self.ttl = ttl

    def key(self, product: str, z: int, mx: int, my: int) -> str:
        return f"citygrid:metatile:{self.namespace}:{product}/{z}/{mx}-{my}"

    @contextmanager
    def hold(self, product: str, z: int, mx: int, my: int) -> Iterator[None]:
        """Block until this metatile is ours; release on exit, even on error."""
        from redis.exceptions import LockNotOwnedError

        lock = self.redis.lock(
            self.key(product, z, mx, my), timeout=self.ttl, sleep=0.02, thread_local=False
        )
        lock.acquire(blocking=True)
        done = threading.Event()
        renew = threading.Thread(target=_renew, args=(lock, self.ttl / 3, done), daemon=True)
        renew.start()
        try:
            yield
        finally:
            done.set()
            renew.join()
            try:
                lock.release()
            except LockNotOwnedError:  # expired while held: another holder may have it now
                log.warning("metatile lock %s expired before release", lock.name)


def _renew(lock: Any, every: float, done: threading.Event) -> None:
    from redis.exceptions import LockError, RedisError

    while not done.wait(every):
        try:
            lock.reacquire()  # back to the full ttl
        except (LockError, RedisError) as exc:
            log.warning("metatile lock %s not renewed: %s", lock.name, exc)
            return


Locks = MetatileLocks | RedisMetatileLocks


def metatile_locks(settings: Settings) -> Locks:
    """The install's metatile locks: lock files on this machine, or Redis (`tile_locks`)."""
    if settings.tile_locks == "redis":
        return RedisMetatileLocks(
            settings.redis_url, settings.district_code, settings.tile_lock_seconds
        )
    return MetatileLocks(Path(settings.data_dir) / "locks")
