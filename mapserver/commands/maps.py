"""Tiles: seeding, single tiles and cache expiry."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import Context, Finite, pass_ctx, reports_errors

# ---------------------------------------------------------------- tiles


def _parse_bbox(text: str) -> Any:
    """--bbox minx,miny,maxx,maxy in the install's CRS."""
    from mapserver.errors import InvalidInput
    from tiles.tile_grid import BBox

    try:
        minx, miny, maxx, maxy = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput("--bbox must be minx,miny,maxx,maxy") from None
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidInput("--bbox must be four finite numbers (metres in the install's CRS)")
    if not minx < maxx or not miny < maxy:
        raise InvalidInput("--bbox must have minx < maxx and miny < maxy")
    return BBox(minx, miny, maxx, maxy)


def _area_bbox(ctx: Context, street: str | None, grid: str | None, bbox: str | None = None) -> Any:
    """The bbox of a street or unit grid, from the database, or the one given; with
    --bbox and --street/--grid, the part of the box inside the street or grid."""
    from mapserver import db as db_mod
    from mapserver.errors import InvalidInput, NotFound
    from tiles.tile_grid import BBox

    if street and grid:
        raise InvalidInput("give --street or --grid, not both")
    box = _parse_bbox(bbox) if bbox else None
    if not street and not grid:
        return box
    table, code = ("street", street) if street else ("unit_grid", grid)
    if not code or not (code.isascii() and code.isdigit()):
        raise InvalidInput(f"--{'street' if street else 'grid'} must be a numeric code")
    with db_mod.connect(ctx.settings) as conn:
        row = conn.execute(
            f"SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM {table} "
            "WHERE code = %s",
            (code,),
        ).fetchone()
    if row is None:
        raise NotFound(f"no {'street' if street else 'unit grid'} {code}")
    found = BBox(*row)
    if box is None:
        return found
    if not found.intersects(box):
        raise InvalidInput(f"--bbox does not meet {'street' if street else 'unit grid'} {code}")
    return BBox(
        max(box.minx, found.minx),
        max(box.miny, found.miny),
        min(box.maxx, found.maxx),
        min(box.maxy, found.maxy),
    )


@click.command("seed")
@click.option("--map", "product", required=True, help="topo500, topo2000, grids or components")
@click.option("--levels", required=True, help="e.g. 7-8 or 3,5,7")
@click.option("--street", help="Only this street (code).")
@click.option("--grid", help="Only this unit grid (code).")
@click.option(
    "--bbox",
    metavar="MINX,MINY,MAXX,MAXY",
    help="Only this box (install CRS); with --street/--grid, their part of it.",
)
@click.option("--workers", type=click.IntRange(1, 64), help="Processes (default: all cores).")
@click.option("--queue", "queued", is_flag=True, help="Enqueue metatile jobs for render-workers.")
@click.option("--wait", "wait_s", type=click.IntRange(1), help="With --queue: wait this long.")
@click.option("--progress/--no-progress", default=True)
@pass_ctx
@reports_errors
def seed_cmd(
    ctx: Context,
    product: str,
    levels: str,
    street: str | None,
    grid: str | None,
    bbox: str | None,
    workers: int | None,
    queued: bool,
    wait_s: int | None,
    progress: bool,
) -> None:
    """Render tiles ahead of time; finished metatiles are skipped, so it resumes."""
    from tiles.seed import parse_levels, seed

    if queued:
        area = _area_bbox(ctx, street, grid, bbox)
        _seed_queued(ctx, product, parse_levels(levels), area, wait_s)
        return
    if wait_s is not None:
        from mapserver.errors import InvalidInput

        raise InvalidInput("--wait goes with --queue")
    result = seed(
        ctx.settings,
        product,
        parse_levels(levels),
        _area_bbox(ctx, street, grid, bbox),
        workers,
        progress,
    )
    click.echo(
        f"seeded {product}: {result.rendered} metatiles rendered, {result.skipped} already "
        f"fresh, {result.seconds:.1f} s"
    )


def _seed_queued(
    ctx: Context, product: str, levels: list[int], area: Any, wait_s: int | None
) -> None:
    from redis.exceptions import RedisError

    from mapserver.errors import CityGridError
    from tiles import render_queue
    from tiles.seed import enqueue_seed

    try:
        done = enqueue_seed(ctx.settings, product, levels, area)
        click.echo(
            f"enqueued {len(done.job_ids)} metatiles of {product} on {done.queue}, "
            f"{done.skipped} already fresh"
        )
        if wait_s is not None:
            queue = render_queue.queue_of(ctx.settings)
            counts = render_queue.wait(queue, done.job_ids, wait_s)
            click.echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
            if counts.get("failed"):
                raise CityGridError(f"{counts['failed']} render job(s) failed")
    except TimeoutError as exc:
        raise CityGridError(str(exc)) from None
    except RedisError as exc:
        raise CityGridError(f"render queue at {ctx.settings.redis_url}: {exc}") from None


@click.command("render-worker")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option(
    "--dead-after",
    type=Finite(1, 3600),
    default=15.0,
    show_default=True,
    help="Seconds without a sign of life before a worker's job is re-queued.",
)
@pass_ctx
@reports_errors
def render_worker(ctx: Context, processes: int, burst: bool, dead_after: float) -> None:
    """Render metatile jobs from the render queue (seeding and re-renders after edits)."""
    from tiles.worker_pool import run

    sys.exit(run(ctx.settings, processes, burst, dead_after))


