"""`citygrid import FILE --as grids`: unit grids drawn elsewhere, checked before they count.

The grids of a file must divide each community they name completely: codes of the
install's length whose community exists, each grid inside its community, no two grids
overlapping, no part of the community left without a grid. Differences narrower than the
tolerance are repaired as for boundaries (`mapserver.boundaries.check`); every wider one
is reported and nothing is imported. Grids are keyed by code: the file's grids replace the
grids of the communities it covers (`grids_build.replace_grids`), so importing it again
changes nothing, and components and addresses follow their grids.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

import psycopg
import shapely

from mapserver import boundaries, grids_build
from mapserver.boundaries import Area, BoundaryProblems, Level
from mapserver.errors import InvalidInput
from mapserver.settings import Settings

ATTRIBUTES = ("land_use", "management_level", "responsible")


class Covered(NamedTuple):
    imported: int
    notes: tuple[str, ...]


def grid_level(serial_digits: int) -> Level:
    return Level("unit_grid", 12 + serial_digits, "community", "unit grid", 12)


def _summary(community: str, areas: list[float]) -> str:
    return (
        f"community {community}: {len(areas)} grids, {min(areas):,.0f}–{max(areas):,.0f} m²"
        f" (median {statistics.median(areas):,.0f})"
    )


def import_grids(
    conn: psycopg.Connection,
    sources: dict[str, str | None],
    settings: Settings,
    origin: str,
    tolerance: float,
) -> Covered:
    """Check the staged grids and make them the grids of their communities."""
    rows = conn.execute(
        "SELECT n, ST_AsBinary(geom), coalesce(trim(attrs ->> %s), '') FROM import_staging"
        " ORDER BY n",
        (sources["code"],),
    ).fetchall()
    areas = [Area(n, code, code, shapely.from_wkb(bytes(wkb))) for n, wkb, code in rows]
    parents = {
        code.strip(): shapely.from_wkb(bytes(wkb))
        for code, wkb in conn.execute("SELECT code, ST_AsBinary(geom) FROM community")
    }
    if not parents:
        raise InvalidInput("import the communities first: there are none yet")
    level = grid_level(settings.grid_serial_digits)
    checked = boundaries.check(level, areas, parents, [], tolerance)
    if checked.problems:
        raise BoundaryProblems(
            f"{len(checked.problems)} problem(s) in the grids; nothing imported", checked.problems
        )
    by_community: dict[str, dict[str, shapely.Geometry]] = {}
    for a in checked.areas:
        by_community.setdefault(a.code[:12], {})[a.code] = a.geom
    notes = list(checked.repairs)
    for community, grids in sorted(by_community.items()):
        kept, (components, addresses) = grids_build.replace_grids(
            conn, community, grids, settings.srid, origin
        )
        notes.append(
            _summary(community, [g.area for g in grids.values()])
            + f", {kept} unchanged, {components} components and {addresses} addresses moved"
        )
    _attributes(conn, sources)
    return Covered(len(checked.areas), tuple(notes))


def _attributes(conn: psycopg.Connection, sources: dict[str, str | None]) -> None:
    """The file's land use, management level and responsible body of each grid."""
    for column in ATTRIBUTES:
        source = sources.get(column)
        if source is None:
            continue
        conn.execute(
            f"UPDATE unit_grid g SET {column} = coalesce(trim(s.attrs ->> %s), '')"
            " FROM import_staging s WHERE g.code = trim(s.attrs ->> %s)",
            (source, sources["code"]),
        )
