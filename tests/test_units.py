"""The systemd units in deploy/systemd start commands that exist: every `citygrid` command
line parses (its commands and options), and every CITYGRID_* variable a unit sets or uses is
a setting (`citygrid` refuses one it does not know, and the service would never start: the
render worker's unit once passed its process count so)."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from mapserver.cli import main
from mapserver.settings import ENV_PREFIX, NOT_SETTINGS, Settings

UNITS = sorted((Path(__file__).parent.parent / "deploy" / "systemd").glob("*.service"))
KNOWN = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)} | set(NOT_SETTINGS)


def _command_lines(unit: Path) -> list[list[str]]:
    text = unit.read_text().replace("\\\n", " ")
    lines = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart=")]
    return [shlex.split(line) for line in lines if line.split()[0].endswith("/citygrid")]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_units_settings_are_known(unit: Path) -> None:
    used = set(re.findall(r"\b(CITYGRID_[A-Z0-9_]+)", unit.read_text()))
    assert used <= KNOWN, sorted(used - KNOWN)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_a_units_citygrid_command_parses(unit: Path) -> None:
    for argv in _command_lines(unit):
        args = [re.sub(r"%[a-zA-Z]", "1", a) for a in argv[1:]]  # systemd's specifiers
        result = CliRunner().invoke(main, [*args, "--help"], prog_name="citygrid")
        assert result.exit_code == 0, (unit.name, args, result.output)
        assert result.output.startswith("Usage: citygrid "), result.output
