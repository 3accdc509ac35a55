"""The install's tile matrix: a secret origin drawn once, when the schema is created.

Tile indices count from the origin, so whoever knows the origin (and the public scale
ladder) turns every z/x/y and every pixel into a ground coordinate. The origin is therefore
drawn at random per install, inside PostgreSQL from its strong random source (so it is in
no statement text either), and lives only in the database (`tile_matrix`, migration 0010):
never in the README, a setting's default, a log line or a response.

Where it is drawn: west and north of everything the install's CRS can hold (the CRS's area
of use from PROJ, projected by PostGIS), by a random offset between `MARGIN_M` and
`MARGIN_M + SPREAD_M` in each axis, at millimetre resolution, so tile edges fall on no
round number. An attacker who knows the CRS, the scales and this code still does not know
the offset: z/x/y place a tile only to within `SPREAD_M` (200 km) in each direction. The
matrix is sized from the CRS alone (never from the drawn offsets, which it would leak), so
any district the CRS can hold lies inside it.

`draw` and `matrix_tiles` are pure; `crs_bounds` and `install_grid` are the edges.
"""

from __future__ import annotations

import math
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable
from importlib import util
from pathlib import Path
from typing import NamedTuple

import psycopg

from mapserver.errors import CityGridError, DatabaseUnavailable
from mapserver.settings import Settings
from tiles.tile_grid import PIXEL_M, SCALES, TILE_PX, BBox, TileGrid

MARGIN_M = 10_000.0  # at least this far west / north of the CRS's area of use
SPREAD_M = 200_000.0  # the offset beyond the margin is uniform over this range
_MM = 1000


class TileMatrix(NamedTuple):
    """Upper-left origin (CRS metres) and level-0 tiles per side of an install's matrix."""

    origin_x: float
    origin_y: float
    top_tiles: int

    def grid(self) -> TileGrid:
        return TileGrid(self.origin_x, self.origin_y, self.top_tiles)


def level0_span(scales: tuple[int, ...] = SCALES) -> float:
    return TILE_PX * scales[0] * PIXEL_M


def matrix_tiles(bounds: BBox, scales: tuple[int, ...] = SCALES) -> int:
    """Level-0 tiles per side that hold `bounds` plus the largest possible offset."""
    reach = max(bounds.maxx - bounds.minx, bounds.maxy - bounds.miny) + MARGIN_M + SPREAD_M
    return math.ceil(reach / level0_span(scales)) + 1


def draw(bounds: BBox, randbelow: Callable[[int], int] = secrets.randbelow) -> TileMatrix:
    """A random origin west and north of `bounds` (the CRS's projected area of use); the
    migration draws the same way inside PostgreSQL (`offset_sql`)."""
    spread = int(SPREAD_M * _MM)
    off_x = MARGIN_M + randbelow(spread) / _MM
    off_y = MARGIN_M + randbelow(spread) / _MM
    return TileMatrix(bounds.minx - off_x, bounds.maxy + off_y, matrix_tiles(bounds))


# -- edges: PROJ's database and PostGIS


def _proj_databases() -> list[Path]:
    """proj.db candidates: PROJ_DATA / PROJ_LIB, mapnik's bundled PROJ, the system's."""
    found = [Path(os.environ[k]) / "proj.db" for k in ("PROJ_DATA", "PROJ_LIB") if k in os.environ]
    spec = util.find_spec("mapnik")
    for location in (spec.submodule_search_locations or []) if spec else []:
        found.append(Path(location) / "share" / "proj" / "proj.db")
    found += [Path("/usr/share/proj/proj.db"), Path("/usr/local/share/proj/proj.db")]
    return [p for p in found if p.is_file()]


def area_of_use(auth_name: str, code: int) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) in degrees of a CRS, from PROJ's database."""
    for path in _proj_databases():
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                row = db.execute(
                    "SELECT e.west_lon, e.south_lat, e.east_lon, e.north_lat"
                    " FROM usage u JOIN extent e"
                    " ON e.auth_name = u.extent_auth_name AND e.code = u.extent_code"
                    " WHERE u.object_table_name IN ('projected_crs', 'compound_crs')"
                    " AND u.object_auth_name = ? AND u.object_code = ?"
                    " ORDER BY (e.east_lon - e.west_lon) * (e.north_lat - e.south_lat) DESC",
                    (auth_name, str(code)),
                ).fetchone()
        except sqlite3.Error:
            continue
        if row is not None:
            return float(row[0]), float(row[1]), float(row[2]), float(row[3])
    return None


