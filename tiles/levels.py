"""`citygrid tiles levels`: the public scale ladder and which map serves each level. Pure.

Level, scale and metres per pixel are the same for every install (the origin is what is
secret, see tiles.origin), so this table can be printed anywhere.
"""

from __future__ import annotations

from typing import NamedTuple

from tiles.products import PRODUCTS
from tiles.tile_grid import PIXEL_M, SCALES, TILE_PX


class LevelRow(NamedTuple):
    z: int
    scale: int
    metres_per_pixel: float
    tile_m: float  # ground size of one 256 px tile side
    products: tuple[str, ...]


def table(scales: tuple[int, ...] = SCALES) -> list[LevelRow]:
    return [
        LevelRow(
            z,
            scale,
            scale * PIXEL_M,
            scale * PIXEL_M * TILE_PX,
            tuple(name for name, p in PRODUCTS.items() if scale in p.scales),
        )
        for z, scale in enumerate(scales)
    ]
