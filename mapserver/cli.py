"""The `citygrid` command: one click group, sub-commands per area, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from mapserver import settings as settings_mod
from mapserver.errors import CityGridError
from mapserver.settings import Settings, SettingsError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"citygrid: error: {message}", err=True)
    sys.exit(code)


def reports_errors(func: F) -> F:
    """Turn CityGrid's errors into one line on stderr and a non-zero exit, never a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SettingsError as exc:
            fail("bad settings: " + "; ".join(exc.problems), 2)
        except CityGridError as exc:
            fail(exc.message)

    return wrapper  # type: ignore[return-value]


class Context:
    """Settings are read when a command first needs them, so `--help` works anywhere."""

    def __init__(self, config_file: str | None):
        self.config_file = config_file
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = settings_mod.load(self.config_file)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


@click.group()
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


# ---------------------------------------------------------------- config


@main.group()
def config() -> None:
    """Inspect the settings."""


@config.command("check")
@pass_ctx
def config_check(ctx: Context) -> None:
    """Validate the settings; print 'ok' or every problem, naming the key."""
    try:
        ctx.settings  # noqa: B018 - loading is the check
    except SettingsError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    click.echo("ok")


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


@main.group()
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


@main.command("demo")
@click.option("--area-km2", type=click.FloatRange(0.25, 400), default=4.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--progress/--no-progress", default=True)
@pass_ctx
@reports_errors
def demo(ctx: Context, area_km2: float, seed: int, progress: bool) -> None:
    """Build (or rebuild) the generated demo district."""
    from mapserver.demo import build_demo

    summary = build_demo(ctx.settings, area_km2=area_km2, seed=seed, progress=progress)
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


# ---------------------------------------------------------------- import


@main.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--as",
    "kind",
    required=True,
    type=click.Choice(
        ["buildings", "roads", "water", "green", "annotations", "components", "grids"]
    ),
)
@click.option("--scale", type=click.Choice(["500", "2000"]), default="500", show_default=True)
@click.option("--layer", help="Layer of a multi-layer file (default: the first).")
@click.option(
    "--map-field",
    "map_fields",
    multiple=True,
    metavar="TARGET=SOURCE",
    help="Take column TARGET from the file's field SOURCE (repeatable).",
)
@click.option("--s-srs", help="CRS of a file that does not declare one (e.g. EPSG:4326).")
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
) -> None:
    """Import a GIS file (anything GDAL reads) into the map data, in one transaction."""
    from mapserver.importer import import_file, parse_field_map

    result = import_file(
        ctx.settings,
        file,
        kind=kind,
        scale=int(scale),
        layer=layer,
        field_map=parse_field_map(map_fields),
        source_srs=s_srs,
    )
    click.echo(f"imported {result.count} {kind} from {file.name} at 1:{scale}")


# ---------------------------------------------------------------- geocoding


@main.group()
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
@click.argument("x", type=float)
@click.argument("y", type=float)
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


def _connection(ctx: Context) -> Any:
    from mapserver import db as db_mod

    return db_mod.connect(ctx.settings)


# ---------------------------------------------------------------- accounts


def _audit_cli(conn: Any, action: str, resource: str, outcome: str = "ok", **detail: Any) -> None:
    """Administrative acts from the command line are audited like requests."""
    import getpass

    from audit.keys import signer
    from audit.record import Entry, record

    settings = click.get_current_context().find_object(Context).settings  # type: ignore[union-attr]
    record(
        conn,
        Entry(
            action=action,
            outcome=outcome,
            account=f"cli:{getpass.getuser()}",
            method="CLI",
            resource=resource,
            detail=detail,
        ),
        signer(settings.pki_dir),
    )


@main.group()
def account() -> None:
    """Accounts and their roles."""


