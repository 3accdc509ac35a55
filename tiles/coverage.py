"""`citygrid config check` against the database: is the install's CRS one the data fits?

A geographic CRS (degrees) cannot be a map's CRS; data imported into a CRS whose zone lies
thousands of kilometres away is reprojected without a word and lands far from anything
(a file at 25° E into EPSG:4548); and the tile matrix (tiles.origin) must hold the
district, or its tiles cannot be addressed. `findings` is pure over plain values; `check`
reads them from PostGIS.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import psycopg

from mapserver.settings import Settings
from tiles.tile_grid import BBox, TileGrid

FAR_M = 50_000.0  # data further than this outside the CRS's area of use is refused


class Facts(NamedTuple):
    srid: int
    geographic: bool
    area_of_use: BBox | None  # the CRS's, projected into it (None: unknown)
    data: BBox | None  # everything imported, in the install's CRS
    data_lonlat: tuple[float, float] | None  # the data's centre in degrees
    district: BBox | None
    grid: TileGrid | None
    explicit_origin: bool = False  # tile_origin_x / _y set in the settings


def _outside(inner: BBox, outer: BBox) -> float:
    """How far `inner` reaches beyond `outer`, in the CRS's units (0: inside)."""
    return max(
        outer.minx - inner.minx,
        outer.miny - inner.miny,
        inner.maxx - outer.maxx,
        inner.maxy - outer.maxy,
        0.0,
    )


def matrix_bbox(grid: TileGrid) -> BBox:
    top = grid.level(0)
    span = top.tile_span * top.matrix_width
    return BBox(grid.origin_x, grid.origin_y - span, grid.origin_x + span, grid.origin_y)


def findings(f: Facts) -> list[tuple[str, str]]:
    """(level, message) of every problem: 'error' refuses the settings."""
    out: list[tuple[str, str]] = []
    if f.geographic:
        out.append(
            (
                "error",
                f"srid: EPSG:{f.srid} is a geographic CRS (degrees); the maps need a projected"
                " CRS in metres whose zone holds the district",
            )
        )
        return out
    if f.data is not None and f.area_of_use is not None:
        far = _outside(f.data, f.area_of_use)
        if far > FAR_M:
            where = ""
            if f.data_lonlat:
                lon, lat = f.data_lonlat
                where = f" (around {abs(lon):.1f}°{'E' if lon >= 0 else 'W'}"
                where += f" {abs(lat):.1f}°{'N' if lat >= 0 else 'S'})"
            out.append(
                (
                    "error",
                    f"srid: the imported data{where} lies {far / 1000:,.0f} km outside the"
                    f" area of use of EPSG:{f.srid}: choose a CRS whose zone holds it",
                )
            )
    if f.district is not None and f.grid is not None:
        beyond = _outside(f.district, matrix_bbox(f.grid))
        if beyond > 0:
            todo = (
                "change tile_origin_x / tile_origin_y / tile_top_tiles in the settings, or"
                " remove them to use the drawn origin"
                if f.explicit_origin
                else "run `citygrid tiles redraw-origin --yes` (draws a new secret origin from"
                " the district and drops every cached tile), then restart the services and"
                " seed again"
            )
            out.append(
                (
                    "error",
                    f"tile matrix: the district reaches {beyond / 1000:,.1f} km beyond the"
                    " install's tile matrix, so those tiles cannot be addressed (the origin"
                    f" is fixed once drawn and never follows the district silently): {todo}",
                )
            )
    return out


_EXTENT = """SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e),
                    ST_X(c), ST_Y(c)
             FROM (SELECT ST_Extent(geom) AS e FROM ({tables}) t) s,
                  LATERAL (SELECT ST_Transform(ST_SetSRID(ST_Centroid(e::geometry), %s), 4326)
                           AS c) p"""  # noqa: E501
_DATA_TABLES = ("district", "building", "road_line", "unit_grid", "address")


def _bbox(row: tuple | None) -> BBox | None:  # type: ignore[type-arg]
    if row is None or row[0] is None:
        return None
    return BBox(*(float(v) for v in row[:4]))


def facts(conn: psycopg.Connection, settings: Settings) -> Facts:
    from tiles import origin

    srid = settings.srid
    row = conn.execute("SELECT srtext FROM spatial_ref_sys WHERE srid = %s", (srid,)).fetchone()
    text = str(row[0]) if row else ""
    geographic = text.startswith(("GEOGCS", "GEOGCRS"))
    area = None
    if not geographic:
        try:
            area = origin.crs_bounds(conn, srid)
        except Exception:  # no area of use known: nothing to compare with
            area = None
    tables = " UNION ALL ".join(f"SELECT geom FROM {t}" for t in _DATA_TABLES)
    data_row = conn.execute(_EXTENT.format(tables=tables), (srid,)).fetchone()
    data = _bbox(data_row)
    lonlat = None
    if data_row is not None and data_row[4] is not None:
        lonlat = (float(data_row[4]), float(data_row[5]))
    district = _bbox(
        conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(geom) AS e FROM district) s"
        ).fetchone()
    )
    grid: TileGrid | None
    explicit = settings.tile_origin_x is not None and settings.tile_origin_y is not None
    if explicit:
        grid = TileGrid(settings.tile_origin_x, settings.tile_origin_y, settings.tile_top_tiles)  # type: ignore[arg-type]
    else:
        try:
            grid = origin.stored_matrix(conn).grid()
        except (origin.NoTileMatrix, psycopg.Error):  # no district yet: drawn with it
            grid = None
    if lonlat and not all(math.isfinite(v) for v in lonlat):
        lonlat = None
    return Facts(srid, geographic, area, data, lonlat, district, grid, explicit)


def check(settings: Settings) -> list[tuple[str, str]]:
    """The findings for the install's database; a warning when it cannot be read yet."""
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
            migrated = conn.execute("SELECT to_regclass('install_info') IS NOT NULL").fetchone()
            if not migrated or not migrated[0]:
                return [("warning", "database: not migrated yet (citygrid db upgrade)")]
            row = conn.execute("SELECT value FROM install_info WHERE key = 'srid'").fetchone()
            if row is not None and int(row[0]) != settings.srid:
                return [
                    (
                        "error",
                        f"srid: the database holds EPSG:{row[0]} but the settings say"
                        f" {settings.srid}",
                    )
                ]
            return findings(facts(conn, settings))
    except psycopg.Error:
        return [("warning", "database: not reachable; the CRS and data checks were skipped")]
