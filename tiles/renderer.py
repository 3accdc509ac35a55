"""Mapnik rendering of metatiles: one Map per thread and product, loaded once, reused.

A metatile is N×N tiles rendered as one image with a buffer around it (so labels that
cross tile edges are drawn whole and identically on both sides), then cut into 256 px
tiles, each encoded once as a palette PNG and reduced to the chunk whitelist.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import mapnik

from tiles import png
from tiles.products import PRODUCTS
from tiles.style import FONT_DIRS, Style, render_style
from tiles.tile_grid import TILE_PX, BBox, TileGrid, TileRange

PNG_FORMAT = "png8:m=h:z=6"


class TileSource(Protocol):
    """What the tile service needs from a renderer; a remote renderer service can stand in."""

    def render_metatile(
        self, product: str, z: int, mx: int, my: int
    ) -> dict[tuple[int, int], bytes]: ...


_fonts_registered = False
_fonts_lock = threading.Lock()


def register_fonts() -> None:
    global _fonts_registered
    with _fonts_lock:
        if not _fonts_registered:
            for directory in FONT_DIRS:
                mapnik.register_fonts(directory)
            _fonts_registered = True


class MapnikRenderer:
    """Renders metatiles of the CityGrid products from PostGIS, connecting with
    `database_url` (the read-only map role when serving: Settings.map_reader_database_url)."""

    def __init__(
        self,
        grid: TileGrid,
        srs: str,
        database_url: str,
        srid: int,
        metatile: int = 8,
        buffer_px: int = 128,
        locale: str = "zh-CN",
    ):
        self.grid = grid
        self.srs = srs
        self.database_url = database_url
        self.srid = srid
        self.metatile = metatile
        self.buffer_px = buffer_px
        self.locale = locale
        self._local = threading.local()
        self._styles: dict[str, Style] = {}
        self.renders = 0  # metatiles rendered by this renderer (for tests and benchmarks)
        self.pictures = 0  # pictures rendered (tiles.picture)
        self._count_lock = threading.Lock()
        register_fonts()

    def _extent(self) -> str:
        last = self.grid.level(0)
        span = last.tile_span * last.matrix_width
        ox, oy = self.grid.origin_x, self.grid.origin_y
        return f"{ox},{oy - span},{ox + span},{oy}"

    def style(self, product: str) -> Style:
        if product not in self._styles:
            self._styles[product] = render_style(PRODUCTS[product].style, self.srs, self.locale)
        return self._styles[product]

    def style_xml(self, product: str) -> str:
        """The product's Map XML: no host, role or password in it (see tiles.style)."""
        return self.style(product).xml

    def map_for(self, product: str) -> mapnik.Map:
        """This thread's Map for `product` (a Map must never render twice at once)."""
        maps = getattr(self._local, "maps", None)
        if maps is None:
            maps = self._local.maps = {}
        m = maps.get(product)
        if m is None:
            m = mapnik.Map(TILE_PX, TILE_PX)
            style = self.style(product)
            mapnik.load_map_from_string(m, style.xml, True, "")
            sources = style.datasources(self.database_url, self.srid, self._extent())
            for layer, params in zip(m.layers, sources, strict=True):
                layer.datasource = mapnik.CreateDatasource(**params)
            m.buffer_size = self.buffer_px
            maps[product] = m
        return m

    def render_range(self, product: str, rng: TileRange) -> dict[tuple[int, int], bytes]:
        """Render a block of tiles as one image and cut it."""
        m = self.map_for(product)
        width, height = rng.width * TILE_PX, rng.height * TILE_PX
        m.resize(width, height)
        box: BBox = self.grid.range_bbox(rng)
        m.zoom_to_box(mapnik.Box2d(*box))
        image = mapnik.Image(width, height)
        mapnik.render(m, image)
        with self._count_lock:
            self.renders += 1
        tiles = {}
        for x, y in rng.tiles():
            view = image.view((x - rng.x0) * TILE_PX, (y - rng.y0) * TILE_PX, TILE_PX, TILE_PX)
            tiles[(x, y)] = png.strip(view.to_string(PNG_FORMAT))
        return tiles

    def render_metatile(
        self, product: str, z: int, mx: int, my: int
    ) -> dict[tuple[int, int], bytes]:
        return self.render_range(product, self.grid.metatile_range(z, mx, my, self.metatile))

    def render_tile(self, product: str, z: int, x: int, y: int) -> bytes:
        """One tile on its own (the plain loop a metatile is measured against)."""
        return self.render_range(product, TileRange(z, x, y, x, y))[(x, y)]

    def render_box(self, products: Sequence[str], bbox: BBox, width: int, height: int) -> bytes:
        """`products` drawn over each other, first the base map, into one width × height
        image of `bbox` (a picture for a small screen, tiles.picture): a lossless PNG that
        stays inside the server; the picture module encodes what leaves."""
        image = mapnik.Image(width, height)
        for product in products:
            m = self.map_for(product)
            m.resize(width, height)
            m.zoom_to_box(mapnik.Box2d(*bbox))
            mapnik.render(m, image)
        with self._count_lock:
            self.pictures += 1
        return bytes(image.to_string("png32:z=1"))
