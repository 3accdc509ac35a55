"""`citygrid demo` puts its district inside the install CRS's area of use (Haidian in
EPSG:4548, the middle of the area of use elsewhere), and its tiles render with content."""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from PIL import Image

from mapserver import db, migrate
from mapserver.cli import main
from mapserver.demo.placement import HAIDIAN, middle
from mapserver.settings import Settings
from tests.conftest import database_url
from tiles import origin
from tiles.service import TileService, district_extent


def test_middle_of_an_area_across_the_antimeridian() -> None:
    assert middle(6.0, 0.0, 12.0, 84.0) == (9.0, 42.0)
    assert middle(170.0, -50.0, -170.0, -30.0) == (180.0, -40.0)
    assert middle(160.0, 0.0, -140.0, 10.0) == (-170.0, 5.0)


# 3067 (Finland): Haidian's EPSG:4548 metres would lie 2,500 km south of its area
@pytest.fixture(scope="module", params=[4548, 32632, 25832, 3067])
def install(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    srid = request.param
    s = dataclasses.replace(
        Settings(),
        database_url=database_url(f"citygrid_demo_{srid}"),
        data_dir=tmp_path_factory.mktemp(f"demo-{srid}"),
        srid=srid,
    )
    db.drop_database(s)
    db.ensure_database(s)
    with db.connect(s) as conn:
        migrate.upgrade(conn, s)
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CITYGRID_")}
    env |= {
        "CITYGRID_DATABASE_URL": s.database_url,
        "CITYGRID_DATA_DIR": str(s.data_dir),
        "CITYGRID_SRID": str(srid),
    }
    result = CliRunner().invoke(
        main, ["demo", "--area-km2", "0.25", "--no-progress"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(main, ["config", "check"], env=env)
    assert check.exit_code == 0 and "error" not in check.output, check.output
    origin.forget()
    yield s
    origin.forget()
    db.drop_database(s)


def test_demo_lies_in_the_crs_area_and_renders(install: Settings) -> None:
    with psycopg.connect(install.database_url) as conn:
        extent = district_extent(conn)
        assert extent is not None
        row = conn.execute(
            "SELECT auth_name, auth_srid FROM spatial_ref_sys WHERE srid = %s", (install.srid,)
        ).fetchone()
        area = origin.area_of_use(str(row[0]), int(row[1]))  # type: ignore[index]
        assert area is not None
        west, south, east, north = area
        lonlat = conn.execute(
            "SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (SELECT ST_Transform("
            " ST_SetSRID(ST_MakeEnvelope(%s, %s, %s, %s), %s), 4326)::box2d AS b) s",
            (*extent, install.srid),
        ).fetchone()
        assert lonlat is not None
    lon0, lat0, lon1, lat1 = (float(v) for v in lonlat)
    assert west <= lon0 < lon1 <= east and south <= lat0 < lat1 <= north
    if install.srid == 4548:  # the documented spot: Haidian
        cx, cy = (extent.minx + extent.maxx) / 2, (extent.miny + extent.maxy) / 2
        assert abs(cx - HAIDIAN[0]) < 1 and abs(cy - HAIDIAN[1]) < 1
    else:  # the middle of the area of use
        assert abs((lon0 + lon1) / 2 - (west + east) / 2) < 0.1
        assert abs((lat0 + lat1) / 2 - (south + north) / 2) < 0.1
    svc = TileService.from_settings(dataclasses.replace(install, data_dir=install.data_dir))
    z = svc.grid.z_of_scale(500)
    cx, cy = (extent.minx + extent.maxx) / 2, (extent.miny + extent.maxy) / 2
    tx, ty, _, _ = svc.grid.locate(z, cx, cy)
    pixels = np.asarray(Image.open(io.BytesIO(svc.tile("topo500", z, tx, ty))).convert("RGB"))
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 5  # roads, buildings, labels: not a blank tile
    z = svc.grid.z_of_scale(2000)  # a tile of 143 m: unit grids (~100 m) have edges in it
    tx, ty, _, _ = svc.grid.locate(z, cx, cy)
    grids = np.asarray(Image.open(io.BytesIO(svc.tile("grids", z, tx, ty))).convert("RGBA"))
    assert (grids[..., 3] > 0).sum() > 100  # grid lines drawn where the demo's grids are


def test_demo_at_a_chosen_spot_and_bad_spots_refused(tmp_path: Path) -> None:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CITYGRID_")}
    env |= {"CITYGRID_DATA_DIR": str(tmp_path)}
    for bad in ("1,2,3", "x,1", "nan,1"):
        r = CliRunner().invoke(main, ["demo", "--at", bad, "--no-progress"], env=env)
        assert r.exit_code == 1 and "--at must be X,Y" in r.output, r.output


def test_demo_refuses_a_spot_outside_the_crs_area(settings: Settings, tmp_path: Path) -> None:
    """`--at -5,-5` built the district 2,500 km outside EPSG:4548's area of use (which
    `config check` refused afterwards); `--at 1e300,1e300` was a traceback."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CITYGRID_")}
    env |= {"CITYGRID_DATABASE_URL": settings.database_url, "CITYGRID_DATA_DIR": str(tmp_path)}
    with psycopg.connect(settings.database_url) as conn:
        before = conn.execute("SELECT count(*) FROM district").fetchone()
    for far in ("-5,-5", "1e300,1e300"):
        r = CliRunner().invoke(main, ["demo", "--at", far, "--no-progress"], env=env)
        assert r.exit_code == 1, r.output
        assert r.output.startswith("citygrid: error: --at lies ") and r.output.count("\n") == 1
        assert "outside the area of use of EPSG:4548" in r.output, r.output
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM district").fetchone() == before