@account.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="Role (repeatable).")
@click.option("--org", "org_code", help="Organisation code.")
@click.option("--display-name", default="")
@pass_ctx
@reports_errors
def account_add(
    ctx: Context, name: str, roles: tuple[str, ...], org_code: str | None, display_name: str
) -> None:
    """Add an account with one or more roles."""
    from auth import accounts
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        acc = accounts.add(conn, name, list(roles), org_code, display_name)
        _audit_cli(conn, "account.add", name, roles=list(acc.roles), org=org_code)
    click.echo(f"account {acc.name}: roles {', '.join(acc.roles)}")


@account.command("disable")
@click.argument("name")
@pass_ctx
@reports_errors
def account_disable(ctx: Context, name: str) -> None:
    """Disable an account: its certificates no longer get in."""
    from auth import accounts
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        accounts.set_active(conn, name, False)
        _audit_cli(conn, "account.disable", name)
    click.echo(f"account {name}: disabled")


@account.command("enable")
@click.argument("name")
@pass_ctx
@reports_errors
def account_enable(ctx: Context, name: str) -> None:
    """Enable a disabled account again."""
    from auth import accounts
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        accounts.set_active(conn, name, True)
        _audit_cli(conn, "account.enable", name)
    click.echo(f"account {name}: enabled")


@account.command("grant")
@click.argument("name")
@click.argument("role")
@pass_ctx
@reports_errors
def account_grant(ctx: Context, name: str, role: str) -> None:
    """Give an account a role."""
    from auth import accounts
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        acc = accounts.grant(conn, name, role)
        _audit_cli(conn, "account.grant", name, role=role)
    click.echo(f"account {acc.name}: roles {', '.join(acc.roles)}")


@account.command("revoke-role")
@click.argument("name")
@click.argument("role")
@pass_ctx
@reports_errors
def account_revoke_role(ctx: Context, name: str, role: str) -> None:
    """Take a role from an account."""
    from auth import accounts
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        acc = accounts.revoke_role(conn, name, role)
        _audit_cli(conn, "account.revoke_role", name, role=role)
    click.echo(f"account {acc.name}: roles {', '.join(acc.roles) or '(none)'}")


# ---------------------------------------------------------------- PKI


@main.group()
def pki() -> None:
    """CityGrid's certificate authority."""


def _store(ctx: Context) -> Any:
    from auth.ca_store import CaStore

    return CaStore(ctx.settings.pki_dir)


@pki.command("init")
@pass_ctx
@reports_errors
def pki_init(ctx: Context) -> None:
    """Create the CA (EC P-256; key encrypted with $CITYGRID_CA_PASSPHRASE[_FILE])."""
    from auth import ca_store
    from mapserver import db as db_mod

    secret = ca_store.passphrase()
    store = _store(ctx)
    with db_mod.transaction(ctx.settings) as conn:
        cert = store.init(secret)
        _audit_cli(conn, "pki.init", store.cert_path.name, subject=cert.subject.rfc4514_string())
    click.echo(f"CA created: {store.cert_path}")


@pki.command("issue")
@click.option("--account", "name", required=True, help="Account (or host name for --kind server).")
@click.option("--kind", type=click.Choice(["person", "device", "server", "signing"]), required=True)
@click.option("--days", type=int)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option(
    "--p12-password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Password for the person's PKCS#12 (default: a new random one, printed once).",
)
@pass_ctx
@reports_errors
def pki_issue(
    ctx: Context,
    name: str,
    kind: str,
    days: int | None,
    out_dir: Path,
    p12_password_file: Path | None,
) -> None:
    """Issue a key and certificate to an account: writes OUT/NAME.crt, NAME.key (NAME.p12)."""
    from auth import ca_store, certs
    from auth.pki import Kind
    from mapserver import db as db_mod

    secret = ca_store.passphrase()
    password = p12_password_file.read_text("utf-8").strip() if p12_password_file else None
    with db_mod.transaction(ctx.settings) as conn:
        issued = certs.issue(conn, _store(ctx), secret, name, Kind(kind), out_dir, days, password)
        _audit_cli(conn, "pki.issue", name, kind=kind, serial=issued.serial, sha256=issued.sha256)
    click.echo(
        f"issued {kind} certificate {issued.serial} to {name}, valid until "
        f"{issued.not_after:%Y-%m-%d}"
    )
    for path in issued.files:
        click.echo(f"  {path}")
    if issued.p12_password and not p12_password_file:
        click.echo(f"  PKCS#12 password: {issued.p12_password}")


