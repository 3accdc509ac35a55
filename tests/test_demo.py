"""The generated demo district, checked in PostGIS."""

from __future__ import annotations

import psycopg
import pytest

from mapserver import codes
from mapserver.demo import build_demo, generate
from mapserver.settings import Settings

DEMO_TABLES = (
    "district",
    "street",
    "community",
    "unit_grid",
    "component",
    "address",
    "building",
    "road_line",
    "road_surface",
    "water",
    "green",
    "railway",
    "wall",
    "annotation",
    "organisation",
)


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in DEMO_TABLES}  # type: ignore[index]


def test_grid_codes_valid_unique_and_ordered(demo_conn: psycopg.Connection) -> None:
    rows = demo_conn.execute(
        "SELECT code, community_code, ST_XMin(geom), ST_YMax(geom) FROM unit_grid"
    ).fetchall()
    assert len(rows) >= 90
    seen = set()
    for code, community, _, _ in rows:
        parsed = codes.parse_grid_code(code, 2, districts={"110108"})
        assert parsed.community_code == community
        assert code not in seen
        seen.add(code)
    by_community: dict[str, list[tuple[int, float, float]]] = {}
    for code, community, x, y in rows:
        by_community.setdefault(community, []).append((int(code[12:]), x, y))
    for cells in by_community.values():
        cells.sort()
        assert [s for s, _, _ in cells] == list(range(1, len(cells) + 1))
        # Serial order = rows north→south, and west→east within a row.
        order = sorted(cells, key=lambda c: (-round(c[2], 3), round(c[1], 3)))
        assert [s for s, _, _ in order] == [s for s, _, _ in cells]


def test_grids_tile_each_community(demo_conn: psycopg.Connection) -> None:
    rows = demo_conn.execute(
        """SELECT c.code, ST_Area(c.geom), sum(g.area_m2), ST_Area(ST_Union(g.geom)),
                  ST_Area(ST_SymDifference(ST_Union(g.geom), c.geom)),
                  min(g.area_m2), max(g.area_m2)
           FROM community c JOIN unit_grid g ON g.community_code = c.code
           GROUP BY c.code, c.geom"""
    ).fetchall()
    streets = demo_conn.execute(
        "SELECT street_code, count(*) FROM community GROUP BY street_code"
    ).fetchall()
    assert len(streets) >= 2 and all(n >= 2 for _, n in streets)
    for code, area, summed, union, symdiff, smallest, largest in rows:
        assert abs(summed - area) / area < 0.001, code  # areas add up: no overlap, no gap
        assert abs(union - area) / area < 0.001, code  # union = community: no overlap
        assert symdiff < 1.0, code  # nothing of the community left uncovered
        assert smallest > 5_000 and largest < 20_000  # about 100 m × 100 m
    overlaps = demo_conn.execute(
        """SELECT count(*) FROM unit_grid a JOIN unit_grid b
             ON a.code < b.code AND ST_Intersects(a.geom, b.geom)
           WHERE ST_Area(ST_Intersection(a.geom, b.geom)) > 0.01"""
    ).fetchone()[0]
    assert overlaps == 0


def test_components_in_exactly_their_grid(demo_conn: psycopg.Connection) -> None:
    bad = demo_conn.execute(
        """SELECT c.code, count(g.code), bool_or(g.code = c.grid_code)
           FROM component c LEFT JOIN unit_grid g ON ST_Covers(g.geom, c.geom)
           GROUP BY c.code HAVING count(g.code) <> 1 OR NOT bool_or(g.code = c.grid_code)
           LIMIT 5"""
    ).fetchall()
    assert bad == []


def test_component_density_and_classes(demo_conn: psycopg.Connection) -> None:
    total, classes_used = demo_conn.execute(
        "SELECT count(*), count(DISTINCT (major, minor)) FROM component"
    ).fetchone()  # type: ignore[misc]
    area_km2 = demo_conn.execute("SELECT ST_Area(geom) / 1e6 FROM district").fetchone()[0]  # type: ignore[index]
    assert total / area_km2 >= 5000
    assert classes_used >= 25
    known = {
        codes.ClassCode(a, b)
        for a, b in demo_conn.execute("SELECT major, minor FROM component_class").fetchall()
    }
    for (code,) in demo_conn.execute("SELECT code FROM component").fetchall():
        codes.parse_component_code(code, 2, districts={"110108"}, classes=known)
    states = dict(
        demo_conn.execute("SELECT state, count(*) FROM component GROUP BY state").fetchall()
    )
    assert set(states) == {"intact", "damaged", "missing", "occupied"}
    assert states["intact"] > 0.9 * total