@click.group()
def tiles() -> None:
    """Single tiles and cache expiry."""


@tiles.command("render")
@click.argument("product")
@click.argument("z", type=int)
@click.argument("x", type=int)
@click.argument("y", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
@reports_errors
def tiles_render(ctx: Context, product: str, z: int, x: int, y: int, output: Path) -> None:
    """Render (or read from the cache) one tile into FILE."""
    from tiles.service import TileService

    data = TileService.from_settings(ctx.settings).tile(product, z, x, y)
    output.write_bytes(data)
    click.echo(f"{output}: {len(data)} bytes")


@tiles.command("expire")
@click.option("--bbox", help="minx,miny,maxx,maxy in the install's CRS")
@click.option("--grid", help="A unit grid code.")
@pass_ctx
@reports_errors
def tiles_expire(ctx: Context, bbox: str | None, grid: str | None) -> None:
    """Drop cached tiles of every map that intersect the area."""
    import tiles as tiles_pkg
    from mapserver.errors import InvalidInput

    if bool(bbox) == bool(grid):
        raise InvalidInput("give exactly one of --bbox or --grid")
    area = _parse_bbox(bbox) if bbox else _area_bbox(ctx, None, grid)
    click.echo(f"expired {tiles_pkg.invalidate(ctx.settings, area, served_area(ctx))} tiles")


def served_area(ctx: Context) -> Any:
    """Where tiles are served (the district and the margin around it), or None before there
    is a district: an expiry walks only the tiles served there, since no tile is cached
    beyond, and walking the metatiles of a far larger box (a whole CRS zone) would take
    hours. At each level those are the tiles that meet it, edge tiles whole."""
    from mapserver import db as db_mod
    from tiles.service import MARGIN_M, district_extent

    with db_mod.connect(ctx.settings) as conn:
        extent = district_extent(conn)
    return extent.buffered(MARGIN_M) if extent is not None else None


@tiles.command("redraw-origin")
@click.option("--yes", is_flag=True, help="Confirm: every cached tile and tile index is void.")
@pass_ctx
@reports_errors
def tiles_redraw_origin(ctx: Context, yes: bool) -> None:
    """Draw the secret tile origin again from today's district (when `config check` says the
    district lies outside the tile matrix); drops every cached tile. Restart the services
    after it: they read the origin once."""
    from mapserver import db as db_mod
    from mapserver.errors import InvalidInput
    from tiles import origin
    from tiles.products import PRODUCTS
    from tiles.service import TileService
    from tiles.tile_grid import SCALES

    if ctx.settings.tile_origin_x is not None or ctx.settings.tile_origin_y is not None:
        raise InvalidInput(
            "tile_origin_x / tile_origin_y are set in the settings and win over a drawn"
            " origin: change or remove them instead"
        )
    if not yes:
        raise InvalidInput(
            "this voids every cached tile and every tile index clients hold: add --yes"
        )
    cache = TileService.for_cache(ctx.settings).cache  # the old matrix's tiles
    with db_mod.transaction(ctx.settings) as conn:
        origin.redraw(conn)
    dropped = 0
    for product in PRODUCTS:
        for z in range(len(SCALES)):
            dropped += cache.drop(product, z, list(cache.cached(product, z)))
    origin.forget()
    click.echo(
        f"drew a new tile origin from the district; dropped {dropped} cached tiles;"
        " restart the services and seed again"
    )


@tiles.command("store-keys")
@pass_ctx
@reports_errors
def tiles_store_keys(ctx: Context) -> None:
    """Write random tile store credentials (kept if present) and SeaweedFS's -s3.config."""
    from tiles.object_cache import new_keys

    creds, identities = new_keys(ctx.settings)
    click.echo(f"credentials: {creds}")
    click.echo(f"SeaweedFS -s3.config: {identities}")


@tiles.command("store-init")
@pass_ctx
@reports_errors
def tiles_store_init(ctx: Context) -> None:
    """Reach the tile store (tile_cache = s3) and create its bucket if missing."""
    from mapserver.errors import InvalidInput
    from tiles.object_cache import ObjectCache

    if ctx.settings.tile_cache != "s3":
        raise InvalidInput("tile_cache is not s3: the tiles are on disk")
    store = ObjectCache.from_settings(ctx.settings)
    store.check(create=True)
    click.echo(f"tile store {store.endpoint}: bucket {store.bucket} ready")


@tiles.command("levels")
def tiles_levels() -> None:
    """Each level's scale, metres per pixel, tile size on the ground and the maps served."""
    from tiles.levels import table

    click.echo(f"{'level':>5}  {'scale':>9}  {'m/pixel':>8}  {'tile (m)':>8}  maps")
    for row in table():
        click.echo(
            f"{row.z:>5}  1:{row.scale:<7}  {row.metres_per_pixel:>8.3f}  "
            f"{row.tile_m:>8.1f}  {', '.join(row.products)}"
        )


COMMANDS = [seed_cmd, render_worker, tiles]
