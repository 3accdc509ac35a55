"""The secret tile origin: drawn per install from its district, kept in the database,
never published, never changed silently."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import db, migrate
from mapserver.cli import main
from mapserver.settings import EXAMPLE_ORIGINS, Settings, describe
from tests.conftest import database_url
from tiles import origin
from tiles.origin import (
    MARGIN_M,
    QUANTUM_M,
    SPREAD_M,
    NoTileMatrix,
    TileMatrix,
    crs_bounds,
    draw,
    install_grid,
    matrix_tiles,
    stored_matrix,
)
from tiles.service import grid_from
from tiles.tile_grid import BBox

README = Path(__file__).resolve().parents[1] / "README.md"


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


# a district (Haidian-sized) inside it, and a much smaller one
DISTRICT = BBox(430_000.0, 4_420_000.0, 445_000.0, 4_440_000.0)
SMALL = BBox(440_000.0, 4_427_000.0, 442_000.0, 4_429_000.0)
PICKS = [lambda n: 0, lambda n: n - 1, lambda n: n // 3]


@pytest.mark.parametrize("pick", PICKS)
def test_drawn_origin_holds_the_district_with_margins(pick) -> None:  # type: ignore[no-untyped-def]
    matrix = draw(DISTRICT, pick)
    assert _inside(matrix, DISTRICT)
    assert _inside(matrix, DISTRICT.buffered(MARGIN_M * 0.99))  # and what lies just outside
    assert DISTRICT.minx - MARGIN_M - SPREAD_M <= matrix.origin_x <= DISTRICT.minx - MARGIN_M
    assert DISTRICT.maxy + MARGIN_M <= matrix.origin_y <= DISTRICT.maxy + MARGIN_M + SPREAD_M


def test_matrix_size_tells_neither_the_offset_nor_the_district_size() -> None:
    sizes = {draw(box, pick).top_tiles for pick in PICKS for box in (DISTRICT, SMALL)}
    assert len(sizes) == 1  # size rounded up to QUANTUM_M: 2 km and 20 km look alike
    assert matrix_tiles(BBox(0, 0, QUANTUM_M * 2.5, 10)) > matrix_tiles(DISTRICT)


def test_drawn_origins_are_spread_and_not_round(conn: psycopg.Connection) -> None:
    offsets = conn.execute(f"SELECT {origin.offset_sql()} FROM generate_series(1, 50)")
    xs = [DISTRICT.minx - float(r[0]) for r in offsets.fetchall()]  # as the database draws
    assert len(set(xs)) == 50
    assert all(DISTRICT.minx - MARGIN_M - SPREAD_M <= x <= DISTRICT.minx - MARGIN_M for x in xs)
    assert max(xs) - min(xs) > SPREAD_M / 4  # uniform over 200 km: not a narrow window
    span = 256 * 500 * 0.00028  # a 1:500 tile
    fractions = [((DISTRICT.minx - x) % span) / span for x in xs]
    assert max(fractions) - min(fractions) > 0.5  # tile edges do not sit on fixed positions
    assert sum(x == round(x, -2) for x in xs) <= 1


def _box_sql(box: BBox, srid: int) -> str:
    return f"ST_Multi(ST_MakeEnvelope({box.minx}, {box.miny}, {box.maxx}, {box.maxy}, {srid}))"


def _put_district(s: Settings, box: BBox) -> None:
    """Store (or replace) the install's district, as `import --as district --replace` does."""
    with db.transaction(s) as conn:
        conn.execute("DELETE FROM district")
        conn.execute(
            "INSERT INTO district (code, name, geom) VALUES ('110108', 'Haidian', "
            f"{_box_sql(box, s.srid)})"
        )


def _matrix(s: Settings) -> tuple[TileMatrix, str | None]:
    with db.connect(s) as conn:
        return stored_matrix(conn), origin.basis(conn)


def _fresh(name: str, tmp_path: Path) -> Settings:
    s = dataclasses.replace(Settings(), database_url=database_url(name), data_dir=tmp_path)
    db.drop_database(s)
    db.ensure_database(s)
    return s


