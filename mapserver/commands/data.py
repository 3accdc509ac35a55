"""Settings, database, demo district, GIS import and geocoding commands."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import click
import psycopg

from mapserver.commands.base import Context, Finite, _connection, pass_ctx, reports_errors
from mapserver.settings import SettingsError

# ---------------------------------------------------------------- config


@click.group()
def config() -> None:
    """Inspect the settings."""


@config.command("check")
@pass_ctx
def config_check(ctx: Context) -> None:
    """Validate the settings; print 'ok' or every problem, naming the key."""
    from auth import renewal
    from auth.pki import now
    from mapserver.errors import CityGridError

    try:
        ctx.settings  # noqa: B018 - loading is the check
    except SettingsError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    try:  # what runs out: CRL, server certificates, CA, token key (auth.renewal)
        found = renewal.findings(ctx.settings, now())
    except CityGridError as exc:
        found = [renewal.Finding("error", "pki", exc.message)]
    found += _pipeline_findings(ctx)
    for finding in found:
        click.echo(f"{finding.level}: {finding.what}: {finding.message}", err=True)
    from tiles import coverage  # the CRS against the data, the tile matrix against the district

    crs = coverage.check(ctx.settings)
    from tiles import object_cache  # the shared tile store, when the cache is one

    crs += object_cache.findings(ctx.settings)
    for level, message in crs:
        click.echo(f"{level}: {message}", err=True)
    if any(f.level == "error" for f in found) or any(level == "error" for level, _ in crs):
        sys.exit(1)
    click.echo("ok")


def _pipeline_findings(ctx: Context) -> list[Any]:
    """The audit sequencer, witnesses and exchange outbox (mapserver.pipeline_health), when
    the database is there to ask (a machine being set up may have none yet)."""
    from mapserver import db as db_mod
    from mapserver import pipeline_health
    from mapserver.errors import CityGridError

    try:
        with db_mod.connect(ctx.settings) as conn:
            return pipeline_health.report(conn, ctx.settings)[1]
    except (CityGridError, psycopg.Error):
        return []


@config.command("show")
@pass_ctx
@reports_errors
def config_show(ctx: Context) -> None:
    """Print the effective settings (the database password is hidden)."""
    from mapserver.db import describe_url

    for key, value in vars(ctx.settings).items():
        shown = describe_url(value) if key == "database_url" else value
        click.echo(f"{key} = {shown}")


# ---------------------------------------------------------------- db


@click.group()
def db() -> None:
    """Create and migrate the database."""


@db.command("upgrade")
@click.option("--create/--no-create", default=True, help="Create the database if missing.")
@pass_ctx
@reports_errors
def db_upgrade(ctx: Context, create: bool) -> None:
    """Apply pending schema migrations (a no-op when up to date)."""
    from mapserver import db as db_mod
    from mapserver import migrate

    if create and db_mod.ensure_database(ctx.settings):
        click.echo(f"created database {db_mod.describe_url(ctx.settings.database_url)}")
    with db_mod.connect(ctx.settings) as conn:
        done = migrate.upgrade(conn, ctx.settings)
    for m in done:
        click.echo(f"applied {m.version:04d}_{m.name}")
    if not done:
        click.echo("schema is up to date")


@db.command("status")
@pass_ctx
@reports_errors
def db_status(ctx: Context) -> None:
    """List applied and pending migrations."""
    from mapserver import db as db_mod
    from mapserver import migrate

    with db_mod.connect(ctx.settings) as conn:
        done = migrate.applied(conn)
    for m in migrate.available():
        click.echo(f"{m.version:04d}_{m.name}: {'applied' if m.version in done else 'pending'}")


# ---------------------------------------------------------------- demo district


@click.command("demo")
@click.option("--area-km2", type=Finite(0.25, 400), default=4.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--progress/--no-progress", default=True)
@click.option(
    "--at",
    "at",
    metavar="X,Y",
    default=None,
    help="The district's centre in the install CRS's metres (default: Haidian in EPSG:4548,"
    " else the middle of the CRS's area of use).",
)
@pass_ctx
@reports_errors
def demo(ctx: Context, area_km2: float, seed: int, progress: bool, at: str | None) -> None:
    """Build (or rebuild) the generated demo district, inside the install CRS's area of use."""
    from mapserver.demo import build_demo
    from mapserver.errors import InvalidInput

    centre = None
    if at is not None:
        try:
            x, y = (float(v) for v in at.split(","))
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(at)
        except ValueError:
            raise InvalidInput("--at must be X,Y in metres, e.g. --at 500000,5300000") from None
        centre = (x, y)
    summary = build_demo(ctx.settings, area_km2=area_km2, seed=seed, progress=progress, at=centre)
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


