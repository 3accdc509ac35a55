"""An administrator's bad files and odd data, through `citygrid import` and the geocoder:
each refusal is one line naming the feature, and nothing already stored changes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mapserver import db, geocode
from mapserver.cli import main
from mapserver.errors import InvalidInput, NotFound
from mapserver.importer import import_file
from mapserver.settings import Settings

from .test_import import _geojson

LON, LAT = 116.30, 39.98
BOX = (116.295, 39.975, 116.31, 39.99)  # the district, street, community and grid of the tests


def _point(lon: float = LON, lat: float = LAT) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def _square(lon: float = LON, lat: float = LAT, d: float = 0.0005) -> dict[str, Any]:
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def _line(lon: float = LON, lat: float = LAT) -> dict[str, Any]:
    return {"type": "LineString", "coordinates": [[lon, lat], [lon + 0.001, lat]]}


@pytest.fixture
def area(settings: Settings) -> Iterator[Settings]:
    """A district, street, community and one unit grid around the test features."""
    box = (
        f"ST_Multi(ST_Transform(ST_MakeEnvelope({', '.join(map(str, BOX))}, 4326),"
        f" {settings.srid}))"
    )
    with db.transaction(settings) as conn:
        conn.execute(
            "INSERT INTO district (code, name, geom, origin) VALUES "
            f"('110108', '海淀区', {box}, 'tv') ON CONFLICT DO NOTHING"
        )
        conn.execute(f"INSERT INTO street VALUES ('110108902', '110108', '测试街道', {box}, 'tv')")
        conn.execute(
            f"INSERT INTO community VALUES ('110108902001', '110108902', '测试社区', {box}, 'tv')"
        )
        conn.execute(
            "INSERT INTO unit_grid (code, community_code, area_m2, geom, origin) VALUES "
            f"('11010890200101', '110108902001', 1, {box}, 'tv')"
        )
    yield settings
    with db.transaction(settings) as conn:
        for table in ("address", "building", "road_line", "annotation"):
            conn.execute(f"DELETE FROM {table} WHERE origin LIKE 'import:%%'")
        for table in ("unit_grid", "community", "street", "district"):
            conn.execute(f"DELETE FROM {table} WHERE origin = 'tv'")


def _rows(settings: Settings, table: str) -> list[tuple[object, ...]]:
    with db.connect(settings) as conn:
        return conn.execute(
            f"SELECT origin, ST_AsText(geom) FROM {table} WHERE origin LIKE 'import:%%'"
            " ORDER BY 1, 2"
        ).fetchall()


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, list(args), env={"CITYGRID_DATABASE_URL": settings.database_url}
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("kind", "geometry", "props", "column"),
    [
        ("buildings", _square(), {"floors": "99999999999999"}, "floors"),
        ("buildings", _square(), {"floors": "1e300"}, "floors"),
        ("roads", _line(), {"width_m": "1e999"}, "width_m"),
        ("annotations", _point(), {"text": "x", "angle": "-1e400"}, "angle"),
        ("addresses", _point(), {"road_name": "学院路", "house_number": "99999999999"}, "house"),
        # Below the table's CHECK: said naming the feature, not the constraint's name.
        ("buildings", _square(), {"floors": "-2"}, "floors '-2' must be above 0"),
        ("buildings", _square(), {"floors": "0.4"}, "floors '0.4' must be above 0"),
        ("roads", _line(), {"width_m": "0"}, "width_m '0' must be above 0"),
    ],
)
def test_a_number_out_of_range_is_one_line_and_changes_nothing(
    area: Settings,
    tmp_path: Path,
    kind: str,
    geometry: dict[str, Any],
    props: dict[str, str],
    column: str,
) -> None:
    table = {"buildings": "building", "roads": "road_line", "annotations": "annotation"}.get(
        kind, "address"
    )
    good = _geojson(tmp_path / "same.geojson", [(geometry, {"text": "x", "landmark": "塔"})])
    import_file(area, good, kind)
    before = _rows(area, table)
    bad = _geojson(tmp_path / "same.geojson", [(geometry, props)])
    code, output = _cli(area, "import", str(bad), "--as", kind, "--replace")
    assert code == 1, output
    assert output.startswith("citygrid: error: same.geojson: feature 1: ")
    assert column in output and output.count("\n") == 1, output
    assert _rows(area, table) == before


def test_a_dbf_in_another_encoding_without_cpg_is_refused_or_read_with_encoding(
    area: Settings, tmp_path: Path
) -> None:
    """A GBK .dbf without its .cpg: GDAL passes its bytes through; they are not UTF-8, so
    the import says so and how to name the encoding, instead of storing U+FFFD."""
    src = _geojson(tmp_path / "r.geojson", [(_line(), {"name": "中关村大街"})])
    shp = tmp_path / "gbk.shp"
    subprocess.run(
        ["ogr2ogr", "-f", "ESRI Shapefile", str(shp), str(src), "-lco", "ENCODING=GBK"],
        check=True,
        capture_output=True,
    )
    (tmp_path / "gbk.cpg").unlink()
    code, output = _cli(area, "import", str(shp), "--as", "roads")
    assert code == 1 and output.count("\n") == 1, output
    assert "feature 1" in output and "--encoding" in output, output
    assert _rows(area, "road_line") == []
    code, output = _cli(area, "import", str(shp), "--as", "roads", "--encoding", "GBK")
    assert code == 0, output
    with db.connect(area) as conn:
        names = conn.execute("SELECT name FROM road_line WHERE origin = 'import:gbk.shp'")
        assert names.fetchall() == [("中关村大街",)]
    code, output = _cli(area, "import", str(src), "--as", "roads", "--encoding", "NOPE-9")
    assert code != 0 and "NOPE-9" in output and output.count("\n") == 1, output


def test_a_csv_in_another_encoding_is_read_with_encoding(area: Settings, tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_bytes(f"landmark,WKT\n颐和园,POINT ({LON} {LAT})\n".encode("gbk"))
    code, output = _cli(area, "import", str(csv), "--as", "addresses", "--s-srs", "EPSG:4326")
    assert code == 1 and "--encoding" in output and output.count("\n") == 1, output
    code, output = _cli(
        area, "import", str(csv), "--as", "addresses", "--s-srs", "EPSG:4326", "--encoding", "gbk"
    )
    assert code == 0, output
    with db.connect(area) as conn:
        hit = geocode.geocode_address(conn, "颐和园")
    assert hit.matched_text == "颐和园" and hit.grid_code == "11010890200101"


def test_a_road_name_holding_a_placeholder_is_written_as_given(
    area: Settings, tmp_path: Path
) -> None:
    src = _geojson(
        tmp_path / "a.geojson", [(_point(), {"road_name": "{number}路", "house_number": "5"})]
    )
    import_file(area, src, "addresses")
    with db.connect(area) as conn:
        texts = conn.execute("SELECT full_text FROM address WHERE origin = 'import:a.geojson'")
        assert texts.fetchall() == [("{number}路5号",)]


def test_a_landmark_in_no_unit_grid_is_not_found_not_a_crash(
    area: Settings, tmp_path: Path
) -> None:
    far = _geojson(tmp_path / "far.geojson", [(_point(116.40, 39.90), {"landmark": "远方塔"})])
    near = _geojson(tmp_path / "near.geojson", [(_point(), {"landmark": "近处塔"})])
    imported = import_file(area, far, "addresses")
    # Said as never to be placed, not as waiting for `grids build`.
    assert any("1 address(es) lie outside the district" in n for n in imported.notes)
    assert not any("no unit grid yet" in n for n in imported.notes), imported.notes
    with db.connect(area) as conn, pytest.raises(NotFound):
        geocode.geocode_address(conn, "远方塔")
    import_file(area, near, "addresses")
    with db.connect(area) as conn:
        assert geocode.geocode_address(conn, "近处塔").grid_code == "11010890200101"
    code, output = _cli(area, "geocode", "address", "远方塔")
    assert code == 1 and output.startswith("citygrid: error: no address or landmark"), output
    assert output.count("\n") == 1, output


def test_an_import_reaching_far_beyond_the_district_expires_only_served_tiles(
    area: Settings, tmp_path: Path
) -> None:
    """An address 1,000 km away is stored (it lies in no grid); the tiles dropped after an
    import are those of the district, not of the table's whole extent (hours of metatiles)."""
    far = _geojson(tmp_path / "far.geojson", [(_point(126.0, 45.0), {"landmark": "哈尔滨"})])
    near = _geojson(tmp_path / "near.geojson", [(_point(), {"landmark": "近处塔"})])
    env = {**os.environ, "CITYGRID_DATABASE_URL": area.database_url}
    env["CITYGRID_DATA_DIR"] = str(tmp_path / "var")
    for path in (far, near):
        run = subprocess.run(
            [sys.executable, "-m", "mapserver.cli", "import", str(path), "--as", "addresses"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr


def test_invalid_encoding_name_leaves_nothing(area: Settings, tmp_path: Path) -> None:
    src = _geojson(tmp_path / "b.geojson", [(_square(), {"name": "楼"})])
    with pytest.raises(InvalidInput, match="encoding"):
        import_file(area, src, "buildings", encoding="no-such-codec")
    assert _rows(area, "building") == []


def test_a_house_number_with_its_letter_finds_that_house(area: Settings, tmp_path: Path) -> None:
    """Kangaskatu 12 and 12a are two houses: each is found by its own number (12a found 12,
    the letter dropped), and a letter no house has finds the number without one."""
    houses = [
        (_point(), {"road_name": "Kangaskatu", "house_number": number})
        for number in ("12a", "12", "12b")
    ]
    path = _geojson(tmp_path / "letters.geojson", houses)
    import_file(area, path, "addresses")
    with db.connect(area) as conn:
        for asked, found in (("Kangaskatu 12a", "12a"), ("Kangaskatu 12", "12"),
                             ("12B Kangaskatu", "12b"), ("Kangaskatu 12c", "12")):  # fmt: skip
            hit = geocode.geocode_address(conn, asked)
            assert hit.matched_text == f"Kangaskatu{found}号", (asked, hit.matched_text)


def test_full_width_house_numbers_are_read_as_digits(area: Settings, tmp_path: Path) -> None:
    """２７ (full-width digits, as Chinese text often writes them) is house number 27: it was
    refused as "does not start with digits"."""
    path = _geojson(
        tmp_path / "wide.geojson", [(_point(), {"road_name": "宽街", "house_number": "２７"})]
    )
    import_file(area, path, "addresses")
    with db.connect(area) as conn:
        assert geocode.geocode_address(conn, "宽街27号").matched_text == "宽街27号"