def crs_bounds(conn: psycopg.Connection, srid: int) -> BBox:
    """The CRS's area of use, projected into the CRS by PostGIS."""
    row = conn.execute(
        "SELECT auth_name, auth_srid FROM spatial_ref_sys WHERE srid = %s", (srid,)
    ).fetchone()
    if row is None:
        raise CityGridError(f"srid: EPSG:{srid} is unknown to PostGIS")
    area = area_of_use(str(row[0]), int(row[1]))
    if area is None:
        raise CityGridError(
            f"srid: no area of use is known for EPSG:{srid}, so no tile origin can be drawn;"
            " set tile_origin_x and tile_origin_y"
        )
    west, south, east, north = area
    if east < west:  # crosses the antimeridian
        east += 360.0
    box = conn.execute(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent("
        " ST_Transform(ST_Segmentize(ST_MakeEnvelope(%s, %s, %s, %s, 4326), 0.05), %s)) AS e) s",
        (west, south, east, north, srid),
    ).fetchone()
    if box is None or box[0] is None or not all(math.isfinite(float(v)) for v in box):
        raise CityGridError(f"srid: the area of use of EPSG:{srid} does not project")
    return BBox(*(float(v) for v in box))


def offset_sql() -> str:
    """`draw`'s offset as a SQL expression, drawn by PostgreSQL from its strong random source
    (gen_random_uuid: 48 of its random bits), so that the drawn origin never appears in a
    statement's text, nor therefore in a server log of statements."""
    bits = "('x' || left(replace(gen_random_uuid()::text, '-', ''), 12))::bit(48)::bigint"
    return f"({MARGIN_M!r} + ({bits} % {int(SPREAD_M * _MM)}) / {float(_MM)!r})"


def render_migration(sql: str, conn: psycopg.Connection, srid: int) -> str:
    """Fill a migration's {{TILE_*}} placeholders: the CRS's (public) area and matrix size,
    and the expression that draws the secret offsets inside the database."""
    if "{{TILE_" not in sql:
        return sql
    bounds = crs_bounds(conn, srid)
    return (
        sql.replace("{{TILE_AREA_MINX}}", repr(bounds.minx))
        .replace("{{TILE_AREA_MAXY}}", repr(bounds.maxy))
        .replace("{{TILE_TOP_TILES}}", str(matrix_tiles(bounds)))
        .replace("{{TILE_OFFSET_M}}", offset_sql())
    )


def stored_matrix(conn: psycopg.Connection) -> TileMatrix:
    row = conn.execute("SELECT origin_x, origin_y, top_tiles FROM tile_matrix").fetchone()
    if row is None:
        raise CityGridError("the database has no tile matrix: run `citygrid db upgrade`")
    return TileMatrix(float(row[0]), float(row[1]), int(row[2]))


_cache: dict[tuple[str, Settings], TileGrid] = {}
_cache_lock = threading.Lock()


def install_grid(settings: Settings, url: str | None = None) -> TileGrid:
    """The install's TileGrid, read from the database once per process (per database).

    An explicit origin in the settings (an install that must keep an older origin) wins and
    needs no database. `url` is the connection to read with (default: the database URL);
    any role the migration granted SELECT on `tile_matrix` will do.
    """
    if settings.tile_origin_x is not None and settings.tile_origin_y is not None:
        return TileGrid(settings.tile_origin_x, settings.tile_origin_y, settings.tile_top_tiles)
    url = url or settings.database_url
    key = (url, settings)
    with _cache_lock:
        grid = _cache.get(key)
        if grid is None:
            try:
                with psycopg.connect(url) as conn:
                    grid = stored_matrix(conn).grid()
            except psycopg.errors.UndefinedTable:
                raise CityGridError(
                    "the database has no tile matrix: run `citygrid db upgrade`"
                ) from None
            except psycopg.OperationalError as exc:
                from mapserver.db import describe_url

                raise DatabaseUnavailable(describe_url(url), exc) from None
            _cache[key] = grid
        return grid


def forget() -> None:
    """Drop the per-process cache (for tests that rebuild a database under the same URL)."""
    with _cache_lock:
        _cache.clear()