# ---------------------------------------------------------------- import


IMPORT_HELP = """Import a GIS file (anything GDAL reads) into the map data, in one transaction.

\b
Kinds and their fields (TARGET: type, allowed values, default; others via --map-field):
  buildings    polygons: name (text), house_number (text), road_name (text),
               floors (integer > 0; 3.5 is rounded with a note), structure (text)
  roads        lines: name (text), kind (arterial|secondary|branch|lane, default
               branch), width_m (metres > 0; default by kind 30/20/10/4);
               polygons: road surfaces, kind (text, default road)
  water, green polygons: name (text), kind (text)
  annotations  points: text (required), kind (street|water|place, default place),
               angle (degrees, default 0)
  components   points: code (16/17 digits, required), name, state
               (intact|damaged|missing|occupied, default intact), responsible_dept,
               owner_dept, maintainer_dept, data_source (surveyed|topographic_map|
               field_annotated|other); each gets the unit grid holding it
  grids        polygons: code (14/15 digits, required: community + serial), land_use,
               management_level, responsible; they must cover each community they
               name completely without overlaps; they replace its grids
  addresses    points or polygons (their inner point): road_name (text), house_number
               (text starting with digits: 11, 11a), landmark (text); a feature gives
               road and number, a landmark, or both
  district     polygon: code (6 digits, the settings' district_code), name (required)
  streets      polygons: code (9 digits), name; inside the district, no overlaps, no gaps
  communities  polygons: code (12 digits), name; inside their street, no overlaps, no gaps

\b
OpenStreetMap files (.osm.pbf): choose the layer (points, lines, multipolygons) with
--layer; tags GDAL keeps in other_tags are fields too (--map-field
house_number=addr:housenumber).

Boundaries and grids are checked as a whole: differences narrower than --tolerance-m are
repaired (snapped, clipped, trimmed, closed) and reported; every wider one is listed and
nothing is imported. Boundaries and grids are keyed by code: importing them again updates
them. Other kinds are keyed by --id-field (a re-import replaces the rows of the same ids,
never doubles them), or refuse a second import of the same file name unless --replace.
"""


@click.command("import", help=IMPORT_HELP)
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--as",
    "kind",
    required=True,
    type=click.Choice(
        [
            "buildings",
            "roads",
            "water",
            "green",
            "annotations",
            "components",
            "grids",
            "addresses",
            "district",
            "streets",
            "communities",
        ]
    ),
)
@click.option("--scale", type=click.Choice(["500", "2000"]), default="500", show_default=True)
@click.option("--layer", help="Layer of a multi-layer file (required there; the error lists them).")
@click.option(
    "--map-field",
    "map_fields",
    multiple=True,
    metavar="TARGET=SOURCE",
    help="Take column TARGET from the file's field SOURCE (repeatable).",
)
@click.option("--s-srs", help="CRS of a file that does not declare one (e.g. EPSG:4326).")
@click.option(
    "--encoding",
    metavar="NAME",
    help="The file's text encoding where it does not say (a .dbf without .cpg, a CSV),"
    " e.g. GBK; default UTF-8 (a .dbf's .cpg is then followed).",
)
@click.option("--where", metavar="SQL", help="Only features matching this OGR attribute filter.")
@click.option(
    "--map-value",
    "map_values",
    multiple=True,
    metavar="COLUMN:FROM=TO[,FROM=TO]",
    help="Store FROM as TO in COLUMN, e.g. kind:residential=branch,service=lane (repeatable).",
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Leave out (and list) features whose geometry cannot be repaired.",
)
@click.option("--replace", is_flag=True, help="Replace what the last import of this file brought.")
@click.option(
    "--id-field",
    metavar="FIELD",
    help="The file's feature id (e.g. osm_id): a re-import replaces the rows of those ids.",
)
@click.option(
    "--tolerance-m",
    type=Finite(0, 100),
    default=1.0,
    show_default=True,
    help="Boundaries: differences narrower than this are repaired, not refused.",
)
@pass_ctx
@reports_errors
def import_(
    ctx: Context,
    file: Path,
    kind: str,
    scale: str,
    layer: str | None,
    map_fields: tuple[str, ...],
    s_srs: str | None,
    encoding: str | None,
    where: str | None,
    map_values: tuple[str, ...],
    skip_invalid: bool,
    replace: bool,
    id_field: str | None,
    tolerance_m: float,
) -> None:
    from mapserver.boundaries import BoundaryProblems
    from mapserver.importer import Options, import_file, parse_field_map, parse_value_map

    options = Options(
        where, parse_value_map(map_values), skip_invalid, replace, tolerance_m, id_field
    )
    try:
        result = import_file(
            ctx.settings,
            file,
            kind=kind,
            scale=int(scale),
            layer=layer,
            field_map=parse_field_map(map_fields),
            source_srs=s_srs,
            options=options,
            encoding=encoding,
        )
    except BoundaryProblems as exc:
        for line in exc.report:
            click.echo(f"problem: {line}", err=True)
        raise
    for line in result.skipped:
        click.echo(f"skipped: {line}", err=True)
    for line in result.notes:
        click.echo(f"note: {line}", err=True)
    unscaled = ("district", "streets", "communities", "grids", "addresses", "components")
    at = "" if kind in unscaled else f" at 1:{scale}"
    click.echo(f"imported {result.imported} {kind} from {file.name}{at}")
    if result.imported:
        _expire_tiles(ctx, result.table)


