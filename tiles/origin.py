"""The install's tile matrix: a secret origin drawn once, from the district's extent.

Tile indices count from the origin, so whoever knows the origin (and the public scale
ladder) turns every z/x/y and every pixel into a ground coordinate. The origin is therefore
drawn at random per install, inside PostgreSQL from its strong random source (so it is in
no statement text either), and lives only in the database (`tile_matrix`, migrations 0010
and 0030): never in the README, a setting's default, a log line or a response.

Where it is drawn: when the first district row is stored (a trigger of migration 0030),
west and north of the district's extent by a random offset between `MARGIN_M` and
`MARGIN_M + SPREAD_M` in each axis, at millimetre resolution, so tile edges fall on no
round number. The matrix is sized from the district's extent rounded up to `QUANTUM_M`
plus both margins and the spread (never from the drawn offsets, which it would leak), so
the district, and anything within `MARGIN_M` of it, always lies inside. An attacker who
knows the scales and this code learns from z/x/y only positions relative to the district,
never where the district is.

The row is fixed once drawn: a district replaced later by a larger one is not followed
silently (tiles cached and indices known to clients would move); `config check` names the
misfit and `citygrid tiles redraw-origin` draws again on purpose. Installs migrated before
0030 with a district keep their origin, drawn by 0010 from the CRS's area of use.

`draw` and `matrix_tiles` are pure; `crs_bounds`, `redraw` and `install_grid` are the edges.
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

MARGIN_M = 10_000.0  # at least this far west / north of the district (and east / south)
SPREAD_M = 200_000.0  # the offset beyond the margin is uniform over this range
QUANTUM_M = 100_000.0  # the district's size is rounded up to this before sizing the matrix
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
    """Level-0 tiles per side that hold `bounds` (rounded up to QUANTUM_M) plus the largest
    possible offset and a margin beyond it (what migration 0030's tile_matrix_draw does)."""
    side = max(bounds.maxx - bounds.minx, bounds.maxy - bounds.miny)
    reach = math.ceil(side / QUANTUM_M) * QUANTUM_M + 2 * MARGIN_M + SPREAD_M
    return math.ceil(reach / level0_span(scales)) + 1


def draw(bounds: BBox, randbelow: Callable[[int], int] = secrets.randbelow) -> TileMatrix:
    """A random origin west and north of `bounds` (the district's extent); the database
    draws the same way (migration 0030's tile_matrix_draw with `offset_sql`)."""
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
    """Fill a migration's {{TILE_*}} placeholders: public constants (margins, spread, the
    level-0 tile span), the CRS's area for 0010 and the expression that draws the secret
    offsets inside the database."""
    if "{{TILE_" not in sql:
        return sql
    if "{{TILE_AREA_" in sql:
        try:
            bounds = crs_bounds(conn, srid)
        except CityGridError:
            if _has_district(conn):
                raise
            # a fresh database: 0030 drops this matrix before it addresses anything
            bounds = BBox(0.0, 0.0, 0.0, 0.0)
        sql = (
            sql.replace("{{TILE_AREA_MINX}}", repr(bounds.minx))
            .replace("{{TILE_AREA_MAXY}}", repr(bounds.maxy))
            .replace("{{TILE_TOP_TILES}}", str(matrix_tiles(bounds)))
        )
    return (
        sql.replace("{{TILE_OFFSET_M}}", offset_sql())
        .replace("{{TILE_MARGIN_M}}", repr(MARGIN_M))
        .replace("{{TILE_SPREAD_M}}", repr(SPREAD_M))
        .replace("{{TILE_QUANTUM_M}}", repr(QUANTUM_M))
        .replace("{{TILE_LEVEL0_SPAN}}", repr(level0_span()))
    )


def _has_district(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT to_regclass('district') IS NOT NULL AND EXISTS (SELECT 1 FROM district)"
    ).fetchone()
    return bool(row and row[0])


class NoTileMatrix(CityGridError):
    """No district has been stored yet, so no origin has been drawn: nothing to address."""

    status = 503
    code = "no_district"

    def __init__(self) -> None:
        super().__init__(
            "the install has no district yet, so no tile origin has been drawn: import one"
            " (citygrid import FILE --as district) or build the demo (citygrid demo)"
        )


def stored_matrix(conn: psycopg.Connection) -> TileMatrix:
    row = conn.execute("SELECT origin_x, origin_y, top_tiles FROM tile_matrix").fetchone()
    if row is None:
        raise NoTileMatrix()
    return TileMatrix(float(row[0]), float(row[1]), int(row[2]))


def basis(conn: psycopg.Connection) -> str | None:
    """What the stored origin was drawn from: 'district' or (before 0030) 'crs_area'."""
    row = conn.execute("SELECT basis FROM tile_matrix").fetchone()
    return str(row[0]) if row else None


def redraw(conn: psycopg.Connection) -> TileMatrix:
    """Draw the origin again from today's district, on purpose (`citygrid tiles
    redraw-origin`): every cached tile and every tile index a client holds is void after
    it. Runs as the table's owner, in the caller's transaction."""
    if not _has_district(conn):
        raise NoTileMatrix()
    conn.execute("ALTER TABLE tile_matrix DISABLE TRIGGER tile_matrix_fixed")
    conn.execute("DELETE FROM tile_matrix")
    conn.execute("ALTER TABLE tile_matrix ENABLE TRIGGER tile_matrix_fixed")
    conn.execute("SELECT tile_matrix_draw()")
    return stored_matrix(conn)


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
