"""The tiles a process read lately, held in memory and used again while their file is the
same: one `stat` instead of opening, reading the ETag attribute of, reading and closing the
file (five more system calls, which cost 20-60 µs each on a virtual machine; with them a
cached tile's file read was most of the renderer's answer, bench/zones.py).

"The same" is the same inode, size and modification time in nanoseconds: the cache replaces a
tile by renaming a new file over it (a new inode) and drops it by unlinking, so a changed
tile is never served from here. At most MOST_BYTES of tiles per process, the least recently
used leaving first.

A look-up that needs no bytes (behind nginx, which sends the file itself) holds the ETag
alone: the next such look-up of the file is one `stat` too, not an `open`, `fstat`,
`getxattr` and `close` (a twentieth of a gateway process's time behind nginx,
docs/performance.md). Each entry counts ENTRY_BYTES beside its bytes, so that ETags alone are
bounded as well.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

MOST_BYTES = 64 * 1024 * 1024
ENTRY_BYTES = 256  # an entry's own memory, counted beside its bytes


class Held(NamedTuple):
    version: tuple[int, int, int]  # (inode, size, mtime_ns) of the file the bytes came from
    etag: str
    data: bytes | None  # None: the ETag alone (no look-up has needed the bytes yet)
    path: Path  # the file's, made once: a Path costs 5-10 µs a look-up on a virtual machine

    @property
    def cost(self) -> int:
        return ENTRY_BYTES + len(self.data or b"")


def version(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Recent:
    def __init__(self, most_bytes: int = MOST_BYTES):
        self.most_bytes = most_bytes
        self.bytes = 0
        self._held: OrderedDict[str, Held] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, st: os.stat_result) -> Held | None:
        """The bytes held for `key` if they came from the file `st` describes."""
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return None
            if held.version != version(st):
                self.bytes -= held.cost
                del self._held[key]
                return None
            self._held.move_to_end(key)
            return held

    def put(self, key: str, st: os.stat_result, etag: str, data: bytes | None, path: Path) -> None:
        """Hold `etag` and `data` (None: the ETag alone) of the file `st` describes (`path`)."""
        held = Held(version(st), etag, data, path)
        if held.cost > self.most_bytes // 16:
            return
        with self._lock:
            old = self._held.pop(key, None)
            if old is not None:
                self.bytes -= old.cost
            self._held[key] = held
            self.bytes += held.cost
            while self.bytes > self.most_bytes:
                _, gone = self._held.popitem(last=False)
                self.bytes -= gone.cost
