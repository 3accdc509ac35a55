"""Bring your own city: boundaries imported from GIS files (checked, repaired, reported),
unit grids built from them and from what bounds them on the ground, components following
their grids. A database of its own; files written by the test and converted by ogr2ogr."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import shapely
from click.testing import CliRunner

from mapserver import db, grids_build
from mapserver.boundaries import BoundaryProblems
from mapserver.cli import main
from mapserver.errors import Conflict, InvalidInput
from mapserver.importer import Options, gdal_env, import_file
from mapserver.settings import Settings

from .conftest import empty_database

X0, Y0 = 441_000.0, 4_428_000.0  # a place inside EPSG:4548's zone (CGCS2000 / 117° E)
CRS = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4548"}}


def _box(x0: float, y0: float, x1: float, y1: float) -> dict:  # type: ignore[type-arg]
    ring = [[X0 + x0, Y0 + y0], [X0 + x1, Y0 + y0], [X0 + x1, Y0 + y1], [X0 + x0, Y0 + y1]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def _line(*points: tuple[float, float]) -> dict:  # type: ignore[type-arg]
    return {"type": "LineString", "coordinates": [[X0 + x, Y0 + y] for x, y in points]}


def write(tmp: Path, name: str, features: list[tuple[dict, dict]]) -> Path:  # type: ignore[type-arg]
    """A GeoPackage converted by ogr2ogr from GeoJSON in the install's CRS."""
    src = tmp / f"{name}.geojson"
    src.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": CRS,
                "features": [
                    {"type": "Feature", "properties": p, "geometry": g} for g, p in features
                ],
            },
            ensure_ascii=False,
        ),
        "utf-8",
    )
    dst = tmp / f"{name}.gpkg"
    dst.unlink(missing_ok=True)
    subprocess.run(
        ["ogr2ogr", "-f", "GPKG", str(dst), str(src)],
        check=True,
        capture_output=True,
        env=gdal_env(),  # not the PROJ data of mapnik's bundle, once mapnik is loaded
    )
    return dst


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bounds")


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory, tmp: Path) -> Iterator[Settings]:
    """An install of its own with a district, two streets and three communities imported
    from files, through every repair the tolerance allows."""
    s = empty_database("citygrid_bounds", tmp_path_factory.mktemp("bounds-var"))
    d = write(tmp, "district", [(_box(0, 0, 800, 600), {"DM": "110108", "MC": "海淀区"})])
    result = import_file(s, d, "district", field_map={"code": "DM", "name": "MC"})
    assert result.imported == 1
    streets = write(
        tmp,
        "streets",
        [
            # 0.5 m above the district: snapped and clipped
            (_box(0, 0, 400, 600.5), {"code": "110108001", "name": "东街道"}),
            # 0.4 m into the first street: the overlap is trimmed
            (_box(399.6, 0, 800, 600), {"code": "110108002", "name": "西街道"}),
        ],
    )
    result = import_file(s, streets, "streets")
    assert result.imported == 2
    assert any("snapped" in n for n in result.notes), result.notes
    assert any("overlap with 110108001 trimmed" in n for n in result.notes), result.notes
    communities = write(
        tmp,
        "communities",
        [
            (_box(0, 0, 200, 600), {"code": "110108001001", "name": "一社区"}),
            # a 0.3 m gap to the first community: closed into a neighbour
            (_box(200.3, 0, 400, 600), {"code": "110108001002", "name": "二社区"}),
            (_box(400, 0, 800, 600), {"code": "110108002001", "name": "三社区"}),
        ],
    )
    result = import_file(s, communities, "communities")
    assert result.imported == 3
    assert any("gap" in n and "closed" in n for n in result.notes), result.notes
    with db.transaction(s) as conn:
        # a road across the first community, a wall up its southern half, a river at its
        # edge that ends inside (a dangle cuts nothing)
        conn.execute(
            "INSERT INTO road_line (scale, name, kind, width_m, geom, origin) VALUES"
            " (500, '测试路', 'branch', 10, ST_Multi(ST_GeomFromGeoJSON(%s)::geometry), 'test')",
            (json.dumps({**_line((-10, 300), (810, 300)), "crs": CRS}),),
        )
        conn.execute(
            "INSERT INTO wall (scale, kind, geom, origin) VALUES"
            " (500, 'wall', ST_Multi(ST_GeomFromGeoJSON(%s)::geometry), 'test')",
            (json.dumps({**_line((100, -5), (100, 300)), "crs": CRS}),),
        )
        conn.execute(
            "INSERT INTO wall (scale, kind, geom, origin) VALUES"
            " (500, 'fence', ST_Multi(ST_GeomFromGeoJSON(%s)::geometry), 'test')",
            (json.dumps({**_line((150, 600), (150, 450)), "crs": CRS}),),
        )
    yield s
    db.drop_database(s)


