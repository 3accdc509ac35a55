"""Where a case is: from what a person gives (an address, a grid or component code, a pixel
of a map picture, or inside the secure zone a point) to a point in the install's CRS and its
unit grid, community and street. The point never leaves; clients get codes, names and a
pixel position of the finest level."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import psycopg

from mapserver import geocode, text_limits
from mapserver.errors import InvalidInput, NotFound, OutsideDistrict
from mapserver.settings import Settings
from tiles.tile_grid import TILE_PX, TileGrid

KINDS = ("address", "address_id", "grid", "component", "pixel", "point", "gps")
WGS84 = 4326
_PIXEL_KEYS = ("level", "x", "y", "col", "row")
ADDRESS = text_limits.Limit("place.address", 200)  # kept as the case's address: as Open311's


class Place(NamedTuple):
    """Where a case is. `x`, `y`: its point in the install's CRS, known only inside the
    secure zone (None on a gateway of two zones); `pixel`: its global pixel (column, row)
    of the finest level (what a client may know); `area_m2`: its unit grid's area."""

    x: float | None
    y: float | None
    where: geocode.Location
    address: str
    component: geocode.ComponentInfo | None
    pixel: tuple[int, int] | None = None
    area_m2: float | None = None


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
        ADDRESS.check(value)
        hit = geocode.geocode_address(conn, value)
        return Place(hit.x, hit.y, geocode.locate_point(conn, hit.x, hit.y), value, None)
    if kind == "address_id":  # an address of the map's table, by its number (Open311)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise InvalidInput("place.address_id must be an address's number")
        row = conn.execute(
            "SELECT full_text, ST_X(geom), ST_Y(geom) FROM address WHERE id = %s", (value,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no address {value}")
        where = geocode.locate_point(conn, row[1], row[2])
        return Place(float(row[1]), float(row[2]), where, str(row[0]), None)
    if kind == "grid":
        if not isinstance(value, str) or not re.fullmatch(r"[0-9]{14,15}", value):
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
        raise OutsideDistrict(
            "place.gps: the fix lies in none of the district's unit grids"
        ) from None
    return Place(float(row[0]), float(row[1]), where, "", None)


def pixel_of(grid: TileGrid, x: float, y: float) -> Pixel:
    """Where a point shows in the finest level's pictures (what a client may know)."""
    z = len(grid.scales) - 1
    tx, ty, col, row = grid.locate(z, x, y)
    return Pixel(z, tx, ty, col, row)


# -- a place in pixels: what a gateway of two zones keeps and what crosses between the zones


def global_pixel(grid: TileGrid, x: float, y: float) -> tuple[int, int]:
    """The finest level's pixel (column, row from the grid's origin) showing point (x, y)."""
    at = pixel_of(grid, x, y)
    return at.x * TILE_PX + at.col, at.y * TILE_PX + at.row


def pixel_at(finest: int, gx: int, gy: int) -> Pixel:
    """The Pixel (tile and pixel inside it) of the finest level's global pixel (gx, gy)."""
    return Pixel(finest, gx // TILE_PX, gy // TILE_PX, gx % TILE_PX, gy % TILE_PX)


def finer(z: int, gx: float, gy: float, finest: int) -> tuple[int, int]:
    """The finest level's pixel under point (gx, gy) of level z's pixel matrix (levels halve
    their resolution each step and share their origin)."""
    k = 2 ** (finest - z)
    return int(gx * k), int(gy * k)


def of_pixel_spec(value: Any, finest: int, valid: Any) -> tuple[int, int]:
    """A `{"pixel": {level, x, y, col, row}}` place's finest global pixel (its centre's)."""
    if not isinstance(value, Mapping) or set(value) != set(_PIXEL_KEYS):
        raise InvalidInput("place.pixel needs level, x, y, col and row")
    level, tx, ty, col, line = (_int(value[k], k) for k in _PIXEL_KEYS)
    if not valid(level, tx, ty) or col >= TILE_PX or line >= TILE_PX:
        raise InvalidInput("place.pixel is outside the tile matrix")
    return finer(level, tx * TILE_PX + col + 0.5, ty * TILE_PX + line + 0.5, finest)


def to_wire(found: Place) -> dict[str, Any]:
    """A place as the renderer answers it to the gateway: codes, names, the unit grid's
    area and the finest pixel; never the point (nor a component's)."""
    component = None
    if found.component is not None:
        component = {k: v for k, v in found.component._asdict().items() if k not in ("x", "y")}
        component["changed_on"] = found.component.changed_on.isoformat()
    return {
        "where": found.where._asdict(),
        "address": found.address,
        "component": component,
        "pixel": list(found.pixel) if found.pixel is not None else None,
        "area_m2": found.area_m2,
    }


def from_wire(doc: Mapping[str, Any]) -> Place:
    """The renderer's answer as a Place without a point (a component's x, y are NaN)."""
    import datetime as dt
    import math

    try:
        where = geocode.Location(**{k: str(v) for k, v in doc["where"].items()})
        comp = doc.get("component")
        component = None
        if comp is not None:
            values = dict(comp, changed_on=dt.date.fromisoformat(comp["changed_on"]))
            component = geocode.ComponentInfo(**values, x=math.nan, y=math.nan)
        gx, gy = (int(v) for v in doc["pixel"])
        area = doc.get("area_m2")
        return Place(
            None, None, where, str(doc.get("address", "")), component, (gx, gy),
            float(area) if area is not None else None,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the renderer's place is malformed ({type(exc).__name__})") from None


class GridSpot(NamedTuple):
    """A unit grid in the finest level's pixels: its street, a pixel inside it (its point on
    surface) and its bounding box (left, top, right, bottom, inclusive)."""

    street: str
    centre: tuple[int, int]
    box: tuple[int, int, int, int]


def locate(
    conn: psycopg.Connection, settings: Settings, grid: TileGrid, spec: Any, allow_gps: bool = False
) -> Place:
    """`resolve` where the map is, with the finest pixel and the unit grid's area added
    (what the gateway keeps of a case's place)."""
    found = resolve(conn, settings, grid, spec, allow_gps=allow_gps)
    assert found.x is not None and found.y is not None
    row = conn.execute(
        "SELECT area_m2 FROM unit_grid WHERE code = %s", (found.where.grid_code,)
    ).fetchone()
    area = float(row[0]) if row is not None else None
    return found._replace(pixel=global_pixel(grid, found.x, found.y), area_m2=area)


def grid_spot(conn: psycopg.Connection, grid: TileGrid, code: str) -> GridSpot | None:
    """Where unit grid `code` lies in the finest level's pixels; None if there is none."""
    if not re.fullmatch(r"[0-9]{14,15}", code):
        raise InvalidInput("a unit grid code is 14 or 15 digits")
    row = conn.execute(
        "SELECT ST_X(p), ST_Y(p), ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom),"
        " street_code FROM (SELECT ST_PointOnSurface(g.geom) AS p, g.geom, m.street_code"
        " FROM unit_grid g JOIN community m ON m.code = g.community_code WHERE g.code = %s) u",
        (code,),
    ).fetchone()
    if row is None:
        return None
    px, py, minx, miny, maxx, maxy = (float(v) for v in row[:6])
    left, top = global_pixel(grid, minx, maxy)
    right, bottom = global_pixel(grid, maxx, miny)
    return GridSpot(str(row[6]), global_pixel(grid, px, py), (left, top, right, bottom))