@pytest.fixture
def two_installs(tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    made = []
    for name in ("citygrid_origin_a", "citygrid_origin_b"):
        s = _fresh(name, tmp_path / name)
        with db.connect(s) as conn:
            migrate.upgrade(conn, s)
        made.append(s)
    origin.forget()
    yield made[0], made[1]
    origin.forget()
    for s in made:
        db.drop_database(s)


def _env(s: Settings) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CITYGRID_")}
    return env | {"CITYGRID_DATABASE_URL": s.database_url, "CITYGRID_DATA_DIR": str(s.data_dir)}


def test_no_origin_before_a_district_then_one_drawn_from_it(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, b = two_installs
    with pytest.raises(NoTileMatrix, match="citygrid import FILE --as district"):
        install_grid(a)
    check = CliRunner().invoke(main, ["config", "check"], env=_env(a))
    assert check.exit_code == 0 and "error" not in check.output, check.output
    for s in (a, b):
        _put_district(s, DISTRICT)
    (ma, basis_a), (mb, _) = _matrix(a), _matrix(b)
    assert basis_a == "district"
    assert (ma.origin_x, ma.origin_y) != (mb.origin_x, mb.origin_y)
    assert ma.origin_x != mb.origin_x and ma.origin_y != mb.origin_y
    assert ma.top_tiles == mb.top_tiles == matrix_tiles(DISTRICT)
    for m in (ma, mb):
        assert m.origin_x not in EXAMPLE_ORIGINS and m.origin_y not in EXAMPLE_ORIGINS
        assert _inside(m, DISTRICT)
        assert DISTRICT.minx - MARGIN_M - SPREAD_M <= m.origin_x <= DISTRICT.minx - MARGIN_M
        assert DISTRICT.maxy + MARGIN_M <= m.origin_y <= DISTRICT.maxy + MARGIN_M + SPREAD_M
        grid = m.grid()  # nothing of the district clipped at the finest level
        rng = grid.tile_range(8, DISTRICT)
        assert rng.width * grid.level(8).tile_span >= DISTRICT.maxx - DISTRICT.minx
    assert install_grid(a) == ma.grid()


def test_a_district_far_outside_the_crs_area_is_still_covered(two_installs) -> None:  # type: ignore[no-untyped-def]
    """The matrix follows the district, not the CRS's area of use: a district beyond its
    east edge (which 0010's matrix did not reach) is addressable."""
    a, _ = two_installs
    with db.connect(a) as conn:
        area = crs_bounds(conn, a.srid)
    east = BBox(area.maxx + 300_000, 4_420_000.0, area.maxx + 310_000, 4_430_000.0)
    _put_district(a, east)
    matrix, _ = _matrix(a)
    assert _inside(matrix, east)


def test_the_origin_never_follows_the_district_silently(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_installs
    _put_district(a, DISTRICT)
    first, _ = _matrix(a)
    moved = BBox(DISTRICT.minx, DISTRICT.miny - 400_000, DISTRICT.maxx, DISTRICT.maxy - 400_000)
    _put_district(a, moved)  # replaced by one 400 km south (in the CRS's zone): origin stays
    assert _matrix(a)[0] == first
    check = CliRunner().invoke(main, ["config", "check"], env=_env(a))
    assert check.exit_code == 1
    assert "tile matrix: the district reaches" in check.output
    assert "citygrid tiles redraw-origin --yes" in check.output
    refused = CliRunner().invoke(main, ["tiles", "redraw-origin"], env=_env(a))
    assert refused.exit_code == 1 and "add --yes" in refused.output and _matrix(a)[0] == first
    redrawn = CliRunner().invoke(main, ["tiles", "redraw-origin", "--yes"], env=_env(a))
    assert redrawn.exit_code == 0, redrawn.output
    assert "restart the services" in redrawn.output
    second, basis = _matrix(a)
    assert second != first and basis == "district" and _inside(second, moved)
    ok = CliRunner().invoke(main, ["config", "check"], env=_env(a))
    assert ok.exit_code == 0, ok.output
    explicit = _env(a) | {"CITYGRID_TILE_ORIGIN_X": "1000.5", "CITYGRID_TILE_ORIGIN_Y": "2000.5"}
    told = CliRunner().invoke(main, ["config", "check"], env=explicit)
    assert told.exit_code == 1 and "change tile_origin_x" in told.output


def test_an_install_migrated_before_0030_keeps_its_origin(tmp_path: Path) -> None:
    """An install with a district and 0010's origin (from the CRS's area of use) keeps that
    origin through the upgrade: its cached tiles and clients' tile indices stay valid."""
    s = _fresh("citygrid_origin_old", tmp_path)
    try:
        with db.connect(s, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for m in migrate.available():
                if m.version >= 30:
                    break
                with conn.transaction():
                    sql = origin.render_migration(migrate.render(m, s), conn, s.srid)
                    conn.execute(sql.encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (m.version, m.name),
                    )
            before = stored_matrix(conn)
        _put_district(s, DISTRICT)
        with db.connect(s) as conn:
            assert [m.version for m in migrate.upgrade(conn, s)][:1] == [30]
        after, basis = _matrix(s)
        assert after == before and basis == "crs_area"
    finally:
        db.drop_database(s)


def test_origin_is_in_no_statement_text(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_installs
    _put_district(a, DISTRICT)
    grid = grid_from(a)
    with db.connect(a) as conn:
        for version in (10, 30):
            sql = next(m for m in migrate.available() if m.version == version).sql
            rendered = origin.render_migration(sql, conn, a.srid)
            assert "{{" not in rendered
            for value in (grid.origin_x, grid.origin_y):
                assert str(int(value)) not in rendered


def test_origin_read_once_per_process(two_installs) -> None:  # type: ignore[no-untyped-def]
    a, _ = two_installs
    _put_district(a, DISTRICT)
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
    _put_district(a, DISTRICT)
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
            conn.execute(f"SET ROLE {role}")  # the rollback undid it
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT tile_matrix_draw()")
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
    docs = sorted((README.parent / "docs").glob("*.md"))
    assert docs, "the performance log is in docs/"
    text = "\n".join(p.read_text("utf-8") for p in [README, *docs])
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