def _grids(conn: psycopg.Connection, community: str) -> list[tuple[str, shapely.Geometry]]:
    return [
        (code, shapely.from_wkb(bytes(wkb)))
        for code, wkb in conn.execute(
            "SELECT code, ST_AsBinary(ST_Translate(geom, %s, %s)) FROM unit_grid"
            " WHERE community_code = %s ORDER BY code",
            (-X0, -Y0, community),
        )
    ]


def _grid_at(conn: psycopg.Connection, point: str) -> str:
    row = conn.execute(f"SELECT code FROM unit_grid WHERE ST_Covers(geom, {point})").fetchone()
    assert row is not None
    return str(row[0])


def test_boundaries_repaired_within_tolerance(city: Settings) -> None:
    with db.connect(city) as conn:
        rows = conn.execute(
            "SELECT code, round(ST_Area(geom)), ST_Covers(ST_Buffer((SELECT geom FROM district),"
            " 0.001), geom) FROM street ORDER BY code"
        ).fetchall()
        assert rows == [("110108001", 240000, True), ("110108002", 240000, True)]
        overlap = conn.execute(
            "SELECT ST_Area(ST_Intersection(a.geom, b.geom)) FROM community a, community b"
            " WHERE a.code < b.code"
        ).fetchall()
        assert all(a < 0.01 for (a,) in overlap)
        covered = conn.execute(
            "SELECT ST_Area(ST_Difference(s.geom, (SELECT ST_Union(geom) FROM community c"
            " WHERE c.street_code = s.code))) FROM street s"
        ).fetchall()
        assert all(a < 0.01 for (a,) in covered), covered


def test_every_problem_reported_and_nothing_imported(city: Settings, tmp: Path) -> None:
    bad = write(
        tmp,
        "bad-streets",
        [
            (_box(0, 0, 420, 600), {"code": "110108001", "name": "东街道"}),  # 20 m over
            (_box(400, 0, 700, 600), {"code": "110108002", "name": "西街道"}),  # 100 m gap
            (_box(700, 0, 800, 600), {"code": "1101080", "name": "坏代码"}),
            (_box(780, 0, 900, 600), {"code": "110108003", "name": "出界"}),  # 100 m outside
        ],
    )
    with db.connect(city) as conn:
        before = conn.execute("SELECT code, ST_AsBinary(geom) FROM street ORDER BY code").fetchall()
    with pytest.raises(BoundaryProblems) as caught:
        import_file(city, bad, "streets")
    report = "\n".join(caught.value.report)
    assert "overlaps 110108001 by 12,000 m²" in report
    assert "'1101080' is not 9 digits" in report
    assert "110108003" in report and "lies outside district 110108" in report
    # and the part of the district that the refused streets leave uncovered: every problem
    assert "district 110108: gap of" in report
    assert caught.value.message.startswith("4 problem(s)")
    with db.connect(city) as conn:
        after = conn.execute("SELECT code, ST_AsBinary(geom) FROM street ORDER BY code").fetchall()
    assert after == before
    gap = write(
        tmp,
        "gap-streets",
        [
            (_box(0, 0, 400, 600), {"code": "110108001", "name": "东街道"}),
            (_box(400, 0, 700, 600), {"code": "110108002", "name": "西街道"}),
        ],
    )
    with pytest.raises(BoundaryProblems) as caught:
        import_file(city, gap, "streets")
    assert caught.value.report == [
        "district 110108: gap of 60,000 m² covered by no street (next to 110108002)"
    ]
    # the command line lists every problem, then one error line
    env = {"CITYGRID_DATABASE_URL": city.database_url}
    out = CliRunner().invoke(main, ["import", str(bad), "--as", "streets"], env=env)
    assert out.exit_code == 1
    lines = out.output.splitlines()
    assert len([x for x in lines if x.startswith("problem: ")]) == 4
    assert lines[-1].startswith("citygrid: error: 4 problem(s)")
    assert "Traceback" not in out.output


