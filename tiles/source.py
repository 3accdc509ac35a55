"""The tile interface the gateway's views call: the same in one process and across zones.

`Tiles` is what the tile routes (and the policy's scope context) need from a renderer: a
product by name, a level's scale, the served tile ranges (for the descriptor), a tile with
its ETag, a picture of a screen's frame, and which tiles touch which street. Nothing in it
carries a coordinate: tiles and frames are counted in tile and pixel indices of the grid,
whose origin stays with the renderer.

`LocalTiles` wraps the in-process tile service (tiles.service: cache, metatile locks,
Mapnik), as `make run` serves. `tiles.remote.RemoteTiles` asks a renderer service in the
secure zone over mutual TLS instead (tiles.renderer_app). `mapserver.services` picks one
from the settings (`renderer_url`), so the deployment changes wiring, not code.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import psycopg
from werkzeug.datastructures import ETags

from mapserver.errors import NotFound
from tiles import picture
from tiles.cache import Cached
from tiles.products import PRODUCTS, Product
from tiles.service import TileService
from tiles.street_scope import StreetIndex
from tiles.tile_grid import TILE_PX, Level, TileRange

if TYPE_CHECKING:
    from mapserver.cases.place import GridSpot, Place
    from mapserver.settings import Settings

Sees = Callable[[int], bool]
Within = Callable[[int], TileRange | None]


class Asker(Protocol):
    """Who a tile is for (auth.identity.Identity): the remote side names them in its token."""

    @property
    def account(self) -> str: ...

    @property
    def roles(self) -> tuple[str, ...]: ...

    @property
    def streets(self) -> tuple[str, ...]: ...


class Asking(NamedTuple):
    """Who asks for a tile and which versions they hold (If-None-Match), for a remote look-up
    made outside Flask's request context (tiles.hot_path sets it around its look-up; inside
    the context the remote side reads the gateway's `g.identity` and the request)."""

    asker: Asker
    etags: ETags


ASKING: ContextVar[Asking | None] = ContextVar("citygrid_tile_asking", default=None)


class Tiles(Protocol):
    """What the gateway's tile routes ask of a renderer, wherever it runs."""

    @property
    def files(self) -> Path | None:
        """The local cache directory a front (nginx) may send tiles from; None if remote."""

    def product(self, name: str) -> Product: ...

    def scale_of(self, z: int) -> int | None: ...

    def descriptor(
        self, name: str, sees: Sees = ..., within: Within | None = None
    ) -> dict[str, Any]: ...

    def cached(self, name: str, z: int, x: int, y: int, read: bool = True) -> Cached: ...

    def picture(
        self, products: Sequence[str], frame: picture.Frame, hidden: Iterable[tuple[int, int]] = ()
    ) -> bytes:
        """The frame drawn for `products` as an RGB PNG, `hidden` tiles masked."""

    def street_index(self) -> StreetIndex | None:
        """Which tiles touch which street, if this implementation knows (else the caller
        loads it from its own database)."""

    def identify(
        self, name: str, z: int, x: int, y: int, col: int, row: int
    ) -> dict[str, Any] | None:
        """What lies at pixel (col, row) of a tile (mapserver.identify.lookup): codes and
        names, never a coordinate; None outside every unit grid."""

    # -- the case workflow's map parts (tiles.case_work; across zones: tiles.renderer_work)

    def levels(self) -> tuple[Level, ...]:
        """The levels of the tile matrix (scales and sizes; no origin)."""

    def place(
        self, spec: Mapping[str, Any], allow_gps: bool = False, anywhere: bool = False
    ) -> Place:
        """A case's place from what a person gave (a pixel of the map, an address, a grid or
        component code; a device's GPS fix): its codes, names, unit grid area and finest
        pixel; its point only in this process (mapserver.cases.place.locate). Across zones
        the renderer refuses a place outside the asker's streets unless `anywhere` (a
        district-wide submission: Open311, the city–district exchange)."""

    def unit_grid(self, code: str) -> GridSpot | None:
        """Where a unit grid lies in the finest level's pixels, and its street."""

    def cases_changed(self, pixel: Mapping[str, int]) -> int:
        """A case at `pixel` was created or changed state (committed): redraw the cases
        overlay there; how many cached tiles were dropped."""

    def hotspot(
        self, name: str, z: int, x: int, y: int, counts: Callable[[], Mapping[str, int]]
    ) -> bytes:
        """A hot-spot tile of variant `name` (mapserver.evaluation.hotspot); `counts` gives
        the filed cases per unit grid code of the variant where the map is not with them."""


def product(name: str) -> Product:
    found = PRODUCTS.get(name)
    if found is None:
        raise NotFound(f"no map {name!r}")
    return found


