"""`citygrid grids build`: unit grids of about the target area, bounded by what is on the
ground, numbered west→east then north→south.

`divide` is pure (shapely): the community is cut by the road centre-lines, water edges,
walls and railways that cross it; faces far below the target are merged into the
neighbour they share most boundary with (a sliver between two roads is no grid); faces
far above it are bisected by area, across their longer side, into near-target pieces.
The same input gives the same grids. `build` is the edge: it reads the community and its
barriers, writes the grids, moves components and addresses to the grid now holding them,
and refuses when a case holds a grid that would change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import NamedTuple

import psycopg
import shapely
from shapely.geometry.base import BaseGeometry

from mapserver.codes import grid_code
from mapserver.errors import Conflict, InvalidInput, NotFound

SLIVER = 0.35  # a face below this share of the target joins a neighbour
SPLIT = 1.5  # a face above this multiple of the target is divided
_EPS = 0.01


def _polygonal(geom: BaseGeometry) -> list[BaseGeometry]:
    return [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and g.area > _EPS]


def faces(community: BaseGeometry, barriers: Sequence[BaseGeometry]) -> list[BaseGeometry]:
    """The community cut by the barrier lines (dangling ends do not cut)."""
    lines = [community.boundary] + [
        b.intersection(community) for b in sorted(barriers, key=lambda b: b.wkb)
    ]
    noded = shapely.union_all([g for g in lines if not g.is_empty])
    out = []
    for face in shapely.get_parts(shapely.polygonize(shapely.get_parts(noded))):
        if face.area > _EPS and community.contains(face.representative_point()):
            out.append(face)
    return out or [community]


def as_multipolygon(geom: BaseGeometry) -> BaseGeometry:
    """The polygons of a geometry (a union can yield a collection with lines in it)."""
    polygons, stack = [], [geom]
    while stack:
        g = stack.pop()
        if g.geom_type == "Polygon":
            if g.area > _EPS:
                polygons.append(g)
        elif g.geom_type in ("MultiPolygon", "GeometryCollection"):
            stack.extend(shapely.get_parts(g))
    return shapely.MultiPolygon(sorted(polygons, key=lambda p: p.wkb))


def _key(g: BaseGeometry) -> tuple[float, float]:
    c = g.centroid
    return (round(c.x, 3), round(c.y, 3))


def merge_slivers(parts: list[BaseGeometry], target: float) -> list[BaseGeometry]:
    """Join each face under SLIVER × target to the neighbour with the longest shared edge,
    smallest first."""
    parts = list(parts)
    while len(parts) > 1:
        small = sorted(
            (i for i, p in enumerate(parts) if p.area < SLIVER * target),
            key=lambda i: (parts[i].area, _key(parts[i])),
        )
        merged = False
        for i in small:
            shared = [
                (parts[i].boundary.intersection(parts[j].boundary).length, _key(parts[j]), j)
                for j in range(len(parts))
                if j != i
            ]
            length, _, j = max(shared)
            if length <= _EPS:
                continue
            joined = shapely.union_all([parts[i], parts[j]])
            parts = [p for k, p in enumerate(parts) if k not in (i, j)] + [joined]
            merged = True
            break
        if not merged:
            break
    return parts


def bisect(face: BaseGeometry, pieces: int) -> list[BaseGeometry]:
    """`face` cut into `pieces` parts of equal area, across its longer side, recursively."""
    if pieces <= 1:
        return [face]
    minx, miny, maxx, maxy = face.bounds
    vertical = (maxx - minx) >= (maxy - miny)
    lo, hi = (minx, maxx) if vertical else (miny, maxy)
    share = (pieces // 2) / pieces
    want = face.area * share

    def before(at: float) -> BaseGeometry:
        box = (
            shapely.box(minx - 1, miny - 1, at, maxy + 1)
            if vertical
            else shapely.box(minx - 1, miny - 1, maxx + 1, at)
        )
        return face.intersection(box)

    a, b = lo, hi
    for _ in range(40):  # bisection on the cut's position: 2^-40 of the extent
        mid = (a + b) / 2
        if before(mid).area < want:
            a = mid
        else:
            b = mid
    cut = round((a + b) / 2, 3)
    first = before(cut)
    rest = face.difference(first)
    return bisect(first, pieces // 2) + bisect(rest, pieces - pieces // 2)


def order(parts: list[BaseGeometry], target: float) -> list[BaseGeometry]:
    """Rows north→south (a row is one target side high), west→east within a row."""
    if not parts:
        return []
    top = max(p.bounds[3] for p in parts)
    side = math.sqrt(target)
    return sorted(
        parts,
        key=lambda p: (math.floor((top - p.centroid.y) / side), p.centroid.x, -p.centroid.y),
    )


def divide(
    community: BaseGeometry, barriers: Sequence[BaseGeometry], target: float
) -> list[BaseGeometry]:
    """A community's unit grids, in serial order."""
    if target <= 0:
        raise InvalidInput("--target-m2 must be positive")
    merged = merge_slivers(faces(community, barriers), target)
    out: list[BaseGeometry] = []
    for face in merged:
        n = round(face.area / target) if face.area > SPLIT * target else 1
        out += [p for p in bisect(face, max(1, n)) if p.area > _EPS]
    snapped = [as_multipolygon(shapely.set_precision(p, 0.001)) for p in out]
    # a sliver thinner than the precision vanishes when snapped: no grid of nothing
    return order([p for p in snapped if not p.is_empty and p.area > _EPS], target)


