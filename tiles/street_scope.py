"""Which tiles touch which street: computed once per process, so that the policy can
scope a tile request to the account's streets without a query per tile.

For every street and level the index keeps, per tile row, the column spans where the
street's polygon has area inside that row. A tile is in a street's scope when its row span
holds its column. Lookups are pure; only `load` talks to PostGIS.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

import psycopg

from tiles.tile_grid import EPS, TileGrid, TileRange

Spans = dict[int, tuple[tuple[int, int], ...]]  # row y -> ((x0, x1), ...) inclusive


class StreetIndex(NamedTuple):
    """street code -> level z -> row spans."""

    spans: dict[str, dict[int, Spans]]

    def streets_of_tile(self, z: int, x: int, y: int) -> frozenset[str]:
        return frozenset(
            code
            for code, levels in self.spans.items()
            if any(x0 <= x <= x1 for x0, x1 in levels.get(z, {}).get(y, ()))
        )

    def extent(self, streets: Iterable[str], z: int) -> TileRange | None:
        """The smallest tile range holding every tile of `streets` at level z."""
        xs: list[int] = []
        ys: list[int] = []
        for code in streets:
            for y, row in self.spans.get(code, {}).get(z, {}).items():
                for x0, x1 in row:
                    xs += (x0, x1)
                    ys.append(y)
        if not xs:
            return None
        return TileRange(z, min(xs), min(ys), max(xs), max(ys))


def _columns(grid: TileGrid, z: int, minx: float, maxx: float) -> tuple[int, int]:
    span = grid.level(z).tile_span
    x0 = math.floor((minx - grid.origin_x) / span + EPS)
    x1 = math.ceil((maxx - grid.origin_x) / span - EPS) - 1
    return max(x0, 0), min(x1, grid.level(z).matrix_width - 1)


def load(conn: psycopg.Connection, grid: TileGrid, srid: int) -> StreetIndex:
    """Row spans of every street at every level of `grid`, from the street polygons."""
    spans: dict[str, dict[int, dict[int, list[tuple[int, int]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    # The planner guesses a thousand rows from each set-returning function, so the query
    # looks costly enough to compile (JIT): 1.2 s for the demo's 9 levels, all but some 20 ms
    # of it compiling. It is read without, and the caller's setting put back: inside a
    # transaction of the caller's, a SET LOCAL would last until that transaction ends.
    with conn.transaction():
        before = conn.execute("SELECT current_setting('jit')").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT set_config('jit', 'off', true)")
        for level in grid.levels:
            _load_level(conn, grid, srid, level.z, spans)
        conn.execute("SELECT set_config('jit', %s, true)", (before,))
    return StreetIndex(
        {
            code: {
                z: {y: tuple(sorted(row)) for y, row in by_y.items()} for z, by_y in by_z.items()
            }
            for code, by_z in spans.items()
        }
    )


def _load_level(
    conn: psycopg.Connection,
    grid: TileGrid,
    srid: int,
    z: int,
    spans: dict[str, dict[int, dict[int, list[tuple[int, int]]]]],
) -> None:
    """Row spans of every street at level z, added to `spans`."""
    level = grid.level(z)
    rows = conn.execute(
        """
        WITH s AS (SELECT code, geom, ST_XMin(geom) AS x0, ST_XMax(geom) AS x1,
                          ST_YMin(geom) AS y0, ST_YMax(geom) AS y1 FROM street)
        SELECT s.code, r.y, ST_XMin(d.geom), ST_XMax(d.geom)
        FROM s,
             LATERAL generate_series(
                 greatest(floor((%(oy)s - s.y1) / %(span)s)::int, 0),
                 least(ceil((%(oy)s - s.y0) / %(span)s)::int - 1, %(rows)s - 1)) AS r(y),
             LATERAL ST_Dump(ST_Intersection(s.geom, ST_MakeEnvelope(
                 s.x0 - 1, %(oy)s - (r.y + 1) * %(span)s,
                 s.x1 + 1, %(oy)s - r.y * %(span)s, %(srid)s))) AS d
        WHERE ST_Dimension(d.geom) = 2
        """,
        {"oy": grid.origin_y, "span": level.tile_span, "rows": level.matrix_height, "srid": srid},
    ).fetchall()
    for code, y, minx, maxx in rows:
        x0, x1 = _columns(grid, level.z, float(minx), float(maxx))
        if x0 <= x1:
            spans[str(code)][level.z][int(y)].append((x0, x1))