def describe(
    name: str,
    levels: Iterable[Level],
    served: Callable[[Product, int], TileRange | None],
    sees: Sees = lambda scale: True,
    within: Within | None = None,
    locale: str = "zh-CN",
) -> dict[str, Any]:
    """The descriptor of tiles.service.TileService.descriptor, from served tile ranges alone
    (no extent, no origin): tile size, levels, their scales and tile-index extents, and the
    map's title in the install's language."""
    from mapserver import locales

    found = product(name)
    out = []
    for level in levels:
        rng = served(found, level.z)
        if rng is None or not sees(level.scale):
            continue
        if within is not None:
            own = within(level.z)
            if own is None:
                continue
            rng = TileRange(
                level.z, max(rng.x0, own.x0), max(rng.y0, own.y0), min(rng.x1, own.x1),
                min(rng.y1, own.y1),
            )  # fmt: skip
            if not rng.n_tiles:
                continue
        out.append(
            {
                "level": level.z,
                "scale_denominator": level.scale,
                "metres_per_pixel": round(level.resolution, 6),
                "tiles": {"x_min": rng.x0, "x_max": rng.x1, "y_min": rng.y0, "y_max": rng.y1},
            }
        )
    return {
        "map": found.name,
        "title": locales.get(locale).titles.get(found.name, found.title),
        "tile_size": TILE_PX,
        "format": "image/png",
        "transparent": found.transparent,
        "levels": out,
    }


def check_frame(frame: picture.Frame, levels: int, max_px: int = 2048) -> None:
    """A frame a renderer will draw: a known level, a sane size (no coordinates involved)."""
    from mapserver.errors import InvalidInput

    if not 0 <= frame.z < levels:
        raise InvalidInput(f"no level {frame.z}")
    if not (0 < frame.width <= max_px and 0 < frame.height <= max_px):
        raise InvalidInput(f"a picture is 1..{max_px} pixels wide and high")
    if frame.left < 0 or frame.top < 0:
        raise InvalidInput("a frame lies inside the tile matrix")


class LocalTiles:
    """The in-process implementation: the tile service itself (one process, or the renderer)."""

    def __init__(
        self,
        service: TileService,
        connect: Callable[[], AbstractContextManager[psycopg.Connection]] | None = None,
        srid: int = 0,
        settings: Settings | None = None,
        place_connect: Callable[[], AbstractContextManager[psycopg.Connection]] | None = None,
    ):
        self.service = service
        self.connect = connect  # the map tables, for identify
        self.srid = srid
        self.settings = settings  # for placing cases (geocoding, component codes)
        # Placing a case runs inside the request's own transaction: a connection apart from
        # its pool (the read-only map role), so that it never waits on a pool it holds.
        self.place_connect = place_connect or connect
        self._hotspot: Any = None

    @property
    def files(self) -> Path | None:
        return self.service.cache.root

    def product(self, name: str) -> Product:
        return self.service.product(name)

    def scale_of(self, z: int) -> int | None:
        scales = self.service.grid.scales
        return scales[z] if 0 <= z < len(scales) else None

    def descriptor(
        self, name: str, sees: Sees = lambda scale: True, within: Within | None = None
    ) -> dict[str, Any]:
        return describe(
            name, self.service.grid.levels, self.service.served_range, sees, within,
            self.service.locale,
        )  # fmt: skip

    def cached(self, name: str, z: int, x: int, y: int, read: bool = True) -> Cached:
        return self.service.cached(name, z, x, y, read)

    def picture(
        self, products: Sequence[str], frame: picture.Frame, hidden: Iterable[tuple[int, int]] = ()
    ) -> bytes:
        source = self.service.source
        if not isinstance(source, picture.PictureSource):
            raise RuntimeError("this tile service's renderer draws no pictures")
        check_frame(frame, len(self.service.grid.scales))
        for name in products:
            self.product(name)
        masked = frozenset(hidden)
        image = picture.render(
            source, self.service.grid, frame, products, lambda x, y: (x, y) not in masked
        )
        out = io.BytesIO()
        image.save(out, "PNG", compress_level=6)
        return out.getvalue()

    def street_index(self) -> StreetIndex | None:
        return None  # the caller's own database has the streets (mapserver.services)

    def identify(
        self, name: str, z: int, x: int, y: int, col: int, row: int
    ) -> dict[str, Any] | None:
        from mapserver.identify import lookup

        self.service.check(name, z, x, y)
        if self.connect is None:
            raise RuntimeError("this tile service has no map database connection")
        with self.connect() as conn:
            return lookup(
                conn, self.service.grid, self.srid, z, x, y, col, row, self.service.locale
            )

    # -- the case workflow's map parts

    def levels(self) -> tuple[Level, ...]:
        return self.service.grid.levels

    def place(
        self, spec: Mapping[str, Any], allow_gps: bool = False, anywhere: bool = False
    ) -> Place:
        from mapserver.cases.place import locate

        if self.place_connect is None or self.settings is None:
            raise RuntimeError("this tile service has no map database connection")
        with self.place_connect() as conn:
            return locate(conn, self.settings, self.service.grid, spec, allow_gps)

    def unit_grid(self, code: str) -> GridSpot | None:
        from mapserver.cases.place import grid_spot

        if self.place_connect is None:
            raise RuntimeError("this tile service has no map database connection")
        with self.place_connect() as conn:
            return grid_spot(conn, self.service.grid, code)

    def cases_changed(self, pixel: Mapping[str, int]) -> int:
        from mapserver.cases import on_map

        return on_map.expire(self.service, pixel)

    def hotspot(
        self, name: str, z: int, x: int, y: int, counts: Callable[[], Mapping[str, int]]
    ) -> bytes:
        """Drawn from this map database's own cases (`counts` unused: they are here)."""
        from mapserver.evaluation import hotspot

        if self.settings is None:
            raise RuntimeError("this tile service has no settings for hot spots")
        if self._hotspot is None:
            self._hotspot = hotspot.local_renderer(self.settings, self.service)
        return hotspot.tile(self.service, self._hotspot, hotspot.parse_variant(name), z, x, y)