def test_community_in_the_wrong_street_is_named(city: Settings, tmp: Path) -> None:
    wrong = write(
        tmp, "wrong", [(_box(450, 0, 800, 600), {"code": "110108001009", "name": "错位"})]
    )
    with pytest.raises(BoundaryProblems) as caught:
        import_file(city, wrong, "communities")
    assert "it lies mostly in street 110108002" in caught.value.report[0]


def test_grids_build_bounded_by_road_and_wall(city: Settings) -> None:
    with db.transaction(city) as conn:
        built = grids_build.build(conn, ["110108001001"], 9000.0, 2, city.srid)
    assert built[0].grids == len(built[0].areas)
    with db.connect(city) as conn:
        grids = _grids(conn, "110108001001")
    road = shapely.LineString([(-10, 300), (810, 300)])
    wall = shapely.LineString([(100, -5), (100, 300)])
    # two 60,000 m² halves (the road); the south one in two 30,000 m² faces (the wall):
    # 7 grids of 8,571 m² north, 2 × 3 of 10,000 m² south
    assert len(grids) == 13
    union = shapely.union_all([g for _, g in grids])
    assert abs(union.area - 120_000) < 1
    for code, g in grids:
        assert 0.5 * 9000 <= g.area <= 1.5 * 9000, (code, g.area)
        # no grid straddles the road or the wall: they run along grid edges only
        assert g.buffer(-0.01).intersection(road).is_empty, code
        assert g.buffer(-0.01).intersection(wall).is_empty, code
    for (a, ga), (b, gb) in zip(grids, grids[1:], strict=False):
        assert ga.intersection(gb).area < 0.01, (a, b)
    # serials: west→east within a row, rows north→south
    assert grids[0][1].contains(shapely.Point(1, 599))
    assert grids[-1][1].contains(shapely.Point(199, 1))
    # a later serial is never a row (one target side) north of an earlier one
    ys = [g.centroid.y for _, g in grids]
    assert all(ys[j] <= ys[i] + 9000**0.5 for i in range(len(ys)) for j in range(i, len(ys)))
    # the south half's first row: west of the wall before east of it
    south = [g for _, g in grids if g.centroid.y < 300]
    assert south[0].centroid.x < 100 < south[1].centroid.x


def test_grids_build_is_deterministic(city: Settings) -> None:
    with db.transaction(city) as conn:
        grids_build.build(conn, ["110108002001"], 10000.0, 2, city.srid)
    with db.connect(city) as conn:
        first = [(c, g.wkb) for c, g in _grids(conn, "110108002001")]
    with db.transaction(city) as conn:
        again = grids_build.build(conn, ["110108002001"], 10000.0, 2, city.srid)
    with db.connect(city) as conn:
        second = [(c, g.wkb) for c, g in _grids(conn, "110108002001")]
    assert first == second and again[0].kept == again[0].grids == len(first)
    # the community east of the road: 2 × 120,000 m² → 24 grids of 10,000 m²
    assert len(first) == 24


