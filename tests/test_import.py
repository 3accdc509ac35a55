"""`citygrid import` with real GDAL files written by the tests, into a real PostGIS."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import db
from mapserver.cli import main
from mapserver.errors import InvalidInput
from mapserver.importer import Options, import_file, parse_field_map
from mapserver.settings import Settings

TABLES = (
    "building",
    "road_line",
    "road_surface",
    "water",
    "green",
    "annotation",
    "component",
    "unit_grid",
)
LON, LAT = 116.30, 39.98


def _square(lon: float, lat: float, d: float = 0.0005) -> list[list[list[float]]]:
    return [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]]


def _geojson(path: Path, features: list[dict]) -> Path:  # type: ignore[type-arg]
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": props, "geometry": geom} for geom, props in features
        ],
    }
    path.write_text(json.dumps(collection, ensure_ascii=False), "utf-8")
    return path


def _convert(src: Path, driver: str, dst: Path, *extra: str) -> Path:
    subprocess.run(
        ["ogr2ogr", "-f", driver, str(dst), str(src), *extra], check=True, capture_output=True
    )
    return dst


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


@pytest.fixture
def area(settings: Settings) -> Iterator[Settings]:
    """A street, community and grid around the test features, removed afterwards."""
    with db.transaction(settings) as conn:
        box = (
            "ST_Multi(ST_Transform(ST_MakeEnvelope(116.295, 39.975, 116.31, 39.99, 4326), "
            f"{settings.srid}))"
        )
        conn.execute(
            "INSERT INTO district (code, name, geom, origin) VALUES "
            f"('110108', '海淀区', {box}, 'test') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            f"INSERT INTO street VALUES ('110108901', '110108', '测试街道', {box}, 'test')"
        )
        conn.execute(
            f"INSERT INTO community VALUES ('110108901001', '110108901', '测试社区', {box}, 'test')"
        )
        conn.execute(
            "INSERT INTO unit_grid (code, community_code, area_m2, geom, origin) VALUES "
            f"('11010890100101', '110108901001', 1, {box}, 'test')"
        )
    yield settings
    with db.transaction(settings) as conn:
        for table in ("component", "unit_grid", "community", "street", "district"):
            conn.execute(f"DELETE FROM {table} WHERE origin <> 'demo' AND origin <> 'keep'")
        for table in TABLES:
            conn.execute(f"DELETE FROM {table} WHERE origin LIKE 'import:%%'")


def test_geopackage_and_shapefile_arrive_reprojected(area: Settings, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _geojson(
        tmp_path / "b.geojson",
        [
            (
                {"type": "Polygon", "coordinates": _square(LON, LAT)},
                {"NAME": "测试大厦", "FLOORS": 12, "MENPAI": "27"},
            ),
            (
                {"type": "Polygon", "coordinates": _square(LON + 0.001, LAT)},
                {"NAME": "二号楼", "FLOORS": 3, "MENPAI": "29"},
            ),
        ],
    )
    gpkg = _convert(src, "GPKG", tmp_path / "b.gpkg")
    shp = _convert(src, "ESRI Shapefile", tmp_path / "b.shp", "-lco", "ENCODING=UTF-8")
    for path, scale in ((gpkg, 500), (shp, 2000)):
        result = import_file(
            area, path, "buildings", scale, field_map=parse_field_map(["house_number=MENPAI"])
        )
        assert result.imported == 2 and result.table == "building"
        rows = conn.execute(
            """SELECT name, floors, house_number,
                      ST_Distance(ST_PointN(ST_ExteriorRing(ST_GeometryN(geom, 1)), 1),
                                  ST_Transform(ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s)),
                      ST_SRID(geom)
               FROM building WHERE origin = %s ORDER BY name DESC""",
            (LON, LAT, area.srid, f"import:{path.name}"),
        ).fetchall()
        assert [(r[0], r[1], r[2]) for r in rows] == [("测试大厦", 12, "27"), ("二号楼", 3, "29")]
        assert rows[0][3] < 0.01 and rows[0][4] == area.srid
        scales = conn.execute(
            "SELECT DISTINCT scale FROM building WHERE origin = %s", (f"import:{path.name}",)
        ).fetchall()
        assert scales == [(scale,)]


def test_roads_lines_and_surfaces(area: Settings, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = _geojson(
        tmp_path / "r.geojson",
        [
            (
                {"type": "LineString", "coordinates": [[LON, LAT], [LON + 0.002, LAT]]},
                {"name": "测试路", "kind": "secondary", "width_m": "18"},
            ),
        ],
    )
    assert import_file(area, lines, "roads").table == "road_line"
    surfaces = _geojson(
        tmp_path / "s.geojson",
        [
            ({"type": "Polygon", "coordinates": _square(LON, LAT)}, {"kind": "road"}),
        ],
    )
    assert import_file(area, surfaces, "roads").table == "road_surface"
    row = conn.execute(
        "SELECT name, kind, width_m FROM road_line WHERE origin = 'import:r.geojson'"
    ).fetchone()
    assert row == ("测试路", "secondary", 18.0)


def test_components_get_their_grid(area: Settings, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = _geojson(
        tmp_path / "c.geojson",
        [
            (
                {"type": "Point", "coordinates": [LON + 0.001, LAT + 0.001]},
                {"BM": "1101080101000001", "zt": "missing"},
            ),
            (
                {"type": "Point", "coordinates": [LON + 0.002, LAT + 0.001]},
                {"BM": "1101080418000002"},
            ),
        ],
    )
    bad_class = import_file
    with pytest.raises(InvalidInput, match="feature 2: .*bad class 04/18"):
        bad_class(area, src, "components", field_map={"code": "BM", "state": "zt"})
    src = _geojson(
        tmp_path / "c.geojson",
        [
            (
                {"type": "Point", "coordinates": [LON + 0.001, LAT + 0.001]},
                {"BM": "1101080101000001", "zt": "missing"},
            ),
            (
                {"type": "Point", "coordinates": [LON + 0.002, LAT + 0.001]},
                {"BM": "1101080402000002"},
            ),
        ],
    )
    result = import_file(area, src, "components", field_map={"code": "BM", "state": "zt"})
    assert result.imported == 2
    rows = conn.execute(
        "SELECT code, name, state, grid_code, responsible_dept FROM component "
        "WHERE origin = 'import:c.geojson' ORDER BY code"
    ).fetchall()
    assert rows == [
        ("1101080101000001", "上水井盖", "missing", "11010890100101", "自来水集团"),
        ("1101080402000002", "行道树", "intact", "11010890100101", "园林绿化局"),
    ]
    with pytest.raises(InvalidInput, match="already exists|duplicate|exists"):
        import_file(area, src, "components", field_map={"code": "BM", "state": "zt"})


def test_a_keyed_import_after_one_without_ids_doubles_nothing(
    area: Settings, conn, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The same file imported without --id-field, then with it: the first rows had no id to
    match, and stayed beside the new ones. Now refused, or replaced with --replace."""
    src = _geojson(
        tmp_path / "k.geojson",
        [
            ({"type": "Polygon", "coordinates": _square(LON + 0.001 * i, LAT)}, {"FID": f"b{i}"})
            for i in range(3)
        ],
    )

    def rows() -> list[tuple[str | None, int]]:
        found = conn.execute(
            "SELECT source_id, scale FROM building WHERE origin = 'import:k.geojson'"
            " ORDER BY source_id NULLS FIRST, scale"
        ).fetchall()
        conn.rollback()
        return [(r[0], r[1]) for r in found]

    assert import_file(area, src, "buildings").imported == 3
    assert import_file(area, src, "buildings", 2000).imported == 3
    plain = [(None, 500)] * 3 + [(None, 2000)] * 3
    assert rows() == plain
    keyed = Options(id_field="FID")
    with pytest.raises(
        InvalidInput,
        match=r"k.geojson at 1:500 was imported before without"
        r" --id-field \(3 building rows with no id to match\): --replace",
    ):
        import_file(area, src, "buildings", options=keyed)
    assert rows() == plain
    result = import_file(area, src, "buildings", options=keyed._replace(replace=True))
    assert result.imported == 3
    assert "3 building row(s) of the import without ids replaced" in result.notes
    assert rows() == [(None, 2000)] * 3 + [("b0", 500), ("b1", 500), ("b2", 500)]
    again = import_file(area, src, "buildings", options=keyed)  # keyed: replaces its own ids
    assert again.notes == ("3 building row(s) with the same ids replaced",)
    assert rows() == [(None, 2000)] * 3 + [("b0", 500), ("b1", 500), ("b2", 500)]