class Distribution(NamedTuple):
    grids: int
    min_m2: float
    median_m2: float
    max_m2: float
    within_half: float  # share of grids within ±50 % of the target

    def line(self) -> str:
        return (
            f"{self.grids} grids, area min {self.min_m2:,.0f} / median {self.median_m2:,.0f}"
            f" / max {self.max_m2:,.0f} m², {self.within_half:.0%} within ±50% of the target"
        )


def distribution(areas: Sequence[float], target: float) -> Distribution:
    if not areas:
        return Distribution(0, 0.0, 0.0, 0.0, 0.0)
    near = sum(1 for a in areas if 0.5 * target <= a <= 1.5 * target)
    return Distribution(
        len(areas), min(areas), statistics.median(areas), max(areas), near / len(areas)
    )


# -- the edge


def _barriers(conn: psycopg.Connection, community: str) -> list[BaseGeometry]:
    """Lines that bound grids on the ground, at the finest scale the data has."""
    rows = conn.execute(
        """WITH c AS (SELECT geom FROM community WHERE code = %s)
           SELECT ST_AsBinary(l.geom) FROM c, (
               SELECT geom FROM road_line WHERE scale = (SELECT min(scale) FROM road_line)
               UNION ALL SELECT geom FROM wall WHERE scale = (SELECT min(scale) FROM wall)
               UNION ALL SELECT geom FROM railway WHERE scale = (SELECT min(scale) FROM railway)
               UNION ALL SELECT ST_Boundary(geom) FROM water
                         WHERE scale = (SELECT min(scale) FROM water)) l
           WHERE l.geom && c.geom""",
        (community,),
    ).fetchall()
    return [shapely.from_wkb(bytes(r[0])) for r in rows]


def communities(conn: psycopg.Connection, street: str | None, community: str | None) -> list[str]:
    if community:
        where, arg = "code = %s", community
    elif street:
        where, arg = "street_code = %s", street
    else:
        where, arg = "%s::text IS NULL", None
    found = [
        r[0]
        for r in conn.execute(f"SELECT code FROM community WHERE {where} ORDER BY code", (arg,))
    ]
    if not found:
        what = (
            f"community {community}" if community else f"street {street}" if street else "district"
        )
        raise NotFound(f"no communities in {what}: import them first (--as communities)")
    return found


class Built(NamedTuple):
    community: str
    grids: int
    kept: int  # grids whose code and polygon did not change
    moved_components: int
    moved_addresses: int
    areas: tuple[float, ...]


