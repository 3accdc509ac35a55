"""The street index (tiles.street_scope): which tiles touch which street, read from the demo
district's street polygons in one pass per level."""

from __future__ import annotations

import psycopg
import pytest

from mapserver.settings import Settings
from tiles import street_scope
from tiles.service import TileService
from tiles.street_scope import StreetIndex
from tiles.tile_grid import TileGrid


@pytest.fixture(scope="module")
def grid(demo_settings: Settings) -> TileGrid:
    return TileService.from_settings(demo_settings).grid


def _area(conn: psycopg.Connection, grid: TileGrid, srid: int, code: str, z: int, x: int, y: int):
    b = grid.tile_bbox(z, x, y)
    row = conn.execute(
        "SELECT ST_Area(ST_Intersection(geom, ST_MakeEnvelope(%s, %s, %s, %s, %s)))"
        " FROM street WHERE code = %s",
        (b.minx, b.miny, b.maxx, b.maxy, srid, code),
    ).fetchone()
    assert row is not None
    return float(row[0])


def test_a_street_s_tiles_are_those_its_polygon_covers(
    demo_conn: psycopg.Connection, demo_settings: Settings, grid: TileGrid
) -> None:
    """At a middle level, every tile of a street's spans shares area with its polygon, and
    the tiles just beyond each span do not (unless another span of the row holds them)."""
    index = street_scope.load(demo_conn, grid, demo_settings.srid)
    assert len(index.spans) >= 2  # the demo district's streets
    z = grid.levels[len(grid.levels) // 2].z
    for code, levels in index.spans.items():
        rows = levels[z]
        assert rows, f"street {code} has no tile at level {z}"
        for y, spans in rows.items():
            held = {x for x0, x1 in spans for x in range(x0, x1 + 1)}
            for x in held:
                assert _area(demo_conn, grid, demo_settings.srid, code, z, x, y) > 0
                assert code in index.streets_of_tile(z, x, y)
            for x0, x1 in spans:
                for x in (x0 - 1, x1 + 1):
                    if x not in held and grid.valid(z, x, y):
                        assert _area(demo_conn, grid, demo_settings.srid, code, z, x, y) == 0


def test_loading_leaves_the_connection_s_settings_as_they_were(
    demo_conn: psycopg.Connection, demo_settings: Settings, grid: TileGrid
) -> None:
    """The index is read without JIT compilation (SET LOCAL): the connection's own setting
    is what it was, in and out of a transaction."""
    before = demo_conn.execute("SHOW jit").fetchone()
    index = street_scope.load(demo_conn, grid, demo_settings.srid)
    assert isinstance(index, StreetIndex)
    assert demo_conn.execute("SHOW jit").fetchone() == before
