"""`citygrid import FILE --as addresses`: the geocoder's address table from a GIS file.

Each feature gives a road and a house number, a landmark, or both (points, or polygons
such as buildings whose inner point is taken). A house number must start with digits
("11", "11a", "52-54": the number is 11, 52; the full text keeps what the file wrote).
The full text follows the install's locale ("中关村大街27号", "Tikankatu 11"). Each address
gets the unit grid holding it; the staged rows are checked first and refused naming the
first bad feature.
"""

from __future__ import annotations

import string
from pathlib import Path

import psycopg

from mapserver import locales
from mapserver.errors import InvalidInput
from mapserver.settings import Settings

_STAGED = """CREATE TEMP TABLE import_address ON COMMIT DROP AS
SELECT n, {source_id} AS source_id,
       coalesce(trim(attrs ->> %(road)s), '') AS road,
       coalesce(translate(trim(attrs ->> %(number)s), '０１２３４５６７８９', '0123456789'), '')
           AS number,  -- full-width digits (２７号), common in Chinese text, as ASCII
       coalesce(trim(attrs ->> %(landmark)s), '') AS landmark,
       ST_SetSRID(CASE WHEN GeometryType(geom) LIKE '%%POLYGON'
                       THEN ST_PointOnSurface(geom) ELSE geom END, %(srid)s) AS geom
FROM import_staging"""


def _refuse_bad(conn: psycopg.Connection, path: Path) -> None:
    checks = (
        ("road <> '' AND number = ''", "has a road but no house number"),
        ("road = '' AND number <> ''", "has a house number but no road"),
        ("number <> '' AND number !~ '^[0-9]+'", "house number does not start with digits"),
        ("number ~ '^0+([^0-9]|$)'", "house number must be positive"),
        ("length(ltrim(substring(number FROM '^[0-9]+'), '0')) > 9", "house number is too large"),
        ("road = '' AND landmark = ''", "has neither road and house number nor landmark"),
    )
    for where, why in checks:
        row = conn.execute(
            f"SELECT n, number FROM import_address WHERE {where} ORDER BY n LIMIT 1"
        ).fetchone()
        if row:
            shown = f" ({row[1][:40]!r})" if row[1] else ""
            raise InvalidInput(f"{path.name}: feature {row[0]}: {why}{shown}")


def _full_text(template: str) -> tuple[str, list[str]]:
    """The locale's address template ("{road}{number}号") as an SQL concat of its literal
    parts (parameters) and the columns road and number: one pass, so a road named
    "{number}路" is written as given."""
    sql, params = [], []
    for literal, field, _, _ in string.Formatter().parse(template):
        if literal:
            sql.append("%s::text")
            params.append(literal)
        if field in ("road", "number"):
            sql.append(field)
    return f"concat({', '.join(sql)})", params


def insert(
    conn: psycopg.Connection,
    sources: dict[str, str | None],
    settings: Settings,
    origin: str,
    path: Path,
    keyed: bool,
) -> tuple[int, list[str]]:
    """Insert the staged addresses; returns the rows added and notes."""
    conn.execute(
        _STAGED.format(source_id="source_id" if keyed else "NULL::text"),
        {
            "road": sources.get("road_name") or "",
            "number": sources.get("house_number") or "",
            "landmark": sources.get("landmark") or "",
            "srid": settings.srid,
        },
    )
    _refuse_bad(conn, path)
    locale = locales.get(settings.locale)
    grid = (
        "(SELECT g.code FROM unit_grid g WHERE ST_Covers(g.geom, a.geom) ORDER BY g.code LIMIT 1)"
    )
    full_text, parts = _full_text(locale.address)
    houses = conn.execute(
        f"""INSERT INTO address (kind, road_name, house_number, name, full_text, grid_code,
                                 geom, origin, source_id)
            SELECT 'house', road, substring(number FROM '^[0-9]+')::integer, landmark,
                   {full_text}, {grid}, geom, %s, source_id
            FROM import_address a WHERE road <> '' ORDER BY n""",
        (*parts, origin),
    ).rowcount
    landmarks = conn.execute(
        f"""INSERT INTO address (kind, name, full_text, grid_code, geom, origin, source_id)
            SELECT 'landmark', landmark, landmark, {grid}, geom, %s, source_id
            FROM import_address a WHERE landmark <> '' ORDER BY n""",
        (origin,),
    ).rowcount
    notes = []
    row = conn.execute(
        "SELECT count(*) FROM import_address WHERE number !~ '^[0-9]+$' AND number <> ''"
    ).fetchone()
    if row and row[0]:
        notes.append(
            f"{row[0]} house number(s) with more than digits (11a, 52-54): found by their"
            " leading number, written in full"
        )
    # Unplaced: inside the district (grids build places them) or outside it (never placed:
    # often a file in another CRS than it says, or than --s-srs).
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM district)
                                      OR EXISTS (SELECT 1 FROM district d
                                                 WHERE ST_Covers(d.geom, a.geom))),
                  count(*)
           FROM address a WHERE a.origin = %s AND a.grid_code IS NULL""",
        (origin,),
    ).fetchone()
    if row and row[0]:
        notes.append(f"{row[0]} address(es) lie in no unit grid yet (grids build places them)")
    if row and row[1] > row[0]:
        notes.append(
            f"{row[1] - row[0]} address(es) lie outside the district and will never be placed"
            " (is the file's CRS what it says, or --s-srs?)"
        )
    conn.execute("DROP TABLE import_address")
    return houses + landmarks, notes