def build_community(
    conn: psycopg.Connection, code: str, target: float, serial_digits: int, srid: int
) -> Built:
    """Replace one community's unit grids; the caller owns the transaction."""
    row = conn.execute(
        "SELECT ST_AsBinary(geom) FROM community WHERE code = %s", (code,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no community {code}")
    parts = divide(shapely.from_wkb(bytes(row[0])), _barriers(conn, code), target)
    if len(parts) >= 10**serial_digits:
        raise InvalidInput(
            f"community {code} needs {len(parts)} grids, more than a {serial_digits}-digit serial"
            " numbers: raise --target-m2 (or set grid_serial_digits = 3)"
        )
    new = {grid_code(code, i, serial_digits): p for i, p in enumerate(parts, start=1)}
    kept, moved = replace_grids(conn, code, new, srid, "grids:build")
    return Built(code, len(new), kept, moved[0], moved[1], tuple(p.area for p in parts))


def replace_grids(
    conn: psycopg.Connection,
    code: str,
    new: dict[str, BaseGeometry],
    srid: int,
    origin: str,
) -> tuple[int, tuple[int, int]]:
    """Make `new` the unit grids of community `code`: unchanged grids stay as they are,
    components and addresses move to the grid now holding them, and nothing changes where a
    case holds a grid that would. Returns (grids kept, (components, addresses) moved)."""
    conn.execute(
        "CREATE TEMP TABLE grids_new (code text PRIMARY KEY, geom geometry) ON COMMIT DROP"
    )
    with conn.cursor() as cur, cur.copy("COPY grids_new (code, geom) FROM STDIN") as copy:
        for c, p in new.items():
            copy.write_row(
                (
                    c,
                    shapely.to_wkb(
                        shapely.set_srid(as_multipolygon(p), srid),
                        hex=True,
                        include_srid=True,
                    ),
                )
            )
    changed = """SELECT g.code FROM unit_grid g LEFT JOIN grids_new n USING (code)
                 WHERE g.community_code = %s
                   AND (n.code IS NULL OR NOT ST_Equals(ST_SnapToGrid(g.geom, 0.001),
                                                        ST_SnapToGrid(n.geom, 0.001)))"""
    held = conn.execute(
        f"SELECT count(*), min(grid_code) FROM city_case WHERE grid_code IN ({changed})", (code,)
    ).fetchone()
    if held and held[0]:
        raise Conflict(
            f"community {code}: {held[0]} case(s) keep unit grids that would change"
            f" (first: {held[1]}); grids are rebuilt only where no case holds them"
        )
    kept = len(new) - len(
        conn.execute(
            "SELECT code FROM grids_new n WHERE NOT EXISTS (SELECT 1 FROM unit_grid g"
            " WHERE g.code = n.code AND ST_Equals(ST_SnapToGrid(g.geom, 0.001),"
            " ST_SnapToGrid(n.geom, 0.001)))"
        ).fetchall()
    )
    conn.execute(
        """INSERT INTO unit_grid (code, community_code, area_m2, geom, origin)
           SELECT code, %s, ST_Area(geom), geom, %s FROM grids_new
           ON CONFLICT (code) DO UPDATE SET geom = excluded.geom, area_m2 = excluded.area_m2,
               origin = excluded.origin""",
        (code, origin),
    )
    moved = []
    for table in ("component", "address"):
        moved.append(
            conn.execute(
                f"""UPDATE {table} t SET grid_code = n.code
                    FROM (SELECT t2.ctid AS id, (SELECT g.code FROM grids_new g
                              WHERE ST_Covers(g.geom, t2.geom) ORDER BY g.code LIMIT 1) AS code
                          FROM {table} t2, community c
                          WHERE c.code = %s AND (ST_Covers(c.geom, t2.geom)
                                OR left(t2.grid_code, 12) = %s)) n
                    WHERE t.ctid = n.id AND n.code IS NOT NULL
                      AND t.grid_code IS DISTINCT FROM n.code""",
                (code, code),
            ).rowcount
        )
    stranded = conn.execute(
        """SELECT count(*) FROM component WHERE left(grid_code, 12) = %s
           AND grid_code NOT IN (SELECT code FROM grids_new)""",
        (code,),
    ).fetchone()
    if stranded and stranded[0]:
        raise Conflict(f"community {code}: {stranded[0]} component(s) lie in none of its new grids")
    conn.execute(
        "UPDATE address SET grid_code = NULL WHERE left(grid_code, 12) = %s"
        " AND grid_code NOT IN (SELECT code FROM grids_new)",
        (code,),
    )
    conn.execute(
        "DELETE FROM unit_grid WHERE community_code = %s"
        " AND code NOT IN (SELECT code FROM grids_new)",
        (code,),
    )
    conn.execute("DROP TABLE grids_new")
    return kept, (moved[0], moved[1])


def build(
    conn: psycopg.Connection,
    codes: Sequence[str],
    target: float,
    serial_digits: int,
    srid: int,
    step: Callable[[Built], None] = lambda _: None,
) -> list[Built]:
    out = []
    for code in codes:
        built = build_community(conn, code, target, serial_digits, srid)
        step(built)
        out.append(built)
    return out
