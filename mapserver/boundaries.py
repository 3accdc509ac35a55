"""The administrative hierarchy from real boundaries: district → streets → communities.

`check` is pure (shapely over plain values): codes of the right shape and parent, each area
inside its parent, no overlaps between siblings, no gaps in a parent its children divide.
Differences narrower than the tolerance are digitising noise and repaired (snapped and
clipped to the parent, trimmed from the later sibling, a sliver gap given to its longest
neighbour); anything wider is a problem. Every repair and every problem is reported.
`import_boundaries` is the edge: the staged file in, the checked rows upserted by code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import psycopg
import shapely
from shapely.geometry.base import BaseGeometry

from mapserver.errors import InvalidInput


class Level(NamedTuple):
    table: str
    digits: int
    parent_table: str | None
    noun: str
    parent_digits: int = 0  # the parent's code length (default: 3 digits fewer)

    @property
    def parent_len(self) -> int:
        return self.parent_digits or self.digits - 3


LEVELS = {
    "district": Level("district", 6, None, "district"),
    "streets": Level("street", 9, "district", "street"),
    "communities": Level("community", 12, "street", "community"),
}


class Area(NamedTuple):
    n: int  # feature number in the file (1-based); 0 for a row already in the database
    code: str
    name: str
    geom: BaseGeometry


@dataclass
class Checked:
    areas: list[Area] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class BoundaryProblems(InvalidInput):
    """The file's problems, all of them; nothing was imported."""

    def __init__(self, message: str, report: list[str]):
        super().__init__(message)
        self.report = report


