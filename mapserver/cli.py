"""The `citygrid` command: one click group, sub-commands per area (mapserver.commands)."""

from __future__ import annotations

import click

from mapserver import settings as settings_mod
from mapserver.commands import (
    admin,
    auditing,
    backups,
    cases,
    data,
    evaluation,
    exchange,
    grids,
    maintenance,
    maps,
    renderer,
    serving,
    street,
)
from mapserver.commands.base import CityGridGroup, Context
from mapserver.device_client import cli as device_client


@click.group(cls=CityGridGroup)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar=settings_mod.CONFIG_ENV,
    help="TOML settings file (default: $CITYGRID_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """CityGrid: secure WebGIS map server for grid-based city management."""
    ctx.obj = Context(config_file)


for module in (
    data,
    grids,
    admin,
    maps,
    auditing,
    backups,
    serving,
    renderer,
    cases,
    evaluation,
    maintenance,
    street,
    exchange,
    device_client,
):
    for command in module.COMMANDS:
        main.add_command(command)


if __name__ == "__main__":
    main(prog_name="citygrid")
