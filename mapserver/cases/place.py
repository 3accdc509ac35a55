"""Where a case is: from what a person gives (an address, a grid or component code, a pixel
of a map picture, or inside the secure zone a point) to a point in the install's CRS and its
unit grid, community and street. The point never leaves; clients get codes, names and a
pixel position of the finest level."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import psycopg

from mapserver import geocode
from mapserver.errors import InvalidInput, NotFound
from mapserver.settings import Settings
from tiles.tile_grid import TILE_PX, TileGrid

KINDS = ("address", "grid", "component", "pixel", "point", "gps")
WGS84 = 4326
_PIXEL_KEYS = ("level", "x", "y", "col", "row")


class Place(NamedTuple):
    x: float
    y: float
    where: geocode.Location
    address: str
    component: geocode.ComponentInfo | None


class Pixel(NamedTuple):
    """A position in the map pictures: the finest level's tile and the pixel inside it."""

    level: int
    x: int
    y: int
    col: int
    row: int


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"place.pixel.{name} must be a non-negative integer")
    return value


def resolve(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid,
    spec: Any,
    allow_point: bool = False,
    allow_gps: bool = False,
) -> Place:
    """A place spec {address | grid | component | pixel | point | gps: …} (exactly one) →
    Place. `gps` ([longitude, latitude] in WGS84) only from a device's fix checked against
    its signed digest (mapserver.device.fix), never in clear in signed parameters."""
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise InvalidInput("place must be one of " + ", ".join(f"{{{k}: …}}" for k in KINDS))
    kind, value = next(iter(spec.items()))
    if kind == "address":
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput("place.address must be text")
        hit = geocode.geocode_address(conn, value)
        return Place(hit.x, hit.y, geocode.locate_point(conn, hit.x, hit.y), value, None)
    if kind == "grid":
        if not isinstance(value, str) or not re.fullmatch(r"\d{14,15}", value):
            raise InvalidInput("place.grid must be a unit grid code")
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM unit_grid"
            " WHERE code = %s) g",
            (value,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no unit grid {value}")
        return Place(row[0], row[1], geocode.locate_point(conn, row[0], row[1]), "", None)
    if kind == "component":
        if not isinstance(value, str):
            raise InvalidInput("place.component must be a component code")
        found = geocode.component_by_code(conn, settings, value)
        return Place(found.x, found.y, geocode.locate_point(conn, found.x, found.y), "", found)
    if kind == "pixel":
        if not isinstance(value, Mapping) or set(value) != set(_PIXEL_KEYS):
            raise InvalidInput("place.pixel needs level, x, y, col and row")
        level, tx, ty, col, line = (_int(value[k], k) for k in _PIXEL_KEYS)
        if not grid.valid(level, tx, ty) or col >= TILE_PX or line >= TILE_PX:
            raise InvalidInput("place.pixel is outside the tile matrix")
        px, py = grid.ground(level, tx, ty, col + 0.5, line + 0.5)
        return Place(px, py, geocode.locate_point(conn, px, py), "", None)
    if kind == "gps":
        if not allow_gps:
            raise InvalidInput("place.gps is taken only from a device (POST /device/v1/reports)")
        return _gps(conn, settings, value)
    if not allow_point:
        raise InvalidInput("a point is taken only inside the secure zone (citygrid case create)")
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidInput("place.point must be [x, y] in the install's CRS")
    return Place(float(value[0]), float(value[1]), geocode.locate_point(conn, *value), "", None)


def _gps(conn: psycopg.Connection, settings: Settings, value: Any) -> Place:
    """A WGS84 fix converted inside by PostGIS to the install's CRS, then located."""
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        or not (-180 <= value[0] <= 180 and -90 <= value[1] <= 90)
    ):
        raise InvalidInput("place.gps must be [longitude, latitude] in WGS84 degrees")
    row = conn.execute(
        "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s),"
        " %s), %s) AS p) t",
        (float(value[0]), float(value[1]), WGS84, settings.srid),
    ).fetchone()
    assert row is not None
    try:
        where = geocode.locate_point(conn, row[0], row[1])
    except NotFound:
        raise InvalidInput("place.gps: the fix lies in none of the district's unit grids") from None
    return Place(float(row[0]), float(row[1]), where, "", None)


def pixel_of(grid: TileGrid, x: float, y: float) -> Pixel:
    """Where a point shows in the finest level's pictures (what a client may know)."""
    z = len(grid.scales) - 1
    tx, ty, col, row = grid.locate(z, x, y)
    return Pixel(z, tx, ty, col, row)
