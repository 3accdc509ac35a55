"""Geocoding (地理编码) inside the secure zone: address ↔ point ↔ grid, community, street;
grid and component codes ↔ their features.

Text handling is pure (`address_text`); this module is the SQL edge. Results carry
coordinates in the install's CRS and are for the secure zone only.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import psycopg

from mapserver import address_text, codes, locales
from mapserver.errors import NotFound
from mapserver.settings import Settings


class Location(NamedTuple):
    grid_code: str
    community_code: str
    community_name: str
    street_code: str
    street_name: str


class AddressHit(NamedTuple):
    query: str
    kind: str  # house | landmark
    matched_text: str
    x: float
    y: float
    grid_code: str
    community_code: str
    street_code: str
    score: float  # 1.0 exact; lower for variant spellings, fuzzy names, nearby numbers


class GridInfo(NamedTuple):
    code: str
    community_code: str
    street_code: str
    area_m2: float
    wkt: str


class ComponentInfo(NamedTuple):
    code: str
    major: str
    minor: str
    class_name: str
    name: str
    state: str
    grid_code: str
    responsible_dept: str
    owner_dept: str
    maintainer_dept: str
    data_source: str
    changed_on: dt.date
    x: float
    y: float


def locate_point(conn: psycopg.Connection, x: float, y: float) -> Location:
    """The grid, community and street containing a point of the install's CRS."""
    row = conn.execute(
        """SELECT g.code, c.code, c.name, s.code, s.name
           FROM unit_grid g
           JOIN community c ON c.code = g.community_code
           JOIN street s ON s.code = c.street_code
           WHERE ST_Covers(g.geom, ST_SetSRID(ST_MakePoint(%s, %s), ST_SRID(g.geom)))
           ORDER BY g.code LIMIT 1""",
        (x, y),
    ).fetchone()
    if row is None:
        raise NotFound("the point lies in no unit grid")
    return Location(*row)


def _district_name(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT name FROM district ORDER BY code LIMIT 1").fetchone()
    return row[0] if row else ""


def geocode_address(conn: psycopg.Connection, text: str) -> AddressHit:
    """Road + house number, or a landmark name, to its point and grid."""
    parsed = address_text.parse(text, _district_name(conn))
    if parsed.road is not None and parsed.number is not None:
        return _house(conn, text, parsed.road, parsed.number, parsed.suffix)
    return _landmark(conn, text, parsed.landmark or "")


def _house(
    conn: psycopg.Connection, query: str, road: str, number: int, suffix: str = ""
) -> AddressHit:
    roads = [
        r
        for (r,) in conn.execute(
            "SELECT DISTINCT road_name FROM address WHERE kind = 'house'"
            " AND grid_code IS NOT NULL"  # one outside every unit grid is no place of ours
        ).fetchall()
    ]
    match = address_text.best_match(road, roads)
    if match is None:
        raise NotFound(f"no road like {road!r}")
    name, score = match
    # The number itself (with its letter: 12a, not 12, where both stand; 12 where no 12c
    # stands), else the nearest number on the same side of that road.
    written, bare = (f"(^|[^0-9]){number}{s}($|[^0-9A-Za-z])" for s in (suffix, ""))
    row = conn.execute(
        """SELECT a.full_text, ST_X(a.geom), ST_Y(a.geom), a.grid_code, g.community_code,
                  left(g.community_code, 9), a.house_number
           FROM address a JOIN unit_grid g ON g.code = a.grid_code
           WHERE a.kind = 'house' AND a.road_name = %s
           ORDER BY (a.house_number %% 2 <> %s %% 2), abs(a.house_number - %s),
                    a.full_text !~* %s, a.full_text !~* %s, a.id
           LIMIT 1""",
        (name, number, number, written, bare),
    ).fetchone()
    if row is None:
        raise NotFound(f"no house numbers on {name}")
    if row[6] != number:
        score = round(score * 0.5, 3)
    return AddressHit(query, "house", row[0], row[1], row[2], row[3], row[4], row[5], score)


def _landmark(conn: psycopg.Connection, query: str, name: str) -> AddressHit:
    names = [
        n
        for (n,) in conn.execute(
            "SELECT name FROM address WHERE kind = 'landmark' AND grid_code IS NOT NULL"
        ).fetchall()
    ]
    match = address_text.best_match(name, names, key=str.casefold, cutoff=0.5)
    if match is None:
        raise NotFound(f"no address or landmark like {name!r}")
    found, score = match
    row = conn.execute(
        """SELECT a.full_text, ST_X(a.geom), ST_Y(a.geom), a.grid_code, g.community_code,
                  left(g.community_code, 9)
           FROM address a JOIN unit_grid g ON g.code = a.grid_code
           WHERE a.kind = 'landmark' AND a.name = %s ORDER BY a.id LIMIT 1""",
        (found,),
    ).fetchone()
    if row is None:  # its grid went between the two reads
        raise NotFound(f"no address or landmark like {name!r}")
    return AddressHit(query, "landmark", row[0], row[1], row[2], row[3], row[4], row[5], score)


def _districts(conn: psycopg.Connection) -> set[str]:
    return {c for (c,) in conn.execute("SELECT code FROM district").fetchall()}


def grid_by_code(conn: psycopg.Connection, settings: Settings, code: str) -> GridInfo:
    parsed = codes.parse_grid_code(code, settings.grid_serial_digits, _districts(conn))
    row = conn.execute(
        "SELECT code, community_code, area_m2, ST_AsText(geom) FROM unit_grid WHERE code = %s",
        (str(parsed),),
    ).fetchone()
    if row is None:
        raise NotFound(f"no unit grid {parsed}")
    return GridInfo(row[0], row[1], parsed.street_code, row[2], row[3])


def component_by_code(conn: psycopg.Connection, settings: Settings, code: str) -> ComponentInfo:
    classes = {
        codes.ClassCode(a, b)
        for a, b in conn.execute("SELECT major, minor FROM component_class").fetchall()
    }
    parsed = codes.parse_component_code(
        code, settings.component_minor_digits, _districts(conn), classes
    )
    row = conn.execute(
        """SELECT c.code, c.major, c.minor, k.name, c.name, c.state, c.grid_code,
                  c.responsible_dept, c.owner_dept, c.maintainer_dept, c.data_source,
                  c.changed_on, ST_X(c.geom), ST_Y(c.geom)
           FROM component c JOIN class_text(%s) k
                ON k.kind = 'component' AND (k.major, k.minor) = (c.major, c.minor)
           WHERE c.code = %s""",
        (locales.get(settings.locale).code, str(parsed)),
    ).fetchone()
    if row is None:
        raise NotFound(f"no component {parsed}")
    return ComponentInfo(*row)