def test_components_and_addresses_follow_their_grids(city: Settings) -> None:
    with db.transaction(city) as conn:
        grids_build.build(conn, ["110108001002"], 40000.0, 2, city.srid)
        point = f"ST_SetSRID(ST_MakePoint({X0 + 390}, {Y0 + 10}), {city.srid})"
        old = _grid_at(conn, point)
        conn.execute(
            "INSERT INTO component (code, name, grid_code, geom, origin) VALUES"
            f" ('1101080101000001', '井盖', %s, {point}, 'test')",
            (old,),
        )
        conn.execute(
            "INSERT INTO address (kind, road_name, house_number, full_text, grid_code, geom,"
            f" origin) VALUES ('house', '测试路', 5, '测试路5号', %s, {point}, 'test')",
            (old,),
        )
    env = {"CITYGRID_DATABASE_URL": city.database_url, "CITYGRID_DATA_DIR": str(city.data_dir)}
    out = CliRunner().invoke(
        main, ["grids", "build", "--community", "110108001002", "--target-m2", "8000"], env=env
    )
    assert out.exit_code == 0, out.output
    assert "1 components and 1 addresses moved" in out.output
    assert "within ±50% of the target" in out.output
    with db.connect(city) as conn:
        new = _grid_at(conn, point)
        assert new != old
        assert conn.execute("SELECT grid_code FROM component").fetchone() == (new,)
        assert conn.execute("SELECT grid_code FROM address").fetchone() == (new,)
        # a case holds a grid: a rebuild that would change it is refused, nothing changes
        conn.execute(
            "INSERT INTO city_case (number, district, kind, major, minor, source, state,"
            " description, geom, grid_code, community_code, street_code, reporter) VALUES"
            f" ('2026-000001', '110108', 'event', '01', '01', 'phone', 'reported', 'x', {point},"
            " %s, '110108001002', '110108001', 'test')",
            (new,),
        )
        conn.commit()
    try:
        with (
            pytest.raises(Conflict, match="case\\(s\\) keep unit grids that would change"),
            db.transaction(city) as conn,
        ):
            grids_build.build(conn, ["110108001002"], 20000.0, 2, city.srid)
        # the same target changes no grid: allowed
        with db.transaction(city) as conn:
            same = grids_build.build(conn, ["110108001002"], 8000.0, 2, city.srid)
        assert same[0].kept == same[0].grids
    finally:
        with db.transaction(city) as conn:
            conn.execute("DELETE FROM city_case")
            conn.execute("DELETE FROM component")
            conn.execute("DELETE FROM address")


def test_district_show_and_cli_errors(city: Settings) -> None:
    env = {"CITYGRID_DATABASE_URL": city.database_url}
    out = CliRunner().invoke(main, ["district", "show"], env=env)
    assert out.exit_code == 0, out.output
    assert "110108 海淀区  0.48 km²" in out.output
    assert "  110108001 东街道  0.24 km²" in out.output
    assert "    110108002001 三社区  0.240 km²" in out.output
    for args in (
        ["grids", "build", "--community", "110108009009"],
        ["grids", "build", "--street", "110108001", "--community", "110108001001"],
    ):
        bad = CliRunner().invoke(main, args, env=env)
        assert bad.exit_code == 1 and bad.output.startswith("citygrid: error: "), bad.output
        assert bad.output.count("\n") == 1


def test_divide_is_pure_and_merges_slivers() -> None:
    square = shapely.box(0, 0, 300, 100)
    # a road 3 m from the edge leaves a 900 m² sliver: merged, not a grid of its own
    parts = grids_build.divide(square, [shapely.LineString([(-1, 97), (301, 97)])], 10000)
    assert len(parts) == 3 and all(abs(p.area - 10000) < 1 for p in parts)
    assert parts == grids_build.divide(square, [shapely.LineString([(-1, 97), (301, 97)])], 10000)
    with pytest.raises(InvalidInput):
        grids_build.divide(square, [], 0)


def test_boundaries_import_again_by_code(city: Settings, tmp: Path) -> None:
    """Boundaries import again by code: the same file twice changes nothing."""
    d = write(tmp, "district2", [(_box(0, 0, 800, 600), {"code": "110108", "name": "海淀区"})])
    assert import_file(city, d, "district", options=Options()).imported == 1
    with db.connect(city) as conn:
        assert conn.execute("SELECT count(*) FROM district").fetchone() == (1,)


# -- the forgiving import


def _roads_file(tmp: Path) -> Path:
    return write(
        tmp,
        "osm-roads",
        [
            (_line((0, 50), (300, 50)), {"name": "甲路", "highway": "residential"}),
            (_line((0, 80), (300, 80)), {"name": "乙路", "highway": "service"}),
            (_line((0, 110), (300, 110)), {"name": "丙路", "highway": "footway"}),
        ],
    )