@pki.command("revoke")
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True)
@pass_ctx
@reports_errors
def pki_revoke(ctx: Context, serial: str, reason: str) -> None:
    """Revoke a certificate and publish a new CRL."""
    from auth import ca_store, certs
    from mapserver import db as db_mod

    secret = ca_store.passphrase()
    with db_mod.transaction(ctx.settings) as conn:
        revoked = certs.revoke(conn, serial, reason)
        certs.publish_crl(conn, _store(ctx), secret)
        _audit_cli(conn, "pki.revoke", revoked.name, serial=revoked.serial, reason=reason)
    click.echo(f"revoked {revoked.serial} ({revoked.kind} of {revoked.name}): {reason}")


@pki.command("crl")
@pass_ctx
@reports_errors
def pki_crl(ctx: Context) -> None:
    """Publish a fresh CRL (run it before the current one's next update)."""
    from auth import ca_store, certs
    from mapserver import db as db_mod

    secret = ca_store.passphrase()
    store = _store(ctx)
    with db_mod.transaction(ctx.settings) as conn:
        crl = certs.publish_crl(conn, store, secret)
        _audit_cli(conn, "pki.crl", store.crl_path.name, revoked=len(crl))
    click.echo(
        f"CRL with {len(crl)} revoked, next update {crl.next_update_utc:%Y-%m-%d %H:%M} "
        f"UTC: {store.crl_path}"
    )


@pki.command("rotate-token-key")
@pass_ctx
@reports_errors
def pki_rotate_token_key(ctx: Context) -> None:
    """Start signing tokens with a new key; tokens signed with the previous keys stay valid."""
    from auth.tokens import KeySet
    from mapserver import db as db_mod

    keys = KeySet(ctx.settings.pki_dir / "jwt")
    with db_mod.transaction(ctx.settings) as conn:
        kid = keys.rotate()
        _audit_cli(conn, "pki.rotate_token_key", kid)
    click.echo(f"token signing key {kid}")


@pki.command("list")
@pass_ctx
@reports_errors
def pki_list(ctx: Context) -> None:
    """What was issued to whom, and whether it is valid, expired or revoked."""
    from auth import certs
    from mapserver import db as db_mod

    with db_mod.connect(ctx.settings) as conn:
        rows = certs.listing(conn)
    for c in rows:
        click.echo(
            f"{c.serial}  {c.kind:<8} {c.name:<24} until {c.not_after:%Y-%m-%d}  "
            f"{c.status}{' (' + c.reason + ')' if c.reason else ''}"
        )


# ---------------------------------------------------------------- tiles


def _area_bbox(ctx: Context, street: str | None, grid: str | None) -> Any:
    """The bbox of a street or unit grid, from the database."""
    from mapserver import db as db_mod
    from mapserver.errors import InvalidInput, NotFound
    from tiles.tile_grid import BBox

    if street and grid:
        raise InvalidInput("give --street or --grid, not both")
    if not street and not grid:
        return None
    table, code = ("street", street) if street else ("unit_grid", grid)
    if not code or not code.isdigit():
        raise InvalidInput(f"--{'street' if street else 'grid'} must be a numeric code")
    with db_mod.connect(ctx.settings) as conn:
        row = conn.execute(
            f"SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM {table} "
            "WHERE code = %s",
            (code,),
        ).fetchone()
    if row is None:
        raise NotFound(f"no {'street' if street else 'unit grid'} {code}")
    return BBox(*row)


