"""The secret tile origin: drawn per install, kept in the database, never published."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mapserver import db, migrate
from mapserver.settings import EXAMPLE_ORIGINS, Settings, describe
from tests.conftest import database_url
from tiles import origin
from tiles.origin import MARGIN_M, SPREAD_M, TileMatrix, crs_bounds, draw, install_grid
from tiles.service import grid_from
from tiles.tile_grid import BBox

README = Path(__file__).resolve().parents[1] / "README.md"
# EPSG:4548's area of use, roughly, in its own metres
BOUNDS = BBox(345_754.3, 2_500_241.1, 654_245.7, 5_528_579.0)


def _inside(matrix: TileMatrix, box: BBox) -> bool:
    grid = matrix.grid()
    lv = grid.level(0)
    rng = grid.tile_range(0, box)
    whole = grid.tile_bbox(0, 0, 0)._replace(
        maxx=grid.origin_x + lv.matrix_width * lv.tile_span,
        miny=grid.origin_y - lv.matrix_height * lv.tile_span,
    )
    return (
        whole.minx < box.minx
        and box.maxx < whole.maxx
        and whole.miny < box.miny
        and box.maxy < whole.maxy
        and rng.n_tiles > 0
    )


@pytest.mark.parametrize("pick", [lambda n: 0, lambda n: n - 1, lambda n: n // 3])
def test_drawn_origin_holds_everything_the_crs_can(pick) -> None:  # type: ignore[no-untyped-def]
    matrix = draw(BOUNDS, pick)
    assert _inside(matrix, BOUNDS)
    assert BOUNDS.minx - MARGIN_M - SPREAD_M <= matrix.origin_x <= BOUNDS.minx - MARGIN_M
    assert BOUNDS.maxy + MARGIN_M <= matrix.origin_y <= BOUNDS.maxy + MARGIN_M + SPREAD_M


def test_matrix_size_does_not_tell_the_offset() -> None:
    sizes = {draw(BOUNDS, pick).top_tiles for pick in (lambda n: 0, lambda n: n - 1)}
    assert len(sizes) == 1


def test_drawn_origins_are_spread_and_not_round(conn: psycopg.Connection) -> None:
    offsets = conn.execute(f"SELECT {origin.offset_sql()} FROM generate_series(1, 50)")
    xs = [BOUNDS.minx - float(r[0]) for r in offsets.fetchall()]  # as the migration draws
    assert len(set(xs)) == 50
    assert all(BOUNDS.minx - MARGIN_M - SPREAD_M <= x <= BOUNDS.minx - MARGIN_M for x in xs)
    assert max(xs) - min(xs) > SPREAD_M / 4  # uniform over 200 km: not a narrow window
    span = 256 * 500 * 0.00028  # a 1:500 tile
    fractions = [((BOUNDS.minx - x) % span) / span for x in xs]
    assert max(fractions) - min(fractions) > 0.5  # tile edges do not sit on fixed positions
    assert sum(x == round(x, -2) for x in xs) <= 1


@pytest.fixture
def two_installs(tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    made = []
    for name in ("citygrid_origin_a", "citygrid_origin_b"):
        s = dataclasses.replace(Settings(), database_url=database_url(name), data_dir=tmp_path)
        db.drop_database(s)
        db.ensure_database(s)
        with db.connect(s) as conn:
            migrate.upgrade(conn, s)
        made.append(s)
    yield made[0], made[1]
    for s in made:
        db.drop_database(s)


def test_two_fresh_installs_get_different_origins(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, b = two_installs
    ga, gb = grid_from(a), grid_from(b)
    assert (ga.origin_x, ga.origin_y) != (gb.origin_x, gb.origin_y)
    assert ga.origin_x != gb.origin_x and ga.origin_y != gb.origin_y
    for grid in (ga, gb):
        assert grid.origin_x not in EXAMPLE_ORIGINS and grid.origin_y not in EXAMPLE_ORIGINS
        with db.connect(a) as conn:
            bounds = crs_bounds(conn, a.srid)
        assert _inside(TileMatrix(grid.origin_x, grid.origin_y, grid.top_tiles), bounds)
        # the demo district (Haidian) is inside the matrix at the finest level
        rng = grid.tile_range(8, BBox(439_000, 4_426_000, 443_000, 4_430_000))
        assert min(rng.width, rng.height) >= 4000 // (256 * 0.14)  # nothing clipped


def test_origin_is_in_no_statement_text(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_installs
    grid = grid_from(a)
    sql = next(m for m in migrate.available() if m.version == 10).sql
    with db.connect(a) as conn:
        rendered = origin.render_migration(sql, conn, a.srid)
    assert "{{" not in rendered
    for value in (grid.origin_x, grid.origin_y):
        assert str(int(value)) not in rendered


def test_origin_read_once_per_process(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_installs
    origin.forget()
    first = install_grid(a)
    with db.connect(a) as conn:
        conn.execute("ALTER TABLE tile_matrix DISABLE TRIGGER tile_matrix_fixed")
        conn.execute("UPDATE tile_matrix SET origin_x = origin_x + 1000")
        conn.commit()
    assert install_grid(a) == first  # cached: no query per tile or per service
    origin.forget()
    assert install_grid(a).origin_x == pytest.approx(first.origin_x + 1000)


def test_origin_is_fixed_and_readable_only_by_serving_roles(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_installs
    with db.connect(a) as conn:
        with pytest.raises(psycopg.errors.RaiseException):
            conn.execute("UPDATE tile_matrix SET origin_x = 0")
        conn.rollback()
        for role in ("citygrid_app", "citygrid_map"):
            conn.execute(f"SET ROLE {role}")
            assert conn.execute("SELECT count(*) FROM tile_matrix").fetchone() == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "INSERT INTO tile_matrix (one, origin_x, origin_y, top_tiles)"
                    " VALUES (false, 1, 2, 3)"
                )
            conn.rollback()


def test_explicit_origin_wins_without_a_database() -> None:
    s = dataclasses.replace(
        Settings(),
        database_url="postgresql://nobody@127.0.0.1:1/none",
        tile_origin_x=123_456.789,
        tile_origin_y=4_567_890.123,
        tile_top_tiles=8,
    )
    grid = install_grid(s)
    assert (grid.origin_x, grid.origin_y, grid.top_tiles) == (123_456.789, 4_567_890.123, 8)


def test_no_origin_in_readme_or_setting_defaults() -> None:
    text = README.read_text("utf-8")
    for value in EXAMPLE_ORIGINS:
        for spelled in (f"{value:.1f}", f"{int(value)}", f"{int(value):_}"):
            assert spelled not in text
    defaults = {var: default for var, default, _ in describe()}
    assert defaults["CITYGRID_TILE_ORIGIN_X"] == defaults["CITYGRID_TILE_ORIGIN_Y"] == "None"


def test_descriptor_does_not_carry_the_install_origin(
    demo_settings: Settings, tmp_path: Path
) -> None:
    from tiles.service import TileService

    svc = TileService.for_cache(dataclasses.replace(demo_settings, data_dir=tmp_path / "var"))
    with db.connect(demo_settings) as conn:
        from tiles.service import district_extent

        extent = district_extent(conn)
    svc = TileService(svc.grid, svc.cache, svc.locks, None, extent, svc.metatile)
    grid = svc.grid
    for product in ("topo500", "topo2000", "grids", "components"):
        text = json.dumps(svc.descriptor(product))
        assert str(int(grid.origin_x)) not in text and str(int(grid.origin_y)) not in text
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
        assert numbers and all(
            abs(n - grid.origin_x) > 1000 and abs(n - grid.origin_y) > 1000 for n in numbers
        )