def test_addresses_lie_in_their_grid(demo_conn: psycopg.Connection) -> None:
    n_house, n_landmark = demo_conn.execute(
        "SELECT count(*) FILTER (WHERE kind = 'house'), count(*) FILTER (WHERE kind = 'landmark')"
        " FROM address"
    ).fetchone()  # type: ignore[misc]
    assert n_house > 100 and n_landmark >= 1
    bad = demo_conn.execute(
        """SELECT a.full_text FROM address a JOIN unit_grid g ON g.code = a.grid_code
           WHERE NOT ST_Covers(g.geom, a.geom)"""
    ).fetchall()
    assert bad == []
    dupes = demo_conn.execute(
        "SELECT full_text FROM address WHERE kind = 'house' GROUP BY full_text HAVING count(*) > 1"
    ).fetchall()
    assert dupes == []


def test_basemap_two_scales(demo_conn: psycopg.Connection) -> None:
    by_scale = dict(
        demo_conn.execute("SELECT scale, count(*) FROM building GROUP BY scale").fetchall()
    )
    assert 0 < by_scale[2000] < by_scale[500]
    lanes_2000 = demo_conn.execute(
        "SELECT count(*) FROM road_line WHERE scale = 2000 AND kind = 'lane'"
    ).fetchone()[0]  # type: ignore[index]
    assert lanes_2000 == 0
    for table in ("road_line", "road_surface", "water", "green", "railway", "annotation"):
        scales = {s for (s,) in demo_conn.execute(f"SELECT DISTINCT scale FROM {table}")}
        assert scales == {500, 2000}, table
    unnamed = demo_conn.execute(
        "SELECT count(*) FROM road_line WHERE name = '' OR name !~ '[\u4e00-\u9fff]'"
    ).fetchone()[0]  # type: ignore[index]
    assert unnamed == 0
    invalid = demo_conn.execute(
        "SELECT count(*) FROM building WHERE NOT ST_IsValid(geom)"
    ).fetchone()[0]  # type: ignore[index]
    assert invalid == 0


def test_generation_is_deterministic() -> None:
    a = generate(1.0, 7, "110108")
    b = generate(1.0, 7, "110108")
    c = generate(1.0, 8, "110108")
    assert [g.code for g in a.grids] == [g.code for g in b.grids]
    assert (a.components.x == b.components.x).all() and (
        a.components.grid == b.components.grid
    ).all()
    assert [x.geom.wkb for x in a.features.buildings] == [x.geom.wkb for x in b.features.buildings]
    assert len(a.components) != len(c.components) or (a.components.x != c.components.x).any()


def test_rerun_replaces_cleanly(demo_settings: Settings, demo_conn: psycopg.Connection) -> None:
    before = _counts(demo_conn)
    sample = demo_conn.execute(
        "SELECT code, ST_AsText(geom), state FROM component ORDER BY code LIMIT 50"
    ).fetchall()
    demo_conn.rollback()
    build_demo(demo_settings, area_km2=1.0, seed=1, progress=False)
    assert _counts(demo_conn) == before
    assert (
        demo_conn.execute(
            "SELECT code, ST_AsText(geom), state FROM component ORDER BY code LIMIT 50"
        ).fetchall()
        == sample
    )


def test_bad_area_refused(demo_settings: Settings) -> None:
    from mapserver.errors import InvalidInput

    with pytest.raises(InvalidInput):
        build_demo(demo_settings, area_km2=0.01, progress=False)


def test_cli_demo_prints_summary(demo_settings: Settings) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    result = CliRunner().invoke(
        main,
        ["demo", "--area-km2", "1", "--seed", "1", "--no-progress"],
        env={"CITYGRID_DATABASE_URL": demo_settings.database_url},
    )
    assert result.exit_code == 0, result.output
    assert "grids: 100" in result.output and "components_per_km2:" in result.output
    bad = CliRunner().invoke(
        main, ["demo", "--area-km2", "0"], env={"CITYGRID_DATABASE_URL": demo_settings.database_url}
    )
    assert bad.exit_code != 0 and "Traceback" not in bad.output