@main.command("seed")
@click.option("--map", "product", required=True, help="topo500, topo2000, grids or components")
@click.option("--levels", required=True, help="e.g. 7-8 or 3,5,7")
@click.option("--street", help="Only this street (code).")
@click.option("--grid", help="Only this unit grid (code).")
@click.option("--workers", type=click.IntRange(1, 64), help="Processes (default: all cores).")
@click.option("--progress/--no-progress", default=True)
@pass_ctx
@reports_errors
def seed_cmd(
    ctx: Context,
    product: str,
    levels: str,
    street: str | None,
    grid: str | None,
    workers: int | None,
    progress: bool,
) -> None:
    """Render tiles ahead of time; finished metatiles are skipped, so it resumes."""
    from tiles.seed import parse_levels, seed

    result = seed(
        ctx.settings,
        product,
        parse_levels(levels),
        _area_bbox(ctx, street, grid),
        workers,
        progress,
    )
    click.echo(
        f"seeded {product}: {result.rendered} metatiles rendered, {result.skipped} already "
        f"fresh, {result.seconds:.1f} s"
    )


@main.group()
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
    from tiles.tile_grid import BBox

    if bool(bbox) == bool(grid):
        raise InvalidInput("give exactly one of --bbox or --grid")
    if bbox:
        try:
            minx, miny, maxx, maxy = (float(v) for v in bbox.split(","))
        except ValueError:
            raise InvalidInput("--bbox must be minx,miny,maxx,maxy") from None
        if minx >= maxx or miny >= maxy:
            raise InvalidInput("--bbox must have minx < maxx and miny < maxy")
        area = BBox(minx, miny, maxx, maxy)
    else:
        area = _area_bbox(ctx, None, grid)
    click.echo(f"expired {tiles_pkg.invalidate(ctx.settings, area)} tiles")


# ---------------------------------------------------------------- audit


@main.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Ed25519 public key (default: the install's audit-ed25519.pub).",
)
@pass_ctx
@reports_errors
def audit_verify(ctx: Context, key_file: Path | None) -> None:
    """Recompute the tree from the entries; check every checkpoint and their consistency."""
    import base64

    from audit.keys import verifier
    from audit.verify import verify
    from mapserver import db as db_mod

    with db_mod.connect(ctx.settings) as conn:
        report = verify(conn, verifier(ctx.settings.pki_dir, key_file))
    if not report.ok:
        fail(f"audit log NOT intact: {report.problem}")
    click.echo(
        f"ok: {report.entries} entries, {report.checkpoints} checkpoints, root "
        f"{base64.b64encode(report.root).decode()}"
    )


def _print_entries(items: list[dict[str, Any]]) -> None:
    from audit.review import _cell

    for e in reversed(items):
        click.echo(
            f"{e['leaf_index']:>8} {e['at']} {_cell(e['account']) or '-':<18} "
            f"{_cell(e['action']):<20} {e['outcome']:<8} {e['status'] or '':<4} "
            f"{_cell(e['resource'])}"
        )


def _audit_filters(**options: Any) -> Any:
    from audit.review import filters_from

    mapping = {"from": options.pop("since", None), "to": options.pop("until", None)}
    args = {k: str(v) for k, v in {**options, **mapping}.items() if v is not None}
    return filters_from(args)


@audit.command("tail")
@click.option("-n", "limit", type=click.IntRange(1, 500), default=20, show_default=True)
@pass_ctx
@reports_errors
def audit_tail(ctx: Context, limit: int) -> None:
    """The newest entries."""
    from audit.review import entries
    from mapserver import db as db_mod

    with db_mod.connect(ctx.settings) as conn:
        _print_entries(entries(conn, _audit_filters(limit=limit)))


