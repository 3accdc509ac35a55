"""The disk cache and the metatile lock, on a real file system."""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiles.cache import DiskCache
from tiles.lock import MetatileLocks
from tiles.recent import ENTRY_BYTES, Recent


def test_put_get_drop_round_trip(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "tiles")
    assert cache.get("topo500", 8, 3, 4) is None
    cache.put("topo500", 8, {(3, 4): b"a", (3, 5): b"b"})
    assert cache.get("topo500", 8, 3, 4) == b"a"
    assert sorted(cache.cached("topo500", 8)) == [(3, 4), (3, 5)]
    assert cache.drop("topo500", 8, [(3, 4), (9, 9)]) == 1
    assert cache.get("topo500", 8, 3, 4) is None
    assert cache.get("topo500", 8, 3, 5) == b"b"
    assert [p.name for p in cache.files()] == ["5.png"]


@contextlib.contextmanager
def _opened() -> Iterator[list[str]]:
    """The paths `os.open` is called with while the block runs."""
    opened: list[str] = []
    real_open = os.open

    def counting_open(*args, **kw):  # type: ignore[no-untyped-def]
        opened.append(args[0])
        return real_open(*args, **kw)

    os.open = counting_open  # type: ignore[assignment]
    try:
        yield opened
    finally:
        os.open = real_open  # type: ignore[assignment]


def test_recently_read_tiles_are_served_from_memory_until_their_file_changes(
    tmp_path: Path,
) -> None:
    cache = DiskCache(tmp_path, Recent(most_bytes=64 * 1024))
    cache.put("topo500", 8, {(3, 4): b"old", (3, 5): b"other"})
    first = cache.lookup("topo500", 8, 3, 4)
    assert first is not None and first.data == b"old"
    path = cache.path("topo500", 8, 3, 4)
    with _opened() as opened:
        again = cache.lookup("topo500", 8, 3, 4)
        assert again == first and opened == []  # from memory: the file was not opened
        assert again.path == path and again.path is first.path  # its Path made once
        cache.put("topo500", 8, {(3, 4): b"new"})  # re-rendered: a new file renamed over it
        opened.clear()  # (the put's own temporary file)
        fresh = cache.lookup("topo500", 8, 3, 4)
        assert fresh is not None and fresh.data == b"new" and fresh.etag != first.etag
        assert opened == [str(path)]
        assert cache.drop("topo500", 8, [(3, 4)]) == 1
        assert cache.lookup("topo500", 8, 3, 4) is None  # expired: gone, not remembered
        path.write_bytes(b"in place")  # a file written anew where one was dropped is read
        assert (found := cache.lookup("topo500", 8, 3, 4)) is not None
        assert found.data == b"in place"
    # At most most_bytes are held, the least recently used leaving first.
    big = {(x, 0): bytes([x]) * 3000 for x in range(40)}
    cache.put("topo500", 9, big)
    for x in range(40):
        assert cache.lookup("topo500", 9, x, 0) is not None
    assert cache.recent.bytes <= 64 * 1024
    held = cache.recent._held
    assert str(cache.path("topo500", 9, 39, 0)) in held
    assert str(cache.path("topo500", 9, 0, 0)) not in held


def test_a_look_up_without_bytes_holds_the_etag_alone(tmp_path: Path) -> None:
    """Behind nginx the app needs a tile's ETag, not its bytes: the first look-up opens the
    file for its ETag attribute, later ones are a `stat` (the file is not opened) until the
    file changes; a look-up that needs the bytes reads them then, and a large tile's ETag
    costs its entry, not its size."""
    cache = DiskCache(tmp_path, Recent(most_bytes=64 * 1024))
    cache.put("topo500", 8, {(3, 4): b"old", (3, 5): b"x" * 20_000})
    path = cache.path("topo500", 8, 3, 4)
    with _opened() as opened:
        first = cache.lookup("topo500", 8, 3, 4, read=False)
        assert first is not None and first.data is None and first.size == 3
        assert opened == [str(path)]
        opened.clear()
        again = cache.lookup("topo500", 8, 3, 4, read=False)
        assert again == first and opened == []
        whole = cache.lookup("topo500", 8, 3, 4)  # the bytes now: the file is read
        assert whole is not None and whole.data == b"old" and whole.etag == first.etag
        assert opened == [str(path)]
        opened.clear()
        assert cache.lookup("topo500", 8, 3, 4, read=False) == first and opened == []
        cache.put("topo500", 8, {(3, 4): b"new"})  # re-rendered: a new file renamed over it
        opened.clear()
        fresh = cache.lookup("topo500", 8, 3, 4, read=False)
        assert fresh is not None and fresh.etag != first.etag and opened == [str(path)]
    big = cache.lookup("topo500", 8, 3, 5, read=False)
    assert big is not None and big.size == 20_000
    assert cache.recent.bytes == 2 * ENTRY_BYTES  # two ETags held, no bytes


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    cache.put("grids", 0, {(x, y): bytes([x, y]) for x in range(4) for y in range(4)})
    names = {p.name for p in cache.files()}
    assert all(not n.startswith(".tmp") for n in names)
    assert len(names) == 4


@pytest.mark.parametrize(
    ("product", "z", "x", "y"),
    [
        ("../etc", 0, 0, 0),
        ("topo500/../../x", 0, 0, 0),
        ("TOPO", 0, 0, 0),
        ("t", -1, 0, 0),
        ("t", 0, -2, 0),
        ("t", 0, 0, True),
        ("", 0, 0, 0),
        ("t", "1", 0, 0),
    ],
)
def test_paths_cannot_leave_the_cache(tmp_path: Path, product, z, x, y) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        DiskCache(tmp_path).path(product, z, x, y)


def test_lock_excludes_threads(tmp_path: Path) -> None:
    locks = MetatileLocks(tmp_path)
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        with locks.hold("topo500", 8, 1, 1):
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.02)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1


def _hold_for(root: str, seconds: float, ready, finished) -> None:  # type: ignore[no-untyped-def]
    with MetatileLocks(Path(root)).hold("topo500", 8, 0, 0):
        ready.set()
        time.sleep(seconds)
        finished.set()


def _try_lock(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_lock_excludes_processes_and_other_metatiles_are_free(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, finished = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_for, args=(str(tmp_path), 1.0, ready, finished))
    holder.start()
    assert ready.wait(10)
    locks = MetatileLocks(tmp_path)
    held = locks.path("topo500", 8, 0, 0)
    other = locks.path("topo500", 8, 0, 1)
    other.parent.mkdir(parents=True, exist_ok=True)
    assert _try_lock(other)
    assert not _try_lock(held)
    with locks.hold("topo500", 8, 0, 0):  # blocks until the other process lets go
        assert finished.is_set()
    holder.join()
    assert _try_lock(held)
