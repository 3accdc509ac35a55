"""The tile cache on disk: one PNG per tile under product/level/x/y.png, written atomically.

A hit is a file read and nothing else: no Mapnik, no database, no hashing. Writers put a
whole metatile's tiles at once (temp file + rename per tile), so a reader sees either the old
tile, no tile, or the new one; never a partial file. Each tile's ETag (a hash of its bytes) is
computed when it is stored and kept with the file, in the extended attribute ETAG_XATTR, set
before the rename; a tile stored without one (an older cache, a file system without user
attributes) has it computed on reading. Paths are built only from a known product name and
integers, so no request can name a file outside the cache. Directories are 0755 and tiles
0644 whatever the process's umask, so that a front (nginx) may send the files itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePath, PurePosixPath
from typing import NamedTuple, Protocol

from tiles.recent import Recent

_PRODUCT = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
ETAG_XATTR = "user.citygrid.etag"


def etag_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class Cached(NamedTuple):
    """A cached tile: where it is (a file, or an object's key), its ETag and size, and its
    bytes if they were read."""

    path: PurePath
    etag: str
    size: int
    data: bytes | None


def relative(product: str, z: int, x: int, y: int) -> PurePosixPath:
    """product/z/x/y.png, from a known product name and non-negative integers only."""
    return PurePosixPath(relative_text(product, z, x, y))


def relative_text(product: str, z: int, x: int, y: int) -> str:
    """`relative` as text (what a cached tile's look-up joins to the root: no path objects)."""
    if not _PRODUCT.match(product):
        raise ValueError(f"bad product name {product!r}")
    for part in (z, x, y):
        if not isinstance(part, int) or isinstance(part, bool) or part < 0:
            raise ValueError("tile indices must be non-negative integers")
    return f"{product}/{z}/{x}/{y}.png"


class TileCache(Protocol):
    """What the tile service asks of a cache: DiskCache here, tiles.object_cache.ObjectCache
    in an S3-compatible store shared by several machines."""

    @property
    def root(self) -> Path | None:
        """The directory a front (nginx) may send tiles from; None when there are no files."""

    def path(self, product: str, z: int, x: int, y: int) -> PurePath: ...

    def get(
        self, product: str, z: int, x: int, y: int, max_age: float | None = None
    ) -> bytes | None: ...

    def lookup(
        self, product: str, z: int, x: int, y: int, max_age: float | None = None, read: bool = True
    ) -> Cached | None: ...

    def has(self, product: str, z: int, x: int, y: int) -> bool: ...

    def has_all(self, product: str, z: int, tiles: Iterable[tuple[int, int]]) -> bool:
        """Whether every one of the tiles is cached (a metatile is fresh)."""

    def put(self, product: str, z: int, tiles: Mapping[tuple[int, int], bytes]) -> None: ...

    def drop(self, product: str, z: int, tiles: Iterable[tuple[int, int]]) -> int: ...

    def cached(self, product: str, z: int) -> Iterator[tuple[int, int]]: ...

    def files(self) -> Iterator[PurePath]: ...


def _read_etag(fd: int) -> str | None:
    try:
        return os.getxattr(fd, ETAG_XATTR).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None


def _read_all(fd: int, size: int) -> bytes:
    """The whole file open at `fd`, `size` bytes as `fstat` gave it: one read asks for all of
    them, the next finds the end (a file is never written in place, so no more come)."""
    chunks = []
    while chunk := os.read(fd, max(size, 1 << 16) + 1):
        chunks.append(chunk)
    return b"".join(chunks)


def _mkdirs(path: Path) -> None:
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d)
            os.chmod(d, 0o755)


def _store(path: Path, data: bytes) -> None:
    """`data` into a temporary file beside `path` with its ETag attribute, renamed into place."""
    _mkdirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with contextlib.suppress(OSError):  # no user attributes: the ETag is computed on reading
            os.setxattr(fd, ETAG_XATTR, etag_of(data).encode("ascii"))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskCache:
    """Tiles of every product under one root directory ($CITYGRID_DATA_DIR/tiles)."""

    def __init__(self, root: Path, recent: Recent | None = None):
        self.root = Path(root)
        self._root_text = str(self.root)
        self.recent = recent or Recent()

    def path(self, product: str, z: int, x: int, y: int) -> Path:
        return self.root / relative(product, z, x, y)

    def get(
        self, product: str, z: int, x: int, y: int, max_age: float | None = None
    ) -> bytes | None:
        """The cached tile, or None when there is none or it is older than `max_age` s."""
        try:
            with self.path(product, z, x, y).open("rb") as fh:
                if max_age is not None and time.time() - os.fstat(fh.fileno()).st_mtime > max_age:
                    return None
                return fh.read()
        except FileNotFoundError:
            return None

    def lookup(
        self, product: str, z: int, x: int, y: int, max_age: float | None = None, read: bool = True
    ) -> Cached | None:
        """The cached tile with its ETag (and its bytes if `read`), or None as for `get`.
        Bytes read lately come from memory while the file is unchanged (tiles.recent)."""
        key = f"{self._root_text}/{relative_text(product, z, x, y)}"
        try:
            st = os.stat(key)
        except FileNotFoundError:
            return None
        if max_age is not None and time.time() - st.st_mtime > max_age:
            return None
        held = self.recent.get(key, st)
        if held is not None and (held.data is not None or not read):
            return Cached(held.path, held.etag, st.st_size, held.data if read else None)
        path = held.path if held is not None else Path(key)
        try:
            fd = os.open(key, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            if max_age is not None and time.time() - st.st_mtime > max_age:
                return None
            etag = _read_etag(fd)
            data = _read_all(fd, st.st_size) if read or etag is None else None
        finally:
            os.close(fd)
        if etag is None:
            assert data is not None
            etag = etag_of(data)
        self.recent.put(key, st, etag, data, path)
        return Cached(path, etag, st.st_size, data if read else None)

    def has(self, product: str, z: int, x: int, y: int) -> bool:
        return self.path(product, z, x, y).is_file()

    def has_all(self, product: str, z: int, tiles: Iterable[tuple[int, int]]) -> bool:
        return all(self.has(product, z, x, y) for x, y in tiles)

    def put(self, product: str, z: int, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Store tiles {(x, y): png} of one level, each atomically."""
        for (x, y), data in tiles.items():
            _store(self.path(product, z, x, y), data)

    def drop(self, product: str, z: int, tiles: Iterable[tuple[int, int]]) -> int:
        """Remove the given tiles; returns how many existed."""
        dropped = 0
        for x, y in tiles:
            try:
                self.path(product, z, x, y).unlink()
                dropped += 1
            except FileNotFoundError:
                pass
        return dropped

    def cached(self, product: str, z: int) -> Iterator[tuple[int, int]]:
        """Every (x, y) cached for one product level."""
        level_dir = self.root / product / str(z)
        if not level_dir.is_dir():
            return
        for x_dir in level_dir.iterdir():
            if not (x_dir.name.isascii() and x_dir.name.isdigit()):
                continue
            for f in x_dir.iterdir():
                stem, dot, ext = f.name.partition(".")
                if dot and ext == "png" and stem.isascii() and stem.isdigit():
                    yield int(x_dir.name), int(stem)

    def files(self) -> Iterator[Path]:
        """Every file under the cache root (for audits of what the cache holds)."""
        if self.root.is_dir():
            for dirpath, _, names in os.walk(self.root):
                for name in names:
                    yield Path(dirpath) / name
