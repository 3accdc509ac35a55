"""The tile service: validation, cache, metatile locking, rendering and invalidation.

A request for a cached tile is a file read. A miss takes the metatile's lock, looks in the
cache again (another thread or worker may have just rendered it), and only then renders
the whole metatile once and stores all its tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import psycopg

from mapserver import locales
from mapserver.errors import DatabaseUnavailable, InvalidInput, NotFound
from mapserver.settings import Settings
from tiles.cache import Cached, DiskCache, TileCache, etag_of
from tiles.lock import Locks, metatile_locks
from tiles.products import PRODUCTS, Product
from tiles.renderer import MapnikRenderer, TileSource
from tiles.tile_grid import BBox, TileGrid, TileRange

MARGIN_M = 300.0  # tiles this far around the district are served (empty where no data)


class Extent(NamedTuple):
    """The district's bounding box in the install's CRS (never sent to a client)."""

    bbox: BBox


def grid_from(settings: Settings, url: str | None = None) -> TileGrid:
    """The install's tile grid: its secret origin is read from the database once per process
    (`url`: the role to read it as, default the database URL); see tiles.origin."""
    from tiles.origin import install_grid

    return install_grid(settings, url)


def proj_string(conn: psycopg.Connection, srid: int) -> str:
    row = conn.execute("SELECT proj4text FROM spatial_ref_sys WHERE srid = %s", (srid,)).fetchone()
    if row is None or not row[0]:
        raise InvalidInput(f"srid: EPSG:{srid} is unknown to PostGIS")
    return str(row[0]).strip()


def district_extent(conn: psycopg.Connection) -> BBox | None:
    row = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
        " FROM (SELECT ST_Extent(geom) AS e FROM district) s"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return BBox(*row)


def cache_of(settings: Settings) -> TileCache:
    """The install's tile cache: files under DATA_DIR/tiles, or the shared object store."""
    if settings.tile_cache == "s3":
        from tiles.object_cache import ObjectCache

        return ObjectCache.from_settings(settings)
    return DiskCache(settings.tile_dir)