def _polygons(geom: BaseGeometry) -> BaseGeometry:
    """Only the polygonal part of a (repaired) geometry."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _narrow(geom: BaseGeometry, tolerance: float) -> bool:
    """Narrower than twice the tolerance everywhere: noise, not a real difference."""
    return bool(geom.is_empty or geom.buffer(-tolerance).is_empty)


NOISE_M = 0.005  # narrower than 1 cm everywhere: rounding of coordinates, not a difference


def _negligible(geom: BaseGeometry) -> bool:
    return bool(geom.is_empty or geom.area <= 0.01 or geom.buffer(-NOISE_M).is_empty)


def _m2(geom: BaseGeometry) -> str:
    return f"{geom.area:,.0f} m²"


def check_code(code: str, level: Level, parents: set[str] | None) -> str | None:
    """Why `code` cannot be a code of `level` (None: it can)."""
    if not (code.isascii() and code.isdigit()) or len(code) != level.digits:
        return f"code {code!r} is not {level.digits} digits"
    own = code[level.parent_len :]
    if level.digits > 6 and not own.strip("0"):
        return f"code {code}: part {own} is not a {level.noun}"
    if parents is not None and code[: level.parent_len] not in parents:
        return f"code {code}: no {level.parent_table} {code[: level.parent_len]}"
    return None


def check(
    level: Level,
    areas: list[Area],
    parents: dict[str, BaseGeometry],
    fixed: list[Area],
    tolerance: float,
) -> Checked:
    """Validate and repair the areas of one level; `fixed` are siblings already stored."""
    out = Checked()
    seen: dict[str, int] = {}
    accepted: list[Area] = list(fixed)
    for a in sorted(areas, key=lambda a: (a.code, a.n)):
        where = f"feature {a.n} ({a.code or 'no code'})"
        why = check_code(a.code, level, set(parents) if level.parent_table else None)
        if why:
            out.problems.append(f"{where}: {why}")
            continue
        if a.code in seen:
            out.problems.append(f"{where}: code {a.code} repeats feature {seen[a.code]}")
            continue
        seen[a.code] = a.n
        if not a.name:
            out.problems.append(f"{where}: no name")
        geom = _polygons(a.geom)
        if geom.is_empty:
            out.problems.append(f"{where}: no usable polygon")
            continue
        parent = parents.get(a.code[: level.parent_len]) if level.parent_table else None
        if parent is not None:
            outside = geom.difference(parent)
            if not _negligible(outside):
                if _narrow(outside, tolerance):
                    geom = _polygons(shapely.snap(geom, parent, tolerance).intersection(parent))
                    out.repairs.append(
                        f"{where}: snapped to its {level.parent_table}, {_m2(outside)} clipped"
                    )
                else:
                    best = max(parents, key=lambda c: parents[c].intersection(geom).area)
                    hint = (
                        f" (it lies mostly in {level.parent_table} {best})"
                        if best != a.code[: level.parent_len]
                        else ""
                    )
                    out.problems.append(
                        f"{where}: {_m2(outside)} lies outside {level.parent_table} "
                        f"{a.code[: level.parent_len]}{hint}"
                    )
                    continue
        for other in accepted:
            overlap = geom.intersection(other.geom)
            if _negligible(overlap):
                continue
            if _narrow(overlap, tolerance):
                geom = _polygons(geom.difference(other.geom))
                out.repairs.append(f"{where}: {_m2(overlap)} overlap with {other.code} trimmed")
            else:
                out.problems.append(f"{where}: overlaps {other.code} by {_m2(overlap)}")
        accepted.append(Area(a.n, a.code, a.name, geom))
    if level.parent_table:  # gaps too, even when there are other problems: all are listed
        accepted = _close_gaps(level, accepted, parents, tolerance, out)
    out.areas = [a for a in accepted if a.n > 0]
    return out


def _close_gaps(
    level: Level,
    accepted: list[Area],
    parents: dict[str, BaseGeometry],
    tolerance: float,
    out: Checked,
) -> list[Area]:
    """Each parent the file divides must be covered; sliver gaps go to a neighbour."""
    by_code = {a.code: a for a in accepted}
    for pcode in sorted({a.code[: level.parent_len] for a in accepted if a.n > 0}):
        children = sorted(c for c in by_code if c.startswith(pcode))
        gap = parents[pcode].difference(shapely.union_all([by_code[c].geom for c in children]))
        for part in sorted(shapely.get_parts(_polygons(gap)), key=lambda g: g.centroid.coords[0]):
            if _negligible(part):
                continue
            touching = [c for c in children if by_code[c].geom.distance(part) <= tolerance]
            if _narrow(part, tolerance) and touching:
                into = max(
                    touching,
                    key=lambda c: (by_code[c].geom.buffer(tolerance).intersection(part).area, c),
                )
                if by_code[into].n > 0:
                    a = by_code[into]
                    by_code[into] = Area(a.n, a.code, a.name, _polygons(a.geom.union(part)))
                    out.repairs.append(
                        f"{level.parent_table} {pcode}: gap {_m2(part)} closed into {into}"
                    )
                    continue
            near = ", ".join(touching) or "no " + level.noun
            out.problems.append(
                f"{level.parent_table} {pcode}: gap of {_m2(part)} covered by no {level.noun}"
                f" (next to {near})"
            )
    return [by_code[a.code] for a in accepted]


# -- the edge: staged rows in, checked rows out


def import_boundaries(
    conn: psycopg.Connection,
    kind: str,
    sources: dict[str, str | None],
    srid: int,
    district_code: str,
    origin: str,
    tolerance: float,
) -> Checked:
    """Check the staged features as `kind` and upsert them by code; BoundaryProblems when
    anything is wrong (the caller's transaction then rolls back)."""
    level = LEVELS[kind]
    rows = conn.execute(
        "SELECT n, ST_AsBinary(ST_GeomFromText(nullif(wkt, ''))),"
        " coalesce(trim(attrs ->> %s), ''), coalesce(trim(attrs ->> %s), '')"
        " FROM import_staging ORDER BY n",
        (sources["code"], sources["name"]),
    ).fetchall()
    areas = [
        Area(n, code, name, shapely.from_wkb(bytes(wkb)) if wkb else shapely.Polygon())
        for n, wkb, code, name in rows
    ]
    parents: dict[str, BaseGeometry] = {}
    if level.parent_table:
        parents = {
            code.strip(): shapely.from_wkb(bytes(wkb))
            for code, wkb in conn.execute(
                f"SELECT code, ST_AsBinary(geom) FROM {level.parent_table}"
            )
        }
        if not parents:
            raise InvalidInput(f"import the {level.parent_table} first: there is none yet")
    codes = [a.code for a in areas]
    fixed = [
        Area(0, code.strip(), name, shapely.from_wkb(bytes(wkb)))
        for code, name, wkb in conn.execute(
            f"SELECT code, name, ST_AsBinary(geom) FROM {level.table} WHERE NOT (code = ANY(%s))",
            (codes,),
        )
    ]
    checked = check(level, areas, parents, fixed, tolerance)
    if level.table == "district":
        for a in checked.areas:
            if a.code != district_code:
                checked.problems.append(
                    f"feature {a.n} ({a.code}): the settings serve district {district_code}"
                )
    if checked.problems:
        raise BoundaryProblems(
            f"{len(checked.problems)} problem(s) in the {kind}; nothing imported",
            checked.problems,
        )
    parent_col = {"street": "district_code", "community": "street_code"}.get(level.table)
    for a in checked.areas:
        cols = ["code", "name", "geom", "origin"]
        vals = [a.code, a.name, shapely.to_wkb(shapely.set_srid(a.geom, srid), include_srid=True)]
        if parent_col:
            cols.insert(1, parent_col)
            vals.insert(1, a.code[: level.parent_len])
        conn.execute(
            f"INSERT INTO {level.table} ({', '.join(cols)}) VALUES"
            f" ({', '.join(['%s'] * (len(vals) - 1))}, ST_Multi(%s::geometry), %s)"
            f" ON CONFLICT (code) DO UPDATE SET name = excluded.name, geom = excluded.geom,"
            " origin = excluded.origin",
            (*vals[:-1], vals[-1], origin),
        )
    return checked
