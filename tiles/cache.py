"""The tile cache on disk: one PNG per tile under product/level/x/y.png, written atomically.

A hit is a file read and nothing else: no Mapnik, no database. Writers put a whole
metatile's tiles at once (temp file + rename per tile), so a reader sees either the old
tile, no tile, or the new one; never a partial file. Paths are built only from a known
product name and integers, so no request can name a file outside the cache.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from mapserver.files import atomic_write

_PRODUCT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class DiskCache:
    """Tiles of every product under one root directory ($CITYGRID_DATA_DIR/tiles)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, product: str, z: int, x: int, y: int) -> Path:
        if not _PRODUCT.match(product):
            raise ValueError(f"bad product name {product!r}")
        for part in (z, x, y):
            if not isinstance(part, int) or isinstance(part, bool) or part < 0:
                raise ValueError("tile indices must be non-negative integers")
        return self.root / product / str(z) / str(x) / f"{y}.png"

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

    def has(self, product: str, z: int, x: int, y: int) -> bool:
        return self.path(product, z, x, y).is_file()

    def put(self, product: str, z: int, tiles: Mapping[tuple[int, int], bytes]) -> None:
        """Store tiles {(x, y): png} of one level, each atomically."""
        for (x, y), data in tiles.items():
            atomic_write(self.path(product, z, x, y), data)

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
            if not x_dir.name.isdigit():
                continue
            for f in x_dir.iterdir():
                stem, dot, ext = f.name.partition(".")
                if dot and ext == "png" and stem.isdigit():
                    yield int(x_dir.name), int(stem)

    def files(self) -> Iterator[Path]:
        """Every file under the cache root (for audits of what the cache holds)."""
        if self.root.is_dir():
            for dirpath, _, names in os.walk(self.root):
                for name in names:
                    yield Path(dirpath) / name
