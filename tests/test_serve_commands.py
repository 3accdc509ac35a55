"""`citygrid renderer serve` and `citygrid serve` with wrong or missing settings: one line and
a non-zero exit before gunicorn starts; a settings file given with --config reaches the
renderer's workers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mapserver import db
from mapserver.cli import main
from mapserver.settings import Settings

from .tls import free_port


@pytest.fixture(autouse=True)
def no_gunicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that lets a bad setting through fails the test instead of replacing it."""

    def execvpe(file: str, args: list[str], env: dict[str, str]) -> None:
        raise AssertionError(f"gunicorn would start: {args}")

    monkeypatch.setattr(os, "execvpe", execvpe)


@pytest.fixture
def renderer_dir(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    """A renderer's data directory holding the files `renderer serve` looks for (their
    contents are never read before gunicorn starts), on a database with a district."""
    pki = tmp_path / "var" / "pki"
    for name in ("ca.crt", "server/127.0.0.1.crt", "server/127.0.0.1.key", "grant/grant.pub"):
        (pki / name).parent.mkdir(parents=True, exist_ok=True)
        (pki / name).write_text("placeholder")
    envelope = "ST_MakeEnvelope(116.29, 39.97, 116.31, 39.99, 4326)"
    box = f"ST_Multi(ST_Transform({envelope}, {settings.srid}))"
    with db.transaction(settings) as conn:
        conn.execute(
            "INSERT INTO district (code, name, geom, origin) VALUES "
            f"('110108', '海淀区', {box}, 'test-serve') ON CONFLICT DO NOTHING"
        )
    yield tmp_path / "var"
    with db.transaction(settings) as conn:
        conn.execute("DELETE FROM district WHERE origin = 'test-serve'")


def _run(args: list[str], env: dict[str, str | None]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=env)
    return result.exit_code, result.output


def _one_line(code: int, output: str, *words: str) -> None:
    assert code != 0, output
    assert output.startswith("citygrid: error: ") and output.count("\n") == 1, output
    for word in words:
        assert word in output, output


def test_a_bad_tile_bind_is_named(renderer_dir: Path, settings: Settings) -> None:
    env = {"CITYGRID_DATABASE_URL": settings.database_url, "CITYGRID_DATA_DIR": str(renderer_dir)}
    code, output = _run(
        ["renderer", "serve", "--bind", f"127.0.0.1:{free_port()}", "--tile-bind", "xyz"], env
    )
    _one_line(code, output, "--tile-bind", "'xyz'")


@pytest.mark.parametrize("command", [["renderer", "serve"], ["serve"]])
def test_a_port_in_use_is_one_line(
    renderer_dir: Path, settings: Settings, command: list[str]
) -> None:
    env = {"CITYGRID_DATABASE_URL": settings.database_url, "CITYGRID_DATA_DIR": str(renderer_dir)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, output = _run([*command, "--bind", f"127.0.0.1:{port}"], env)
    _one_line(code, output, f"127.0.0.1:{port}", "in use")


def test_an_unreachable_map_database_is_one_line(renderer_dir: Path, settings: Settings) -> None:
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url.rsplit("/", 1)[0] + "/citygrid_no_such_db",
        "CITYGRID_DATA_DIR": str(renderer_dir),
    }
    port = free_port()
    code, output = _run(
        ["renderer", "serve", "--bind", f"127.0.0.1:{port}", "--tile-bind", "off"], env
    )
    _one_line(code, output, "citygrid_no_such_db", "unavailable")


def test_the_settings_file_reaches_the_workers(
    renderer_dir: Path, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "renderer.toml"
    config.write_text(
        f'database_url = "{settings.database_url}"\ndata_dir = "{renderer_dir}"\n', "utf-8"
    )
    started: dict[str, Any] = {}

    def execvpe(file: str, args: list[str], env: dict[str, str]) -> None:
        started.update(file=file, args=args, env=env)

    monkeypatch.setattr(os, "execvpe", execvpe)
    port = free_port()
    env: dict[str, str | None] = {"CITYGRID_DATABASE_URL": None, "CITYGRID_DATA_DIR": None}
    code, output = _run(
        [
            "--config",
            str(config),
            "renderer",
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
            "--tile-bind",
            "off",
        ],
        env,
    )
    assert code == 0, output
    assert started["env"]["CITYGRID_CONFIG"] == str(config.resolve())
    assert started["env"]["CITYGRID_TLS_RENDERER_CERT"].startswith(str(renderer_dir))