_SEARCH_OPTIONS = [
    click.option("--account"),
    click.option("--certificate", help="Certificate serial (hex)."),
    click.option("--action"),
    click.option("--outcome", type=click.Choice(["ok", "refused", "error"])),
    click.option("--resource", help="Resource prefix, e.g. 'tile topo500/8'."),
    click.option("--from", "since", help="ISO 8601 time (inclusive)."),
    click.option("--to", "until", help="ISO 8601 time (exclusive)."),
    click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True),
]


def _search_options(func: Any) -> Any:
    for option in reversed(_SEARCH_OPTIONS):
        func = option(func)
    return func


@audit.command("search")
@_search_options
@pass_ctx
@reports_errors
def audit_search(ctx: Context, **options: Any) -> None:
    """Entries matching the filters, newest last."""
    from audit.review import entries
    from mapserver import db as db_mod

    with db_mod.connect(ctx.settings) as conn:
        _print_entries(entries(conn, _audit_filters(**options)))


@audit.command("export")
@_search_options
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
@reports_errors
def audit_export(ctx: Context, fmt: str, output: Path, **options: Any) -> None:
    """Export entries (JSON with inclusion proofs and the checkpoint, or CSV)."""
    from audit import review
    from mapserver import db as db_mod

    with db_mod.connect(ctx.settings) as conn:
        items = review.entries(conn, _audit_filters(**options))
        if fmt == "csv":
            output.write_text(review.export_csv(items), "utf-8")
        else:
            output.write_text(
                json.dumps(
                    review.export_json(conn, items), ensure_ascii=False, indent=1, default=str
                ),
                "utf-8",
            )
        _audit_cli(conn, "audit.export", str(output.name), format=fmt, entries=len(items))
        conn.commit()
    click.echo(f"{output}: {len(items)} entries")


@audit.command("checkpoint")
@pass_ctx
@reports_errors
def audit_checkpoint(ctx: Context) -> None:
    """Sign a checkpoint of the log as it stands now."""
    from audit.keys import signer
    from audit.record import checkpoint_now
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        note = checkpoint_now(conn, signer(ctx.settings.pki_dir))
    click.echo(note or "the log is empty", nl=not note)


@main.command("verify-action")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CityGrid's CA certificate (default: the install's pki/ca.crt).",
)
def verify_action(bundle: Path, ca_file: Path | None) -> None:
    """Check an exported signed-action bundle offline: only the bundle and the CA."""
    from cryptography import x509

    from auth.signed_action import verify_bundle

    try:
        ca_path = ca_file or settings_mod.load().pki_dir / "ca.crt"
        ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
        doc = json.loads(bundle.read_text("utf-8"))
        verified = verify_bundle(doc, ca)
    except (ValueError, OSError) as exc:
        fail(f"{bundle.name}: not a readable bundle or CA ({type(exc).__name__})")
        return
    except CityGridError as exc:
        fail(f"{bundle.name}: INVALID: {exc.message}")
        return
    click.echo(
        f"valid: {verified.action} on {verified.resource} by {verified.account} at "
        f"{verified.time:%Y-%m-%dT%H:%M:%SZ} (certificate {verified.certificate.serial_number:x})"
    )


# ---------------------------------------------------------------- serving


@main.command("serve")
@click.option("--bind", default="127.0.0.1:8443", show_default=True, help="HOST:PORT")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option(
    "--behind-nginx",
    is_flag=True,
    help="Plain HTTP on loopback for an nginx front that verifies client certificates.",
)
@pass_ctx
@reports_errors
def serve(ctx: Context, bind: str, workers: int, threads: int, behind_nginx: bool) -> None:
    """Serve CityGrid over TLS that requires a client certificate from CityGrid's CA."""
    import os

    from mapserver.serve import run

    if ctx.config_file:
        os.environ["CITYGRID_CONFIG"] = str(Path(ctx.config_file).resolve())
    run(ctx.settings, bind, workers, threads, behind_nginx)


if __name__ == "__main__":
    main()
