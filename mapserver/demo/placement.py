"""Where `citygrid demo` puts its district: inside the install CRS's area of use.

The plan is drawn around a centre in the install's CRS metres. EPSG:4548 (the default CRS)
keeps the documented spot, Haidian in Beijing, where the demo's names and district code
belong; any other projected CRS gets the middle of its area of use (PROJ's longitude /
latitude box, the middle point projected by PostGIS), so the district lies where the CRS is
valid whatever zone it is. `citygrid demo --at X,Y` chooses the centre by hand.
"""

from __future__ import annotations

import math

import psycopg

from mapserver.demo.layout import CENTRE_X, CENTRE_Y
from mapserver.errors import InvalidInput

HAIDIAN_SRID = 4548
HAIDIAN = (CENTRE_X, CENTRE_Y)


def middle(west: float, south: float, east: float, north: float) -> tuple[float, float]:
    """The middle of a longitude / latitude box, across the antimeridian too."""
    if east < west:
        east += 360.0
    lon = (west + east) / 2
    return (lon - 360.0 if lon > 180.0 else lon), (south + north) / 2


def centre(conn: psycopg.Connection, srid: int) -> tuple[float, float]:
    """The demo district's centre in EPSG:`srid` metres."""
    if srid == HAIDIAN_SRID:
        return HAIDIAN
    from tiles.origin import area_of_use

    row = conn.execute(
        "SELECT auth_name, auth_srid FROM spatial_ref_sys WHERE srid = %s", (srid,)
    ).fetchone()
    area = area_of_use(str(row[0]), int(row[1])) if row else None
    if area is None:
        raise InvalidInput(
            f"no area of use is known for EPSG:{srid}, so the demo cannot choose where to put"
            " its district: give its centre with --at X,Y (metres in the install's CRS)"
        )
    lon, lat = middle(*area)
    xy = conn.execute(
        "SELECT ST_X(p), ST_Y(p) FROM ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s) p",
        (lon, lat, srid),
    ).fetchone()
    if xy is None or not all(v is not None and math.isfinite(float(v)) for v in xy):
        raise InvalidInput(f"the middle of EPSG:{srid}'s area of use does not project")
    return round(float(xy[0])), round(float(xy[1]))


def checked(conn: psycopg.Connection, srid: int, at: tuple[float, float]) -> tuple[float, float]:
    """`--at`, refused unless it lies in the CRS's area of use (a district elsewhere is
    what `config check` refuses afterwards, and 1e300 met the generator as a traceback)."""
    from mapserver.errors import CityGridError
    from tiles.origin import crs_bounds

    try:
        area = crs_bounds(conn, srid)
    except CityGridError:  # no area of use known: nothing to hold it to
        return at
    x, y = at
    far = max(area.minx - x, area.miny - y, x - area.maxx, y - area.maxy, 0.0)
    if far > 0:
        by = f"{far / 1000:,.0f} km" if far < 1e7 else "more than 10,000 km"
        raise InvalidInput(
            f"--at lies {by} outside the area of use of EPSG:{srid}: give a centre inside it"
            " (metres in the install's CRS)"
        )
    return at