def test_where_map_value_and_width_by_class(city: Settings, tmp: Path) -> None:
    path = _roads_file(tmp)
    with pytest.raises(InvalidInput, match="kind 'residential' is not one of .*--map-value"):
        import_file(city, path, "roads", field_map={"kind": "highway"})
    options = Options(
        where="highway <> 'footway'",
        value_map={"kind": {"residential": "branch", "service": "lane"}},
    )
    result = import_file(city, path, "roads", field_map={"kind": "highway"}, options=options)
    assert result.imported == 2
    with db.connect(city) as conn:
        rows = conn.execute(
            "SELECT name, kind, width_m FROM road_line WHERE origin = 'import:osm-roads.gpkg'"
            " ORDER BY name"
        ).fetchall()
    assert sorted(rows) == sorted([("甲路", "branch", 10.0), ("乙路", "lane", 4.0)])
    # the same file again: refused, never doubled; --replace replaces it
    with pytest.raises(InvalidInput, match="already exists .*--replace"):
        import_file(city, path, "roads", field_map={"kind": "highway"}, options=options)
    replaced = options._replace(
        replace=True,
        where=None,
        value_map={"kind": {"residential": "branch", "service": "lane", "footway": "lane"}},
    )
    again = import_file(city, path, "roads", field_map={"kind": "highway"}, options=replaced)
    assert again.imported == 3
    with db.connect(city) as conn:
        count = conn.execute(
            "SELECT count(*) FROM road_line WHERE origin = 'import:osm-roads.gpkg'"
        ).fetchone()
        assert count == (3,)
        conn.execute("DELETE FROM road_line WHERE origin = 'import:osm-roads.gpkg'")
        conn.commit()
    with pytest.raises(InvalidInput, match="--where: GDAL cannot use it"):
        import_file(city, path, "roads", options=Options(where="nosuchfield = 1"))


def test_invalid_geometries_repaired_or_skipped(city: Settings, tmp: Path) -> None:
    bowtie = {
        "type": "Polygon",
        "coordinates": [[[X0, Y0], [X0 + 10, Y0 + 10], [X0 + 10, Y0], [X0, Y0 + 10], [X0, Y0]]],
    }
    flat = {"type": "Polygon", "coordinates": [[[X0, Y0], [X0 + 10, Y0], [X0 + 20, Y0], [X0, Y0]]]}
    path = write(
        tmp,
        "bad-buildings",
        [
            (_box(10, 10, 30, 30), {"name": "好楼", "floors": "3.5"}),
            (bowtie, {"name": "蝴蝶楼", "floors": "2"}),
            (flat, {"name": "扁楼", "floors": "1"}),
        ],
    )
    with pytest.raises(InvalidInput, match="feature 3: geometry cannot be repaired .*--skip-inv"):
        import_file(city, path, "buildings")
    result = import_file(city, path, "buildings", options=Options(skip_invalid=True))
    assert result.imported == 2
    assert len(result.skipped) == 1 and result.skipped[0].startswith("feature 3: ")
    assert any("1 invalid geometries repaired" in n for n in result.notes), result.notes
    assert any("floors: 1 value(s) not whole numbers were rounded" in n for n in result.notes)
    with db.connect(city) as conn:
        rows = conn.execute(
            "SELECT name, floors, ST_IsValid(geom), round(ST_Area(geom)) FROM building"
            " WHERE origin = 'import:bad-buildings.gpkg' ORDER BY name"
        ).fetchall()
        conn.execute("DELETE FROM building WHERE origin = 'import:bad-buildings.gpkg'")
        conn.commit()
    assert sorted(rows) == sorted([("好楼", 4, True, 400), ("蝴蝶楼", 2, True, 50)])
    env = {"CITYGRID_DATABASE_URL": city.database_url}
    out = CliRunner().invoke(
        main, ["import", str(path), "--as", "buildings", "--skip-invalid"], env=env
    )
    assert out.exit_code == 0, out.output
    assert "skipped: feature 3: " in out.output and "imported 2 buildings" in out.output
    with db.transaction(city) as conn:
        conn.execute("DELETE FROM building WHERE origin = 'import:bad-buildings.gpkg'")


def test_srid_mismatch_is_one_line(city: Settings, tmp: Path) -> None:
    import dataclasses

    path = _roads_file(tmp)
    with pytest.raises(InvalidInput, match="the database holds EPSG:4548 but .* srid = 4547"):
        import_file(dataclasses.replace(city, srid=4547), path, "roads")
    env = {"CITYGRID_DATABASE_URL": city.database_url, "CITYGRID_SRID": "4547"}
    out = CliRunner().invoke(main, ["import", str(path), "--as", "roads"], env=env)
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert out.output.startswith("citygrid: error: the database holds EPSG:4548")
