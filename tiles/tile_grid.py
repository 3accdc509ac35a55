"""The tile matrix set: pure arithmetic, no I/O.

Levels are scale denominators with the OGC standardised rendering pixel of 0.28 mm, so a
level's resolution is `denominator × 0.00028` metres per pixel; the ladder halves from
1:128000 down to 1:500 and so holds 1:500 and 1:2000 exactly. Tile indices count from the
grid's upper-left origin, a server-side secret: z/x/y on their own say nothing about where
on Earth a tile is.
"""

from __future__ import annotations

import math
from typing import NamedTuple

PIXEL_M = 0.00028  # OGC standardised rendering pixel size (0.28 mm)
TILE_PX = 256
SCALES = (128_000, 64_000, 32_000, 16_000, 8_000, 4_000, 2_000, 1_000, 500)
EPS = 1e-9


class BBox(NamedTuple):
    minx: float
    miny: float
    maxx: float
    maxy: float

    def intersects(self, other: BBox) -> bool:
        return (
            self.minx < other.maxx
            and other.minx < self.maxx
            and self.miny < other.maxy
            and other.miny < self.maxy
        )

    def buffered(self, d: float) -> BBox:
        return BBox(self.minx - d, self.miny - d, self.maxx + d, self.maxy + d)


class Level(NamedTuple):
    z: int
    scale: int  # denominator: 500 means 1:500
    resolution: float  # metres per pixel
    matrix_width: int
    matrix_height: int

    @property
    def tile_span(self) -> float:
        """Ground size of one tile side in metres."""
        return TILE_PX * self.resolution


class TileRange(NamedTuple):
    """Tiles x0..x1, y0..y1 inclusive."""

    z: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    @property
    def n_tiles(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def tiles(self) -> list[tuple[int, int]]:
        return [(x, y) for y in range(self.y0, self.y1 + 1) for x in range(self.x0, self.x1 + 1)]

    def meet(self, other: TileRange) -> TileRange:
        """The tiles in both ranges (of one level; may be empty)."""
        return TileRange(
            self.z,
            max(self.x0, other.x0),
            max(self.y0, other.y0),
            min(self.x1, other.x1),
            min(self.y1, other.y1),
        )

    def contains(self, x: int, y: int) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1


class TileGrid(NamedTuple):
    origin_x: float
    origin_y: float
    top_tiles: int = 4  # tiles per side at level 0; doubles each level
    scales: tuple[int, ...] = SCALES

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(self.level(z) for z in range(len(self.scales)))

    def level(self, z: int) -> Level:
        if not 0 <= z < len(self.scales):
            raise ValueError(f"level {z} out of range 0..{len(self.scales) - 1}")
        n = self.top_tiles * 2**z
        return Level(z, self.scales[z], self.scales[z] * PIXEL_M, n, n)

    def z_of_scale(self, scale: int) -> int:
        return self.scales.index(scale)

    def valid(self, z: int, x: int, y: int) -> bool:
        if not 0 <= z < len(self.scales):
            return False
        lv = self.level(z)
        return 0 <= x < lv.matrix_width and 0 <= y < lv.matrix_height

    def tile_bbox(self, z: int, x: int, y: int) -> BBox:
        span = self.level(z).tile_span
        minx = self.origin_x + x * span
        maxy = self.origin_y - y * span
        return BBox(minx, maxy - span, minx + span, maxy)

    def tile_range(self, z: int, bbox: BBox) -> TileRange:
        """Tiles at level z that intersect `bbox` (clipped to the matrix; may be empty)."""
        lv = self.level(z)
        span = lv.tile_span
        x0 = math.floor((bbox.minx - self.origin_x) / span + EPS)
        x1 = math.ceil((bbox.maxx - self.origin_x) / span - EPS) - 1
        y0 = math.floor((self.origin_y - bbox.maxy) / span + EPS)
        y1 = math.ceil((self.origin_y - bbox.miny) / span - EPS) - 1
        return TileRange(
            z,
            max(x0, 0),
            max(y0, 0),
            min(x1, lv.matrix_width - 1),
            min(y1, lv.matrix_height - 1),
        )

    def locate(self, z: int, px: float, py: float) -> tuple[int, int, int, int]:
        """(tile x, tile y, pixel column, pixel row) of a ground point at level z."""
        res = self.level(z).resolution
        gx = (px - self.origin_x) / res
        gy = (self.origin_y - py) / res
        col, row = math.floor(gx), math.floor(gy)
        return col // TILE_PX, row // TILE_PX, col % TILE_PX, row % TILE_PX

    def ground(self, z: int, x: int, y: int, col: float, row: float) -> tuple[float, float]:
        """Ground point of pixel (col, row) of tile (z, x, y); pixel centres at +0.5."""
        res = self.level(z).resolution
        return (
            self.origin_x + (x * TILE_PX + col) * res,
            self.origin_y - (y * TILE_PX + row) * res,
        )

    def metatile(self, z: int, x: int, y: int, size: int) -> tuple[int, int]:
        return x // size, y // size

    def metatile_range(self, z: int, mx: int, my: int, size: int) -> TileRange:
        """The tiles of metatile (mx, my), clipped to the matrix."""
        lv = self.level(z)
        return TileRange(
            z,
            mx * size,
            my * size,
            min(mx * size + size, lv.matrix_width) - 1,
            min(my * size + size, lv.matrix_height) - 1,
        )

    def range_bbox(self, rng: TileRange) -> BBox:
        a = self.tile_bbox(rng.z, rng.x0, rng.y0)
        b = self.tile_bbox(rng.z, rng.x1, rng.y1)
        return BBox(a.minx, b.miny, b.maxx, a.maxy)

    def metatiles(self, rng: TileRange, size: int) -> list[tuple[int, int]]:
        """Metatiles covering a tile range, west→east then north→south."""
        return [
            (mx, my)
            for my in range(rng.y0 // size, rng.y1 // size + 1)
            for mx in range(rng.x0 // size, rng.x1 // size + 1)
        ]
