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
from collections.abc import Mapping
from typing import Any, NamedTuple

from flask import Blueprint, Response, request

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
_CLASS = re.compile(r"^(all|[ce][0-9]{2})\Z")
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


class CountedHotspotRenderer(HotspotRenderer):
    """The `hotspot` style drawn from counts handed in (a renderer of two zones: the cases
    are the gateway's, the unit grids' shapes are here): per unit grid code, the cases filed
    in the variant's period. One per drawing, as the counts change with every case."""

    def __init__(self, base: HotspotRenderer, counts: Mapping[str, int]):
        super().__init__(base.grid, base.srs, base.database_url, base.srid, base.metatile)
        self.counts = checked_counts(counts)

    def style(self, product: str) -> Style:
        if product not in self._styles:
            found = super().style(product)
            rows = counted_rows(self.counts)
            tables = tuple(_COUNTED.sub(lambda m: rows, t, count=1) for t in found.tables)
            if tables == found.tables:
                raise RuntimeError("styles/hotspot.xml lost its count of filed cases")
            self._styles[product] = Style(found.xml, tables)
        return self._styles[product]


# The style's count of filed cases per unit grid, replaced by the counts handed in.
_COUNTED = re.compile(
    r"\(SELECT f\.subject, count\(\*\)::float8 AS n FROM case_fact .*? GROUP BY f\.subject\)"
)
_CODE = re.compile(r"^[0-9]{14,15}\Z")
MAX_COUNTS = 200_000


def checked_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """Unit grid codes and whole counts only (they are written into SQL): else 400."""
    if not isinstance(counts, Mapping) or len(counts) > MAX_COUNTS:
        raise InvalidInput(f"counts are at most {MAX_COUNTS} unit grid codes with a count")
    out = {}
    for code, n in counts.items():
        if not (isinstance(code, str) and _CODE.match(code)):
            raise InvalidInput("counts are keyed by unit grid codes")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**31:
            raise InvalidInput("a count is a whole number")
        out[code] = n
    return out


def counted_rows(counts: Mapping[str, int]) -> str:
    """The counts as the style's sub-select (checked: digits and integers only)."""
    if not counts:
        return "(SELECT NULL::text AS subject, 0::float8 AS n WHERE false)"
    rows = ", ".join(f"('{code}', {int(n)}::float8)" for code, n in sorted(counts.items()))
    return f"(SELECT v.subject, v.n FROM (VALUES {rows}) v(subject, n))"


def counts(conn: Any, which: Variant) -> dict[str, int]:
    """The cases filed per unit grid in the variant's period and class (the style's own
    count, read where the cases are: the gateway's database)."""
    rows = conn.execute(
        """SELECT f.subject, count(*) FROM case_fact f JOIN city_case c ON c.id = f.case_id
           WHERE f.measure = 'filed' AND f.subject_kind = 'grid'
             AND f.day BETWEEN %(first)s AND %(last)s
             AND (%(cls)s = 'all' OR (left(c.kind, 1) = left(%(cls)s, 1)
                  AND c.major = substr(%(cls)s, 2)))
           GROUP BY f.subject""",
        {"first": which.period.first, "last": which.period.last, "cls": which.cls},
    ).fetchall()
    return {str(code): int(n) for code, n in rows}


_NAME = re.compile(r"^hotspot_[0-9]{8}_[0-9]{8}_(all|[ce][0-9]{2})\Z")


def checked_name(name: str) -> Variant:
    """A variant's cache name, as a renderer is handed it (else 400)."""
    if not _NAME.match(name):
        raise InvalidInput("not a hot-spot variant")
    try:
        return parse_variant(name)
    except ValueError:
        raise InvalidInput("not a hot-spot variant") from None


def local_renderer(settings: Any, svc: TileService) -> HotspotRenderer:
    """A hot-spot renderer for this tile service, as the read-only map role."""
    import psycopg

    url = settings.map_reader_database_url
    with psycopg.connect(url) as conn:
        srs = proj_string(conn, settings.srid)
    return HotspotRenderer(svc.grid, srs, url, settings.srid, svc.metatile)


def cached(svc: TileService, which: Variant, z: int, x: int, y: int) -> bytes | None:
    """A hot-spot tile still fresh in the cache, or None."""
    product = svc.check(PRODUCT, z, x, y)
    return svc.cache.get(which.cache_name, z, x, y, product.max_age)


def tile(svc: TileService, draw: HotspotRenderer, which: Variant, z: int, x: int, y: int) -> bytes:
    """One hot-spot tile from the cache, or its metatile drawn under the metatile's lock."""
    name = which.cache_name
    data = cached(svc, which, z, x, y)
    if data is not None:
        return data
    mx, my = svc.grid.metatile(z, x, y, svc.metatile)
    with svc.locks.hold(name, z, mx, my):
        data = cached(svc, which, z, x, y)
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
    found = services()

    def filed() -> dict[str, int]:  # asked only where the map is not with the cases
        with found.pool.connection() as conn:
            return counts(conn, which)

    data = found.tile_source().hotspot(which.cache_name, zi, xi, yi, filed)
    etag = hashlib.sha256(data).hexdigest()[:32]
    response = (
        Response(status=304)
        if etag in request.if_none_match
        else Response(data, mimetype="image/png")
    )
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
