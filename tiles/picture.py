"""One picture of an arbitrary area for a small screen: a frame of a level's pixel matrix,
rendered as one image for the products that serve its scale (base map plus overlays), masked
outside what the asker may see, and encoded as one clean palette PNG.

The frame is counted in the level's pixels from the grid's secret origin, so the picture
lines up with the tiles of that level pixel for pixel, and a point's place in the picture is
whole pixels. Nothing here knows about cases: callers draw their own marks on the image
between `render` and `encode`. `Frame` and `fit` are pure; `render` is the Mapnik edge.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from PIL import Image

from tiles import png
from tiles.products import PRODUCTS
from tiles.tile_grid import TILE_PX, BBox, TileGrid, TileRange

MASK_RGB = (214, 214, 214)  # what shows where the asker may not look
MARGIN_PX = 24  # room kept around the area a frame must hold


class Frame(NamedTuple):
    """A width × height window of level z's pixel matrix, from its pixel (left, top)."""

    z: int
    left: int
    top: int
    width: int
    height: int

    def bbox(self, grid: TileGrid) -> BBox:
        res = grid.level(self.z).resolution
        minx = grid.origin_x + self.left * res
        maxy = grid.origin_y - self.top * res
        return BBox(minx, maxy - self.height * res, minx + self.width * res, maxy)

    def pixel(self, grid: TileGrid, x: float, y: float) -> tuple[int, int] | None:
        """The picture pixel (column, row) showing ground point (x, y); None outside."""
        res = grid.level(self.z).resolution
        col = math.floor((x - grid.origin_x) / res) - self.left
        row = math.floor((grid.origin_y - y) / res) - self.top
        if 0 <= col < self.width and 0 <= row < self.height:
            return col, row
        return None

    def tiles(self) -> TileRange:
        """The level's tiles the frame overlaps."""
        right, bottom = self.left + self.width - 1, self.top + self.height - 1
        return TileRange(
            self.z, self.left // TILE_PX, self.top // TILE_PX, right // TILE_PX, bottom // TILE_PX
        )

    def tile_at(self, col: int, row: int) -> tuple[int, int]:
        """The level's tile (x, y) holding picture pixel (col, row)."""
        return (self.left + col) // TILE_PX, (self.top + row) // TILE_PX

    def tile_box(self, x: int, y: int) -> tuple[int, int, int, int]:
        """Tile (x, y)'s part of the picture as (left, top, right, bottom), right/bottom
        exclusive, clipped to the picture."""
        return (
            max(x * TILE_PX - self.left, 0),
            max(y * TILE_PX - self.top, 0),
            min((x + 1) * TILE_PX - self.left, self.width),
            min((y + 1) * TILE_PX - self.top, self.height),
        )


def fit(
    grid: TileGrid,
    centre: tuple[float, float],
    holds: BBox,
    width: int,
    height: int,
    scales: Iterable[int],
    margin_px: int = MARGIN_PX,
) -> Frame:
    """The frame centred on `centre` at the finest of `scales` whose level holds `holds`
    (with `margin_px` to spare) in width × height; the coarsest when none does."""
    cx, cy = centre
    half_x = max(cx - holds.minx, holds.maxx - cx, 0.0)
    half_y = max(cy - holds.miny, holds.maxy - cy, 0.0)
    levels = sorted((grid.level(grid.z_of_scale(s)) for s in set(scales)), key=lambda lv: lv.scale)
    if not levels:
        raise ValueError("no scale to choose from")
    chosen = levels[-1]
    for level in levels:
        res = level.resolution
        if half_x / res + margin_px <= width / 2 and half_y / res + margin_px <= height / 2:
            chosen = level
            break
    res = chosen.resolution
    col = math.floor((cx - grid.origin_x) / res)
    row = math.floor((grid.origin_y - cy) / res)
    return Frame(chosen.z, col - width // 2, row - height // 2, width, height)


def products_at(scale: int, overlays: Sequence[str] = ("grids",)) -> tuple[str, ...]:
    """The base map serving `scale` (topo500 or topo2000), then the overlays serving it."""
    base = [p.name for p in PRODUCTS.values() if not p.transparent and scale in p.scales]
    over = [n for n in overlays if scale in PRODUCTS[n].scales]
    return (*base[:1], *over)


@runtime_checkable
class PictureSource(Protocol):
    """What a picture needs from a renderer: products drawn over each other into one
    width × height image of `bbox`, as PNG bytes (tiles.renderer.MapnikRenderer)."""

    def render_box(self, products: Sequence[str], bbox: BBox, width: int, height: int) -> bytes: ...


def render(
    source: PictureSource,
    grid: TileGrid,
    frame: Frame,
    products: Sequence[str],
    shown: Callable[[int, int], bool] | None = None,
) -> Image.Image:
    """The frame drawn for `products`, as an RGB image; where `shown(x, y)` is false for a
    tile of the frame's level, that tile's part is covered with MASK_RGB."""
    data = source.render_box(products, frame.bbox(grid), frame.width, frame.height)
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    if shown is not None:
        for x, y in frame.tiles().tiles():
            if not shown(x, y):
                image.paste(MASK_RGB, frame.tile_box(x, y))
    return image


def encode(image: Image.Image) -> bytes:
    """A palette PNG of the image's pixels alone, reduced to the chunk whitelist."""
    paletted = image.convert("RGB").quantize(
        256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    out = io.BytesIO()
    paletted.save(out, "PNG", optimize=False, compress_level=6)
    return png.strip(out.getvalue())
