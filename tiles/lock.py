"""A lock per metatile that holds across threads and processes (flock on a lock file).

flock locks belong to an open file description, so two threads that each open the lock
file exclude each other just as two gunicorn workers do.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
