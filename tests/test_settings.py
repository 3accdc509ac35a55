"""Settings: defaults, TOML file, environment precedence, and errors naming the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mapserver.cli import main
from mapserver.settings import Settings, SettingsError, describe, load


def test_defaults_without_file_or_environment() -> None:
    s = load(environ={})
    assert s == Settings()
    assert s.data_dir == Path("./var")
    assert s.srid == 4548
    assert s.tile_dir == Path("./var/tiles")


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "citygrid.toml"
    config.write_text('srid = 4547\ndata_dir = "/srv/citygrid"\ngrid_serial_digits = 3\n')
    s = load(config, environ={"CITYGRID_DATA_DIR": "/data", "CITYGRID_DB_POOL_MAX": "4"})
    assert s.srid == 4547
    assert s.grid_serial_digits == 3
    assert s.data_dir == Path("/data")
    assert s.db_pool_max == 4


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CITYGRID_SRID": "abc"}, "CITYGRID_SRID"),
        ({"CITYGRID_GRID_SERIAL_DIGITS": "4"}, "CITYGRID_GRID_SERIAL_DIGITS"),
        ({"CITYGRID_DATABASE_URL": "mysql://x"}, "CITYGRID_DATABASE_URL"),
        ({"CITYGRID_DISTRICT_CODE": "11010"}, "CITYGRID_DISTRICT_CODE"),
        ({"CITYGRID_TILE_ORIGIN_X": "west"}, "CITYGRID_TILE_ORIGIN_X"),
        ({"CITYGRID_DATABSE_URL": "postgresql://x/y"}, "CITYGRID_DATABSE_URL"),
        ({"CITYGRID_DB_POOL_MIN": "9", "CITYGRID_DB_POOL_MAX": "2"}, "CITYGRID_DB_POOL_MAX"),
    ],
)
def test_bad_values_name_their_key(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(environ=environ)
    assert any(problem.startswith(named) for problem in caught.value.problems)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('srid = "x"\nredis_url = "http://nope"\ncolour = "blue"\n')
    with pytest.raises(SettingsError) as caught:
        load(config, environ={})
    text = " | ".join(caught.value.problems)
    assert f"{config}: srid" in text
    assert f"{config}: redis_url" in text
    assert f"{config}: colour: unknown setting" in text


def test_unreadable_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("srid = = 3\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load(bad, environ={})
    with pytest.raises(SettingsError, match="file not found"):
        load(tmp_path / "missing.toml", environ={})
    picture = tmp_path / "picture.toml"  # a file that is no text was a traceback
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(SettingsError, match="not valid TOML \\(not UTF-8 text\\)"):
        load(picture, environ={})
    for config in (picture, picture / "under-a-file.toml"):  # the second was a traceback too
        result = CliRunner().invoke(main, ["--config", str(config), "config", "check"], env={})
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output


def test_secrets_are_not_settings() -> None:
    s = load(environ={"CITYGRID_CA_PASSPHRASE": "hunter2"})
    assert "hunter2" not in repr(s)


def test_describe_lists_every_setting() -> None:
    names = {name for name, _, _ in describe()}
    assert {"CITYGRID_DATABASE_URL", "CITYGRID_DATA_DIR", "CITYGRID_SRID"} <= names


def test_config_check_cli_names_bad_setting() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["config", "check"], env={"CITYGRID_SRID": "12"})
    assert result.exit_code == 2
    assert "CITYGRID_SRID" in result.output
    ok = runner.invoke(main, ["config", "check"], env={"CITYGRID_SRID": "4548"})
    assert ok.exit_code == 0, ok.output
    *warnings, last = ok.output.strip().splitlines()
    assert last == "ok" and all(w.startswith("warning: ") for w in warnings), ok.output


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text("utf-8")
    for name, _, _ in describe():
        assert f"| `{name}` |" in readme, name


@pytest.mark.parametrize(
    "environ",
    [
        {"CITYGRID_TILE_ORIGIN_X": "430000", "CITYGRID_TILE_ORIGIN_Y": "4440000"},
        {"CITYGRID_TILE_ORIGIN_X": "430000.0", "CITYGRID_TILE_ORIGIN_Y": "4431234.567"},
        {"CITYGRID_TILE_ORIGIN_X": "431234.567", "CITYGRID_TILE_ORIGIN_Y": "4.44e6"},
    ],
)
def test_config_check_refuses_the_published_example_origin(environ: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["config", "check"], env=environ)
    assert result.exit_code == 2
    assert "CITYGRID_TILE_ORIGIN_" in result.output and "example" in result.output


def test_example_origin_refused_in_a_file_too(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("tile_origin_x = 430000\ntile_origin_y = 4440000\n")
    with pytest.raises(SettingsError) as caught:
        load(config, environ={})
    assert {p.split(":")[1].strip() for p in caught.value.problems} == {
        "tile_origin_x",
        "tile_origin_y",
    }


def test_origin_is_unset_by_default_and_set_in_pairs() -> None:
    assert Settings().tile_origin_x is None and Settings().tile_origin_y is None
    with pytest.raises(SettingsError) as caught:
        load(environ={"CITYGRID_TILE_ORIGIN_X": "431234.567"})
    assert caught.value.problems[0].startswith("CITYGRID_TILE_ORIGIN_Y")
    kept = load(
        environ={"CITYGRID_TILE_ORIGIN_X": "431234.567", "CITYGRID_TILE_ORIGIN_Y": "4431234.5"}
    )
    assert (kept.tile_origin_x, kept.tile_origin_y) == (431234.567, 4431234.5)
    ok = CliRunner().invoke(
        main,
        ["config", "check"],
        env={"CITYGRID_TILE_ORIGIN_X": "431234.567", "CITYGRID_TILE_ORIGIN_Y": "4431234.5"},
    )
    assert ok.exit_code == 0, ok.output