class TileService:
    locale: str = "zh-CN"  # the install's (map titles); from_settings sets it

    def __init__(
        self,
        grid: TileGrid,
        cache: TileCache,
        locks: Locks,
        source: TileSource | None,
        extent: BBox | None,
        metatile: int = 8,
    ):
        # Called with the metatiles an invalidation dropped tiles of (a render queue's
        # enqueue, when one is configured: see tiles.render_queue.rerender).
        self.expired: Callable[[list[tuple[str, int, int, int]]], None] | None = None
        self.grid = grid
        self.cache = cache
        self.locks = locks
        self.source = source
        self.extent = extent.buffered(MARGIN_M) if extent else None
        self._served: dict[tuple[str, int], TileRange | None] = {}
        self.metatile = metatile

    @classmethod
    def from_settings(cls, settings: Settings, source: TileSource | None = None) -> TileService:
        url = settings.map_reader_database_url  # read-only: map tables, nothing else
        try:
            conn = psycopg.connect(url)
        except psycopg.OperationalError as exc:
            from mapserver.db import describe_url

            raise DatabaseUnavailable(describe_url(url), exc) from None
        with conn:
            srs = proj_string(conn, settings.srid)
            extent = district_extent(conn)
        grid = grid_from(settings)
        source = source or MapnikRenderer(
            grid, srs, url, settings.srid, settings.tile_metatile, locale=settings.locale
        )
        svc = cls(
            grid,
            cache_of(settings),
            metatile_locks(settings),
            source,
            extent,
            settings.tile_metatile,
        )
        svc.locale = settings.locale
        return svc._rerendering(settings)

    @classmethod
    def for_cache(cls, settings: Settings) -> TileService:
        """The cache side only (no renderer, no database): for invalidation."""
        svc = cls(
            grid_from(settings),
            cache_of(settings),
            metatile_locks(settings),
            None,
            None,
            settings.tile_metatile,
        )
        return svc._rerendering(settings)

    def _rerendering(self, settings: Settings) -> TileService:
        if settings.render_queue:
            from tiles.render_queue import rerender

            self.expired = rerender(settings)
        return self

    # -- what may be asked

    def product(self, name: str) -> Product:
        product = PRODUCTS.get(name)
        if product is None:
            raise NotFound(f"no map {name!r}")
        return product

    def served_range(self, product: Product, z: int) -> TileRange | None:
        """The tiles of `product` at level z that exist: the district plus a margin (worked out
        once per product and level: every look-up asks)."""
        key = (product.name, z)
        try:
            return self._served[key]
        except KeyError:
            pass
        served = self._served_range(product, z)
        if len(self._served) < 4096:  # levels of known products; a bad z answers None anyway
            self._served[key] = served
        return served

    def _served_range(self, product: Product, z: int) -> TileRange | None:
        if not 0 <= z < len(self.grid.scales) or self.extent is None:
            return None
        if self.grid.level(z).scale not in product.scales:
            return None
        served = self.grid.tile_range(z, self.extent)
        return served if served.n_tiles else None  # the district outside the matrix: none

    def check(self, name: str, z: int, x: int, y: int) -> Product:
        product = self.product(name)
        served = self.served_range(product, z)
        if served is None:
            raise NotFound(f"map {name} has no level {z}")
        if not served.contains(x, y):
            raise NotFound(f"tile {z}/{x}/{y} is outside map {name}")
        return product

    # -- tiles

    def tile(self, name: str, z: int, x: int, y: int) -> bytes:
        product = self.check(name, z, x, y)
        data = self.cache.get(name, z, x, y, product.max_age)
        if data is not None:
            return data
        mx, my = self.grid.metatile(z, x, y, self.metatile)
        with self.locks.hold(name, z, mx, my):
            data = self.cache.get(name, z, x, y, product.max_age)
            if data is not None:
                return data
            tiles = self.render(name, z, mx, my)
        return tiles[(x, y)]

    def cached(self, name: str, z: int, x: int, y: int, read: bool = True) -> Cached:
        """Like `tile`, with the tile's ETag (stored with it) and its place in the cache; its
        bytes only if `read` (a front that sends the file itself needs none)."""
        hit = self.lookup(name, z, x, y, read)
        if hit is not None:
            return hit
        product = self.check(name, z, x, y)
        mx, my = self.grid.metatile(z, x, y, self.metatile)
        with self.locks.hold(name, z, mx, my):
            hit = self.cache.lookup(name, z, x, y, product.max_age, read)
            if hit is not None:
                return hit
            data = self.render(name, z, mx, my)[(x, y)]
        return Cached(self.cache.path(name, z, x, y), etag_of(data), len(data), data)

    def lookup(self, name: str, z: int, x: int, y: int, read: bool = True) -> Cached | None:
        """The tile if it is in the cache and fresh, else None (nothing is rendered)."""
        product = self.check(name, z, x, y)
        return self.cache.lookup(name, z, x, y, product.max_age, read)

    def render(self, name: str, z: int, mx: int, my: int) -> dict[tuple[int, int], bytes]:
        """Render one metatile and store its tiles (the caller holds the metatile's lock)."""
        if self.source is None:
            raise RuntimeError("this tile service has no renderer")
        tiles = self.source.render_metatile(name, z, mx, my)
        self.cache.put(name, z, tiles)
        return tiles

    def metatile_fresh(self, name: str, z: int, mx: int, my: int) -> bool:
        rng = self.grid.metatile_range(z, mx, my, self.metatile)
        return self.cache.has_all(name, z, rng.tiles())

    def invalidate(self, bbox: BBox, served: BBox | None = None) -> int:
        """Drop every cached tile of every product that intersects `bbox`; returns how many.
        `served`: the district and its margin, where tiles are served (at each level the
        tiles that meet it: served_range), to walk only those of a far larger box.

        Each metatile is cleared under its lock, so a render that started before the data
        changed cannot put stale tiles back after the drop.
        """
        dropped = 0
        for product in PRODUCTS.values():
            for level in self.grid.levels:
                if level.scale in product.scales:
                    rng = self.grid.tile_range(level.z, bbox)
                    if served is not None:
                        rng = rng.meet(self.grid.tile_range(level.z, served))
                    dropped += self._drop(product.name, rng)
        return dropped

    def invalidate_point(self, name: str, x: float, y: float, radius_px: float) -> int:
        """Drop the cached tiles of one product within `radius_px` pixels (of each level)
        around the point (x, y); returns how many. For a symbol drawn at a point: the
        radius is the symbol's half-size in pixels, so every tile it reaches is dropped."""
        product = self.product(name)
        dropped = 0
        for level in self.grid.levels:
            if level.scale in product.scales:
                r = radius_px * level.resolution
                bbox = BBox(x - r, y - r, x + r, y + r)
                dropped += self._drop(product.name, self.grid.tile_range(level.z, bbox))
        return dropped

    def _drop(self, name: str, rng: TileRange) -> int:
        if not rng.n_tiles:
            return 0
        dropped = 0
        emptied = []
        for mx, my in self.grid.metatiles(rng, self.metatile):
            meta = self.grid.metatile_range(rng.z, mx, my, self.metatile)
            hit = [t for t in meta.tiles() if rng.contains(*t)]
            with self.locks.hold(name, rng.z, mx, my):
                n = self.cache.drop(name, rng.z, hit)
            dropped += n
            if n:
                emptied.append((name, rng.z, mx, my))
        if emptied and self.expired is not None:
            self.expired(emptied)
        return dropped

    # -- what a client may know

    def descriptor(
        self,
        name: str,
        sees: Callable[[int], bool] = lambda scale: True,
        within: Callable[[int], TileRange | None] | None = None,
    ) -> dict[str, Any]:
        """Tile size and levels with their scales and tile-index extents: no CRS, no origin,
        no coordinates. `sees` says which scales the asker may see, `within` the tile range
        of the asker's own streets at a level (None: the whole district)."""
        product = self.product(name)
        levels = []
        for level in self.grid.levels:
            served = self.served_range(product, level.z)
            if served is None or not sees(level.scale):
                continue
            if within is not None:
                own = within(level.z)
                if own is None:
                    continue
                served = TileRange(
                    level.z,
                    max(served.x0, own.x0),
                    max(served.y0, own.y0),
                    min(served.x1, own.x1),
                    min(served.y1, own.y1),
                )
                if not served.n_tiles:
                    continue
            levels.append(
                {
                    "level": level.z,
                    "scale_denominator": level.scale,
                    "metres_per_pixel": round(level.resolution, 6),
                    "tiles": {
                        "x_min": served.x0,
                        "x_max": served.x1,
                        "y_min": served.y0,
                        "y_max": served.y1,
                    },
                }
            )
        return {
            "map": product.name,
            "title": locales.get(self.locale).titles.get(product.name, product.title),
            "tile_size": 256,
            "format": "image/png",
            "transparent": product.transparent,
            "levels": levels,
        }
