"""The grid model from real boundaries: `citygrid grids build`, `citygrid district show`."""

from __future__ import annotations

import click

from mapserver.commands.base import Context, Finite, _connection, pass_ctx, reports_errors


@click.group()
def grids() -> None:
    """Unit grids: build them from the communities and what bounds them on the ground."""


@grids.command("build")
@click.option("--street", help="Only the communities of this street (9-digit code).")
@click.option("--community", help="Only this community (12-digit code).")
@click.option("--target-m2", type=Finite(100, 1_000_000), default=10_000.0, show_default=True)
@click.option("--progress/--no-progress", default=True)
@pass_ctx
@reports_errors
def grids_build(
    ctx: Context, street: str | None, community: str | None, target_m2: float, progress: bool
) -> None:
    """Divide communities into unit grids bounded by roads, water, walls and railways, codes
    west→east then north→south; components and addresses follow their grids. One
    transaction: all of it or nothing; re-running on the same data changes nothing."""
    from mapserver import db, grids_build
    from mapserver.errors import InvalidInput

    if street and community:
        raise InvalidInput("give --street or --community, not both")
    settings = ctx.settings
    with db.transaction(settings) as conn:
        codes = grids_build.communities(conn, street, community)

        def step(b: grids_build.Built) -> None:
            if progress:
                click.echo(
                    f"{b.community}: {b.grids} grids ({b.kept} unchanged),"
                    f" {b.moved_components} components and {b.moved_addresses} addresses moved",
                    err=True,
                )

        built = grids_build.build(
            conn, codes, target_m2, settings.grid_serial_digits, settings.srid, step
        )
        extent = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(geom) AS e FROM community WHERE code = ANY(%s)) s",
            (codes,),
        ).fetchone()
    if extent and extent[0] is not None:
        import tiles
        from tiles.tile_grid import BBox

        tiles.invalidate(settings, BBox(*(float(v) for v in extent)))
    areas = [a for b in built for a in b.areas]
    click.echo(f"{len(built)} communities: " + grids_build.distribution(areas, target_m2).line())


@click.group()
def district() -> None:
    """The district's hierarchy."""


@district.command("show")
@pass_ctx
@reports_errors
def district_show(ctx: Context) -> None:
    """Print district → streets → communities with grid counts and areas."""
    with _connection(ctx) as conn:
        rows = conn.execute(
            """SELECT d.code, d.name, ST_Area(d.geom),
                      s.code, s.name, ST_Area(s.geom),
                      c.code, c.name, ST_Area(c.geom),
                      (SELECT count(*) FROM unit_grid g WHERE g.community_code = c.code),
                      (SELECT count(*) FROM component k
                       WHERE left(k.grid_code, 12) = c.code)
               FROM district d LEFT JOIN street s ON s.district_code = d.code
               LEFT JOIN community c ON c.street_code = s.code
               ORDER BY d.code, s.code, c.code"""
        ).fetchall()
    if not rows:
        click.echo("no district yet: citygrid import FILE --as district")
        return
    last_d = last_s = None
    for d, dn, da, s, sn, sa, c, cn, ca, ng, nk in rows:
        if d != last_d:
            click.echo(f"{d} {dn}  {da / 1e6:.2f} km²")
            last_d = d
        if s and s != last_s:
            click.echo(f"  {s} {sn}  {sa / 1e6:.2f} km²")
            last_s = s
        if c:
            click.echo(f"    {c} {cn}  {ca / 1e6:.3f} km²  {ng} grids  {nk} components")


COMMANDS = [grids, district]
