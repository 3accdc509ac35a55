"""Click's own refusals are one line, as every other refusal of `citygrid` is: an unknown
option, a missing argument, a value out of range, a misspelt command. They printed click's
usage, a hint and "Error: …" over four lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from mapserver.cli import main
from mapserver.commands.base import Finite


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = list(_commands(main))


def _one_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, prog_name="citygrid", env={"CITYGRID_CONFIG": ""})
    assert result.exit_code == 2, (args, result.output)
    assert result.stdout == "" and result.stderr.count("\n") == 1, (args, result.stderr)
    assert result.stderr.startswith("citygrid: error: "), (args, result.stderr)
    return result.stderr.removeprefix("citygrid: error: ").rstrip("\n")


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_one_line_naming_the_command(path: tuple[str, ...]) -> None:
    said = _one_line([*path, "--zzzz"])
    assert said == f"No such option '--zzzz' (see 'citygrid {' '.join(path)} --help')"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["case", "export", "1", "--wait", "-1"],
            "Invalid value for '--wait': -1.0 is not in the range 0<=x<=600 "
            "(see 'citygrid case export --help')",
        ),
        (["case", "export"], "Missing argument 'NUMBER' (see 'citygrid case export --help')"),
        (
            ["case", "exprt", "1"],
            "No such command 'exprt'. Did you mean 'export'? (see 'citygrid case --help')",
        ),
        (["nosuch"], "No such command 'nosuch' (see 'citygrid --help')"),
        (  # click's FloatRange let NaN through to a traceback deep in the grids' layout
            ["grids", "build", "--target-m2", "nan"],
            "Invalid value for '--target-m2': 'nan' is not a finite number "
            "(see 'citygrid grids build --help')",
        ),
        (
            ["geocode", "point", "inf", "1"],
            "Invalid value for 'X': 'inf' is not a finite number "
            "(see 'citygrid geocode point --help')",
        ),
        (
            ["verify-action", "/nonexistent/case.json"],
            "Invalid value for 'BUNDLE': File '/nonexistent/case.json' does not exist "
            "(see 'citygrid verify-action --help')",
        ),
    ],
)
def test_click_refusals_are_one_line(args: list[str], said: str) -> None:
    assert _one_line(args) == said


def test_every_number_a_command_takes_is_finite() -> None:
    """No option or argument takes a bare float or click's FloatRange, which both let NaN in."""
    loose = [
        (" ".join(path), param.name)
        for path in COMMANDS
        for param in _command(path).params
        if isinstance(param.type, click.types.FloatParamType) and not isinstance(param.type, Finite)
    ]
    assert loose == []


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def test_a_group_alone_still_shows_its_commands() -> None:
    result = CliRunner().invoke(main, ["case"], prog_name="citygrid")
    assert result.exit_code == 2 and "Commands:" in result.output and "export" in result.output
    help_ = CliRunner().invoke(main, ["case", "export", "--help"], prog_name="citygrid")
    assert help_.exit_code == 0 and help_.output.startswith("Usage: citygrid case export")


def test_the_installed_command_says_it_in_one_line_too() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mapserver.cli", "case", "export", "1", "--wait", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "citygrid: error: Invalid value for '--wait': 'soon' is not a valid number "
        "(see 'citygrid case export --help')"
    ]
