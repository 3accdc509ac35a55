"""Two zones: the renderer service of the secure zone (`citygrid renderer serve`) and the
grant key pair the gateway signs its requests to it with (`citygrid renderer grant-key`)."""

from __future__ import annotations

from pathlib import Path

import click

from mapserver.commands.base import Context, pass_ctx, reports_errors
from mapserver.settings import Settings

RENDERER_CONF = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn" / "renderer.conf.py"


@click.group()
def renderer() -> None:
    """The renderer service of the secure zone (two-zone deployment)."""


@renderer.command("serve")
@click.option("--bind", default="127.0.0.1:8444", show_default=True, help="HOST:PORT")
@click.option(
    "--tile-bind",
    default="next",
    show_default=True,
    help="HOST:PORT of the tile channel (the gateway's renderer_tile_url); "
    "next: --bind's host and the port after its; off: no channel",
)
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
@pass_ctx
@reports_errors
def serve(ctx: Context, bind: str, tile_bind: str, workers: int, threads: int) -> None:
    """Serve tiles and pictures to the gateway only: mutual TLS with its service
    certificate and a grant on each request; tiles also on a channel of their own, the
    faster way (--tile-bind; tiles.tile_channel). Needs, under DATA_DIR/pki: ca.crt,
    server/HOST.crt and .key (issued for this host by `citygrid pki issue --kind server`),
    and grant/grant.pub (or the setting grant_key). Never the CA's passphrase. The CRL
    comes from the gateway (PUT /crl); until one is held every request is refused (503)."""
    import os
    import shutil
    import sys

    from auth import ca_store
    from auth.ca_store import CaStore
    from mapserver.commands.serving import check_bindable
    from mapserver.errors import CityGridError
    from tiles.renderer_app import grant_public_key
    from tiles.renderer_audit import writer_url

    settings = ctx.settings
    host, port = check_bindable(bind)
    if tile_bind == "next":
        tile_bind = f"{host}:{port + 1}"
    if tile_bind == "off":
        tile_bind = ""
    else:
        check_bindable(tile_bind, "--tile-bind")
    store = CaStore(settings.pki_dir)
    files = {
        "CERT": settings.pki_dir / "server" / f"{host}.crt",
        "KEY": settings.pki_dir / "server" / f"{host}.key",
        "CA": store.cert_path,
        "CRL": store.crl_path,
    }
    for path in (files["CERT"], files["KEY"], files["CA"], grant_public_key(settings)):
        if not path.is_file():
            raise CityGridError(f"renderer: {path} is missing (see README, Deploying in two zones)")
    _check_databases(settings)
    hidden = (ca_store.PASSPHRASE_ENV, ca_store.PASSPHRASE_FILE_ENV)
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    if ctx.config_file:  # the workers load the settings again: from the same file
        env["CITYGRID_CONFIG"] = str(Path(ctx.config_file).resolve())
    env.update({f"CITYGRID_TLS_RENDERER_{k}": str(v) for k, v in files.items()})
    env.update(
        # The worker audits refused handshakes as the renderer's audit role (its one writer).
        CITYGRID_APP_DATABASE_URL=writer_url(settings),
        CITYGRID_TLS_RENDERER_BIND=bind,
        CITYGRID_TLS_RENDERER_TILE_BIND=tile_bind,
        CITYGRID_TLS_RENDERER_WORKERS=str(workers),
        CITYGRID_TLS_RENDERER_THREADS=str(threads),
    )
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    app = "tiles.renderer_app:create_app()"
    os.execvpe(gunicorn, [gunicorn, "-c", str(RENDERER_CONF), app], env)


def _check_databases(settings: Settings) -> None:
    """What each worker needs before it can answer, checked once here so that a wrong
    setting is one line rather than a worker's traceback: the map database as the map role
    with its district's tile matrix, and the renderer's audit role."""
    import psycopg

    from mapserver.db import describe_url
    from mapserver.errors import DatabaseUnavailable
    from tiles.origin import install_grid
    from tiles.renderer_audit import writer_url

    install_grid(settings, settings.map_reader_database_url)
    url = writer_url(settings)
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(describe_url(url), exc) from None


@renderer.command("grant-key")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@reports_errors
def grant_key(out_dir: Path) -> None:
    """A new grant key pair: grant.key (0600) for the gateway, grant.pub for the renderer."""
    from mapserver.errors import Conflict
    from tiles.grant import make_keys

    if (out_dir / "grant.key").exists() or (out_dir / "grant.pub").exists():
        # a second run replaced the pair in use: the renderer refused every grant after it
        raise Conflict(
            f"{out_dir} already holds a grant key; remove grant.key and grant.pub first to "
            "make a new pair (then copy the new grant.pub to the renderer)"
        )
    private, public = make_keys(out_dir)
    click.echo(f"gateway: {private}\nrenderer: {public}")


@renderer.command("push-crl")
@pass_ctx
@reports_errors
def push_crl(ctx: Context) -> None:
    """Push the gateway's current CRL to the renderer (renderer_url), as the gateway and
    the commands that publish a CRL do by themselves."""
    from mapserver.errors import InvalidInput
    from tiles import crl_push

    if not ctx.settings.renderer_url:
        raise InvalidInput("renderer_url is not set: there is no renderer to push to")
    click.echo(_pushed(crl_push.push(ctx.settings)))


@renderer.command("sync-areas")
@pass_ctx
@reports_errors
def sync_areas(ctx: Context) -> None:
    """On the gateway: register the renderer's streets, communities and unit grids here as
    codes, names and areas without shapes, so organisations of streets and cases can name
    them before any case is placed there (cases register their own areas as they come)."""
    from mapserver import db
    from mapserver.cases import areas
    from mapserver.errors import InvalidInput
    from tiles.remote import RemoteTiles

    if not ctx.settings.renderer_url:
        raise InvalidInput("renderer_url is not set: the map is in this install")
    doc = RemoteTiles.from_settings(ctx.settings).areas()
    with db.transaction(ctx.settings) as conn:
        count = areas.sync(conn, ctx.settings, doc)
    click.echo(f"{count} unit grids of {len(doc['streets'])} streets known to the gateway")


def _pushed(done: object) -> str:
    number, installed = getattr(done, "number", "?"), getattr(done, "installed", False)
    return f"CRL {number} {'installed on' if installed else 'already held by'} the renderer"


def push_published(settings: Settings) -> None:
    """After a command published a CRL: push it to the renderer where there is one. A push
    that fails is a warning, not a failure: the gateway's watcher retries."""
    if not settings.renderer_url:
        return
    from mapserver.errors import CityGridError
    from tiles import crl_push

    try:
        click.echo(_pushed(crl_push.push(settings)))
    except CityGridError as exc:
        click.echo(f"warning: CRL not pushed to the renderer: {exc.message}", err=True)


COMMANDS = [renderer]
