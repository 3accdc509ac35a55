"""Hot-spot tiles (案件热点): unit grids shaded by the cases filed in them over a period, of
one class or all, as a choropleth overlay.

It is the tile product `hotspot` (styles/hotspot.xml, the last 30 days by default) drawn
for a chosen period and class: the product's policy decides (map `hotspot`, the tile's
scale and streets), the tile grid, disk cache and metatile locks are the tile service's,
and the pictures are drawn by Mapnik as the read-only map role and stripped like every
other tile. Each period and class is cached as a product of its own
(`hotspot_<from>_<to>_<class>`), fresh for the product's max_age.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from flask import Blueprint, Flask, Response, current_app, request

from audit.notes import note
from auth import policy
from auth.access import ScopeContext, requires
from mapserver.errors import InvalidInput
from mapserver.evaluation import report
from mapserver.services import services
from tiles.renderer import MapnikRenderer
from tiles.scope import tile_index, tile_request
from tiles.service import TileService, proj_string
from tiles.style import Style, render_style

PRODUCT = "hotspot"
# The parameters row of styles/hotspot.xml, replaced with the period and class asked for.
DEFAULT_PARAMETERS = (
    "SELECT current_date - 29 AS first_day, current_date AS last_day, 'all'::text AS cls"
)
BREAKS = (0, 100, 200, 400, 800)  # filed cases per km² per 30 days: classes 1..5
_CLASS = re.compile(r"^(all|[ce][0-9]{2})$")
MAPS_PER_THREAD = 8
bp = Blueprint("hotspot", __name__, url_prefix="/evaluation")


class Variant(NamedTuple):
    """A period and a class (`all`, `e01` events of major class 01, `c02` components…)."""

    period: report.Period
    cls: str

    @property
    def cache_name(self) -> str:
        first, last = (d.strftime("%Y%m%d") for d in self.period)
        return f"{PRODUCT}_{first}_{last}_{self.cls}"

    def parameters(self) -> str:
        """The parameters row as SQL: only dates and a checked class code go into it."""
        return (
            f"SELECT DATE '{self.period.first.isoformat()}' AS first_day,"
            f" DATE '{self.period.last.isoformat()}' AS last_day, '{self.cls}'::text AS cls"
        )

    def as_json(self) -> dict[str, str]:
        return {**self.period.as_json(), "class": self.cls}


def variant(args: Mapping[str, str]) -> Variant:
    """?from=&to=&class= (class defaults to all)."""
    cls = args.get("class", "all") or "all"
    if not _CLASS.match(cls):
        raise InvalidInput("class must be all, or e/c and a two-digit major class (e01, c02)")
    return Variant(report.period(args), cls)


def parse_variant(name: str) -> Variant:
    """The variant a cache name stands for (the renderer is handed names only)."""
    _, first, last, cls = name.split("_")

    def day(text: str) -> dt.date:
        return dt.datetime.strptime(text, "%Y%m%d").date()

    return Variant(report.Period(day(first), day(last)), cls)


class HotspotRenderer(MapnikRenderer):
    """The `hotspot` style with the parameters row of a variant; a thread keeps the Maps of
    its last few variants."""

    def style(self, product: str) -> Style:
        if product not in self._styles:
            base = render_style("hotspot.xml", self.srs)
            if DEFAULT_PARAMETERS not in base.tables[0]:
                raise RuntimeError("styles/hotspot.xml lost its parameters row")
            row = parse_variant(product).parameters()
            tables = tuple(t.replace(DEFAULT_PARAMETERS, row) for t in base.tables)
            if len(self._styles) > 64:
                self._styles.clear()
            self._styles[product] = Style(base.xml, tables)
        return self._styles[product]

    def map_for(self, product: str) -> Any:
        maps = getattr(self._local, "maps", None)
        if maps is not None and product not in maps and len(maps) >= MAPS_PER_THREAD:
            maps.pop(next(iter(maps)))  # the oldest variant this thread drew
        return super().map_for(product)


_renderer_lock = threading.Lock()


def renderer(app: Flask, svc: TileService) -> HotspotRenderer:
    """This app's hot-spot renderer, made on first use, as the read-only map role."""
    found: HotspotRenderer | None = app.extensions.get("citygrid.hotspot")
    if found is None:
        with _renderer_lock:
            found = app.extensions.get("citygrid.hotspot")
            if found is None:
                import psycopg

                settings = services(app).settings
                url = settings.map_reader_database_url
                with psycopg.connect(url) as conn:
                    srs = proj_string(conn, settings.srid)
                found = HotspotRenderer(svc.grid, srs, url, settings.srid, svc.metatile)
                app.extensions["citygrid.hotspot"] = found
    return found


def tile(svc: TileService, draw: HotspotRenderer, which: Variant, z: int, x: int, y: int) -> bytes:
    """One hot-spot tile from the cache, or its metatile drawn under the metatile's lock."""
    product = svc.check(PRODUCT, z, x, y)
    name = which.cache_name
    data = svc.cache.get(name, z, x, y, product.max_age)
    if data is not None:
        return data
    mx, my = svc.grid.metatile(z, x, y, svc.metatile)
    with svc.locks.hold(name, z, mx, my):
        data = svc.cache.get(name, z, x, y, product.max_age)
        if data is not None:
            return data
        tiles = draw.render_metatile(name, z, mx, my)
        svc.cache.put(name, z, tiles)
    return tiles[(x, y)]


def _scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    z, x, y = tile_index(view_args["z"], view_args["x"], view_args["y"])
    return tile_request("tiles.read", ctx, PRODUCT, z, x, y)


@bp.get("/hotspot/<z>/<x>/<y>")
@requires("tiles.read", _scope)
def hotspot_tile(z: str, x: str, y: str) -> Response:
    """/evaluation/hotspot/LEVEL/X/Y.png?from=&to=&class=: a hot-spot tile."""
    zi, xi, yi = tile_index(z, x, y)
    which = variant(request.args)
    note(resource=f"tile {PRODUCT}/{zi}/{xi}/{yi}", map=PRODUCT, level=zi, x=xi, y=yi,
         **which.as_json())  # fmt: skip
    svc = services().tiles()
    data = tile(svc, renderer(current_app, svc), which, zi, xi, yi)
    etag = hashlib.sha256(data).hexdigest()[:32]
    response = (
        Response(status=304)
        if etag in request.if_none_match
        else Response(data, mimetype="image/png")
    )
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
