"""Settings that cannot silently be wrong: a geographic CRS, data far outside the CRS's zone
and a district outside the tile matrix are refused (tiles.coverage, pure), and `config
check` says so from a real database."""

from __future__ import annotations

import os

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import settings as settings_mod
from mapserver.cli import main
from mapserver.settings import Settings, SettingsError
from tiles.coverage import Facts, findings
from tiles.origin import stored_matrix
from tiles.tile_grid import BBox, TileGrid

# EPSG:4548's area of use, projected (roughly): 114–120° E
ZONE = BBox(-1_000.0, 2_400_000.0, 1_000_000.0, 5_900_000.0)
HAIDIAN = BBox(430_000.0, 4_420_000.0, 445_000.0, 4_440_000.0)
GRID = TileGrid(ZONE.minx - 50_000, ZONE.maxy + 50_000, 2000)


def test_a_geographic_crs_is_refused_when_the_settings_load() -> None:
    with pytest.raises(SettingsError, match="geographic CRS"):
        settings_mod.build({"srid": 4326})
    result = CliRunner().invoke(main, ["config", "check"], env={"CITYGRID_SRID": "4326"})
    assert result.exit_code == 2 and "CITYGRID_SRID: is a geographic CRS" in result.output


def test_findings_refuse_data_far_from_the_zone_and_outside_the_matrix() -> None:
    fits = Facts(4548, False, ZONE, HAIDIAN, (116.3, 39.98), HAIDIAN, GRID)
    assert findings(fits) == []
    # a file at 25° E reprojected into EPSG:4548: 3,000 km west of its zone
    far = fits._replace(data=BBox(-3_000_000.0, 6_700_000.0, -2_990_000.0, 6_710_000.0),
                        data_lonlat=(25.0, 60.5))  # fmt: skip
    (level, message), *_ = findings(far)
    assert level == "error" and "around 25.0°E 60.5°N" in message and "2,999 km" in message
    # a district the tile matrix does not hold
    outside = fits._replace(grid=TileGrid(500_000.0, 4_000_000.0, 1))
    assert [lv for lv, m in findings(outside) if "tile matrix" in m] == ["error"]
    geographic = fits._replace(geographic=True)
    assert "geographic" in findings(geographic)[0][1]


def test_config_check_reads_the_database(settings: Settings) -> None:
    """The empty test database: the CRS fits and the matrix is its own; a database made for
    another srid is named."""
    env = {k: None for k in os.environ if k.startswith("CITYGRID_")}
    env["CITYGRID_DATABASE_URL"] = settings.database_url
    env["CITYGRID_DATA_DIR"] = str(settings.data_dir)
    ok = CliRunner().invoke(main, ["config", "check"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "error" not in ok.output
    other = CliRunner().invoke(main, ["config", "check"], env=env | {"CITYGRID_SRID": "4547"})
    assert other.exit_code == 1
    assert "the database holds EPSG:4548 but the settings say 4547" in other.output
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO district (code, name, geom) VALUES ('110108', 'Haidian',"
            " ST_Multi(ST_MakeEnvelope(430000, 4420000, 445000, 4440000, 4548)))"
        )
        matrix = stored_matrix(conn)  # drawn from the district as it arrived
        conn.rollback()
    facts = Facts(4548, False, ZONE, None, None, HAIDIAN, matrix.grid())
    assert findings(facts) == []