def _expire_tiles(ctx: Context, table: str) -> None:
    """Drop the cached tiles over what the table now holds (and, with a render queue,
    enqueue their re-render): an import may change any of it. Only tiles served (the
    district and its margin) are walked: an address stored far outside the district would
    otherwise stretch the table's extent over millions of metatiles."""
    from psycopg import sql

    import tiles
    from mapserver import db as db_mod
    from mapserver.commands.maps import served_area
    from tiles.tile_grid import BBox

    query = sql.SQL(
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
        " FROM (SELECT ST_Extent(geom) AS e FROM {}) s"
    ).format(sql.Identifier(table))
    with db_mod.connect(ctx.settings) as conn:
        row = conn.execute(query).fetchone()
    if row is not None and row[0] is not None:
        tiles.invalidate(ctx.settings, BBox(*(float(v) for v in row)), served_area(ctx))


# ---------------------------------------------------------------- geocoding


@click.group()
def geocode() -> None:
    """Geocoding: addresses, points, grid and component codes."""


@geocode.command("address")
@click.argument("text")
@pass_ctx
@reports_errors
def geocode_address(ctx: Context, text: str) -> None:
    """Address text (road + house number, or landmark) -> point and grid."""
    from mapserver import geocode as gc

    with _connection(ctx) as conn:
        hit = gc.geocode_address(conn, text)
    click.echo(json.dumps(hit._asdict(), ensure_ascii=False))


@geocode.command("point")
@click.argument("x", type=Finite())
@click.argument("y", type=Finite())
@pass_ctx
@reports_errors
def geocode_point(ctx: Context, x: float, y: float) -> None:
    """A point in the install's CRS -> grid, community and street codes."""
    from mapserver import geocode as gc

    with _connection(ctx) as conn:
        where = gc.locate_point(conn, x, y)
    click.echo(json.dumps(where._asdict(), ensure_ascii=False))


@geocode.command("grid")
@click.argument("code")
@pass_ctx
@reports_errors
def geocode_grid(ctx: Context, code: str) -> None:
    """A unit-grid code -> its polygon (WKT) and area."""
    from mapserver import geocode as gc

    with _connection(ctx) as conn:
        grid = gc.grid_by_code(conn, ctx.settings, code)
    click.echo(json.dumps(grid._asdict(), ensure_ascii=False))


@geocode.command("component")
@click.argument("code")
@pass_ctx
@reports_errors
def geocode_component(ctx: Context, code: str) -> None:
    """A component code -> the component."""
    from mapserver import geocode as gc

    with _connection(ctx) as conn:
        component = gc.component_by_code(conn, ctx.settings, code)
    click.echo(json.dumps(component._asdict(), ensure_ascii=False, default=str))


COMMANDS = [config, db, demo, import_, geocode]