def test_bad_files_change_nothing(area: Settings, conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = _counts(conn)
    conn.rollback()
    corrupt = tmp_path / "corrupt.gpkg"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    points = _geojson(
        tmp_path / "p.geojson",
        [
            ({"type": "Point", "coordinates": [LON, LAT]}, {"text": "测试"}),
        ],
    )
    nofield = _geojson(
        tmp_path / "n.geojson",
        [
            ({"type": "Point", "coordinates": [LON, LAT]}, {"label": "测试"}),
        ],
    )
    src = _geojson(
        tmp_path / "t.geojson",
        [
            (
                {"type": "Polygon", "coordinates": _square(LON, LAT)},
                {"name": "x", "floors": "many"},
            ),
        ],
    )
    shp = _convert(src, "ESRI Shapefile", tmp_path / "t.shp", "-lco", "ENCODING=UTF-8")
    (tmp_path / "t.prj").unlink()
    metres = _geojson(  # projected coordinates in a GeoJSON, which is in degrees
        tmp_path / "m.geojson",
        [({"type": "Point", "coordinates": [441000.0, 4428000.0]}, {"text": "测试"})],
    )
    truncated = tmp_path / "cut.shp"
    truncated.write_bytes(shp.read_bytes()[:60])
    (tmp_path / "cut.shx").write_bytes((tmp_path / "t.shx").read_bytes()[:40])
    cases = [
        (corrupt, "buildings", "cannot read corrupt.gpkg"),
        (tmp_path / "missing.gpkg", "buildings", "no such file"),
        (points, "buildings", "need polygon geometries, the file has point"),
        (nofield, "annotations", "missing field 'text'"),
        (src, "buildings", "floors 'many' is not a number"),
        (shp, "buildings", "declares no CRS"),
        (truncated, "buildings", "cut.shp"),
        (metres, "annotations", "do not fit its CRS .*; give the CRS they are in with --s-srs"),
    ]
    for path, kind, message in cases:
        with pytest.raises(InvalidInput, match=message):
            import_file(area, path, kind)
    with pytest.raises(InvalidInput, match="unknown CRS"):
        import_file(area, src, "green", source_srs="FOO:1")
    assert _counts(conn) == before
    # The same shapefile imports once its CRS is given (and floors fixed by mapping).
    assert import_file(area, shp, "green", source_srs="EPSG:4326").imported == 1


def test_cli_one_line_errors(area: Settings, tmp_path: Path) -> None:
    env = {"CITYGRID_DATABASE_URL": area.database_url}
    src = _geojson(
        tmp_path / "a.geojson",
        [
            ({"type": "Point", "coordinates": [LON, LAT]}, {"TEXT": "万泉河"}),
        ],
    )
    ok = CliRunner().invoke(
        main, ["import", str(src), "--as", "annotations", "--scale", "2000"], env=env
    )
    assert ok.exit_code == 0, ok.output
    assert ok.output == "imported 1 annotations from a.geojson at 1:2000\n"
    bad = CliRunner().invoke(main, ["import", str(src), "--as", "water"], env=env)
    assert bad.exit_code == 1
    assert bad.output.startswith("citygrid: error: ") and bad.output.count("\n") == 1
    mapping = CliRunner().invoke(
        main, ["import", str(src), "--as", "annotations", "--map-field", "text"], env=env
    )
    assert mapping.exit_code != 0 and "TARGET=SOURCE" in mapping.output


def test_import_works_after_mapnik_was_loaded(area: Settings, tmp_path: Path) -> None:
    """mapnik sets PROJ_LIB/GDAL_DATA for its own bundle on import; GDAL's tools must not
    inherit them."""
    import mapnik  # noqa: F401

    src = _geojson(
        tmp_path / "w.geojson",
        [
            ({"type": "Polygon", "coordinates": _square(LON, LAT)}, {"name": "湖"}),
        ],
    )
    assert import_file(area, src, "water").imported == 1
