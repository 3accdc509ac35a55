"""Accounts, roles and CityGrid's certificate authority."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import Context, Finite, _audit_cli, pass_ctx, reports_errors
from mapserver.commands.signing import (
    CERT_ENV,
    KEY_ENV,
    AdminAct,
    admin_options,
    refuse_if_administered,
)
from mapserver.errors import InvalidInput

# ---------------------------------------------------------------- accounts


@click.group()
def account() -> None:
    """Accounts and their roles."""


@account.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="Role (repeatable).")
@click.option("--org", "org_code", help="Organisation code.")
@click.option("--display-name", default="")
@admin_options
@pass_ctx
@reports_errors
def account_add(
    ctx: Context,
    name: str,
    roles: tuple[str, ...],
    org_code: str | None,
    display_name: str,
    admin_key: Path | None,
    admin_cert: Path | None,
) -> None:
    """Add an account with one or more roles (a signed act of an administrator)."""
    from auth import accounts
    from mapserver import db as db_mod

    _texts(name, roles, org_code, display_name)
    params = {"name": name, "roles": list(roles), "org": org_code, "display_name": display_name}
    with db_mod.transaction(ctx.settings) as conn:
        act = AdminAct(conn, ctx.settings, admin_key, admin_cert, "account.add", "accounts", params)
        acc = accounts.add(conn, name, list(roles), org_code, display_name)
        signed = act.done(name=name, roles=list(acc.roles), org=org_code)
    click.echo(
        f"account {acc.name}: roles {', '.join(acc.roles)} (signed action {signed.action_id})"
    )


def _texts(
    name: str, roles: tuple[str, ...] = (), org_code: str | None = None, display_name: str = ""
) -> None:
    """Overlong texts are refused before anything is signed (one line, nothing stored)."""
    from mapserver import text_limits

    text_limits.ACCOUNT_NAME.check(name)
    text_limits.DISPLAY_NAME.check(display_name)
    for role in roles:
        text_limits.ROLE.check(role)
    if org_code is not None:
        text_limits.ORG_CODE.check(org_code)


def _account_act(
    ctx: Context,
    key: Path | None,
    cert: Path | None,
    action: str,
    name: str,
    change: Callable[[Any], Any],
    **params: Any,
) -> tuple[Any, int]:
    """One signed change of account NAME: sign, change, audit, in one transaction."""
    from mapserver import db as db_mod

    _texts(name, tuple(str(v) for k, v in params.items() if k == "role"))
    with db_mod.transaction(ctx.settings) as conn:
        act = AdminAct(conn, ctx.settings, key, cert, action, f"account {name}", params)
        result = change(conn)
        return result, act.done(**params).action_id


@account.command("disable")
@click.argument("name")
@admin_options
@pass_ctx
@reports_errors
def account_disable(
    ctx: Context, name: str, admin_key: Path | None, admin_cert: Path | None
) -> None:
    """Disable an account: its certificates no longer get in."""
    from auth import accounts

    _, action_id = _account_act(
        ctx,
        admin_key,
        admin_cert,
        "account.disable",
        name,
        lambda conn: accounts.set_active(conn, name, False),
    )
    click.echo(f"account {name}: disabled (signed action {action_id})")


@account.command("enable")
@click.argument("name")
@admin_options
@pass_ctx
@reports_errors
def account_enable(
    ctx: Context, name: str, admin_key: Path | None, admin_cert: Path | None
) -> None:
    """Enable a disabled account again."""
    from auth import accounts

    _, action_id = _account_act(
        ctx,
        admin_key,
        admin_cert,
        "account.enable",
        name,
        lambda conn: accounts.set_active(conn, name, True),
    )
    click.echo(f"account {name}: enabled (signed action {action_id})")


@account.command("grant")
@click.argument("name")
@click.argument("role")
@admin_options
@pass_ctx
@reports_errors
def account_grant(
    ctx: Context, name: str, role: str, admin_key: Path | None, admin_cert: Path | None
) -> None:
    """Give an account a role."""
    from auth import accounts

    acc, action_id = _account_act(
        ctx,
        admin_key,
        admin_cert,
        "account.grant",
        name,
        lambda conn: accounts.grant(conn, name, role),
        role=role,
    )
    click.echo(f"account {acc.name}: roles {', '.join(acc.roles)} (signed action {action_id})")


@account.command("revoke-role")
@click.argument("name")
@click.argument("role")
@admin_options
@pass_ctx
@reports_errors
def account_revoke_role(
    ctx: Context, name: str, role: str, admin_key: Path | None, admin_cert: Path | None
) -> None:
    """Take a role from an account."""
    from auth import accounts

    acc, action_id = _account_act(
        ctx,
        admin_key,
        admin_cert,
        "account.revoke_role",
        name,
        lambda conn: accounts.revoke_role(conn, name, role),
        role=role,
    )
    roles = ", ".join(acc.roles) or "(none)"
    click.echo(f"account {acc.name}: roles {roles} (signed action {action_id})")


@account.command("bootstrap")
@click.argument("name")
@click.option("--org", "org_code", help="Organisation code (for a new account).")
@click.option("--display-name", default="")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=".")
@pass_ctx
@reports_errors
def account_bootstrap(
    ctx: Context, name: str, org_code: str | None, display_name: str, out_dir: Path
) -> None:
    """The first administrator: account NAME (role admin) and its signing key on disk
    (OUT/NAME.signing.key, 0600), while no administrator holds a usable signing
    certificate from this CA. Its creation is its own first signed act."""
    from auth import accounts, ca_store, certs
    from auth.pki import Kind
    from mapserver import db as db_mod

    secret = ca_store.passphrase()
    store = _store(ctx)
    with db_mod.transaction(ctx.settings) as conn:
        refuse_if_administered(conn, store.certificate())
        accounts.act_as(conn, name)
        exists = conn.execute("SELECT 1 FROM account WHERE name = %s", (name,)).fetchone()
        if exists is None:
            accounts.add(conn, name, ["admin"], org_code, display_name)
        elif "admin" not in accounts.get(conn, name).roles:
            raise InvalidInput(f"account {name!r} exists without the admin role")
        issued = certs.issue(conn, store, secret, name, Kind.SIGNING, out_dir)
        key_file, cert_file = out_dir / f"{name}.signing.key", out_dir / f"{name}.signing.crt"
        params = {"name": name, "roles": ["admin"], "org": org_code, "certificate": issued.serial}
        act = AdminAct(
            conn, ctx.settings, key_file, cert_file, "account.bootstrap", f"account {name}", params
        )
        signed = act.done(created=exists is None, serial=issued.serial, sha256=issued.sha256)
    click.echo(
        f"administrator {name}: signing certificate {issued.serial} (signed action "
        f"{signed.action_id})"
    )
    click.echo(f"  export {KEY_ENV}={key_file}")
    click.echo(f"  export {CERT_ENV}={cert_file}")


# ---------------------------------------------------------------- PKI


@click.group()
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
@click.option(
    "--kind",
    type=click.Choice(["person", "device", "server", "signing", "service"]),
    required=True,
    help="service: one of CityGrid's services as a TLS client (the gateway to the renderer)",
)
@click.option("--days", type=int)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option(
    "--p12-password-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Password for the person's PKCS#12 (default: a new random one, printed once).",
)
@admin_options
@pass_ctx
@reports_errors
def pki_issue(
    ctx: Context,
    name: str,
    kind: str,
    days: int | None,
    out_dir: Path,
    p12_password_file: Path | None,
    admin_key: Path | None,
    admin_cert: Path | None,
) -> None:
    """Issue a key and certificate to an account: writes OUT/NAME.crt, NAME.key (NAME.p12)."""
    from auth import ca_store, certs
    from auth.pki import Kind
    from mapserver import db as db_mod

    secret = ca_store.passphrase()
    password = _p12_password(p12_password_file) if p12_password_file else None
    params = {"account": name, "kind": kind, "days": days}
    certs.require_ca(_store(ctx))
    with db_mod.transaction(ctx.settings) as conn:
        act = AdminAct(
            conn, ctx.settings, admin_key, admin_cert, "pki.issue", f"account {name}", params
        )
        issued = certs.issue(conn, _store(ctx), secret, name, Kind(kind), out_dir, days, password)
        signed = act.done(kind=kind, serial=issued.serial, sha256=issued.sha256)
    click.echo(
        f"issued {kind} certificate {issued.serial} to {name}, valid until "
        f"{issued.not_after:%Y-%m-%d} (signed action {signed.action_id})"
    )
    for path in issued.files:
        click.echo(f"  {path}")
    if issued.p12_password and not p12_password_file:
        click.echo(f"  PKCS#12 password: {issued.p12_password}")


def _p12_password(path: Path) -> str:
    """The PKCS#12 password of --p12-password-file: its text without surrounding space."""
    try:
        password = path.read_text("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidInput("--p12-password-file is not UTF-8 text") from None
    if not password:
        raise InvalidInput("--p12-password-file is empty: the PKCS#12 needs a password")
    return password


@pki.command("revoke")
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True)
@admin_options
@pass_ctx
@reports_errors
def pki_revoke(
    ctx: Context, serial: str, reason: str, admin_key: Path | None, admin_cert: Path | None
) -> None:
    """Revoke a certificate and publish a new CRL."""
    from auth import ca_store, certs
    from mapserver import db as db_mod
    from mapserver.text_limits import REVOCATION_REASON

    REVOCATION_REASON.check(reason)
    secret = ca_store.passphrase()
    resource = f"certificate {serial.lower().removeprefix('0x').replace(':', '')}"
    with db_mod.transaction(ctx.settings) as conn:
        act = AdminAct(
            conn, ctx.settings, admin_key, admin_cert, "pki.revoke", resource, {"reason": reason}
        )
        revoked = certs.revoke(conn, serial, reason)
        certs.publish_crl(conn, _store(ctx), secret)
        signed = act.done(name=revoked.name, serial=revoked.serial, reason=reason)
    click.echo(
        f"revoked {revoked.serial} ({revoked.kind} of {revoked.name}): {reason} "
        f"(signed action {signed.action_id})"
    )
    from mapserver.commands.renderer import push_published

    push_published(ctx.settings)


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
    from mapserver.commands.renderer import push_published

    push_published(ctx.settings)


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


@pki.command("enrol-code")
@click.argument("name")
@click.option(
    "--hours", type=click.IntRange(1, 14 * 24), default=24, show_default=True, help="Lifetime."
)
@admin_options
@pass_ctx
@reports_errors
def pki_enrol_code(
    ctx: Context, name: str, hours: int, admin_key: Path | None, admin_cert: Path | None
) -> None:
    """Print a one-time code that lets NAME enrol one browser signing key (give it out of
    band); only its hash is stored."""
    import datetime as dt

    from auth import enrol
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        act = AdminAct(
            conn,
            ctx.settings,
            admin_key,
            admin_cert,
            "pki.enrol_code",
            f"account {name}",
            {"hours": hours},
        )
        code = enrol.issue_code(conn, name, dt.timedelta(hours=hours))
        act.done(hours=hours, code_sha256=enrol.code_hash(code))
    click.echo(code)


@pki.command("renew")
@pass_ctx
@reports_errors
def pki_renew(ctx: Context) -> None:
    """Renew what is due: CRL, server certificates, token key (run it from a timer)."""
    from auth import ca_store, renewal
    from auth.ca_store import PkiError
    from auth.pki import now
    from mapserver import db as db_mod

    try:
        secret: bytes | None = ca_store.passphrase()
    except PkiError:
        secret = None  # without the passphrase only the token key; the signer keeps the CRL
    done = renewal.renew(ctx.settings, secret)
    if done:
        with db_mod.transaction(ctx.settings) as conn:
            for line in done:
                _audit_cli(conn, "pki.renew", line.split(":")[0], done=line)
    for line in done:
        click.echo(line)
    if any(line.startswith("CRL published") for line in done):
        from mapserver.commands.renderer import push_published

        push_published(ctx.settings)
    for finding in renewal.findings(ctx.settings, now()):
        click.echo(f"{finding.level}: {finding.what}: {finding.message}", err=True)
    if not done:
        click.echo("nothing due")


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


@click.command("signer")
@click.option(
    "--interval",
    type=Finite(1, 86400),
    default=300,
    show_default=True,
    help="Seconds between checks whether the CRL is due for republishing.",
)
@pass_ctx
@reports_errors
def signer(ctx: Context, interval: float) -> None:
    """Run the CA signer: the only server process that holds the CA key (Unix socket
    $CITYGRID_SIGNER_SOCKET, default DATA_DIR/run/signer.sock, mode 0600)."""
    import os

    from auth import ca_store
    from auth.signer import serve
    from mapserver import db as db_mod
    from mapserver import migrate

    with db_mod.connect(ctx.settings) as conn:
        migrate.require_current(conn)  # else every request would fail
    secret = ca_store.passphrase()
    for name in (ca_store.PASSPHRASE_ENV, ca_store.PASSPHRASE_FILE_ENV):
        os.environ.pop(name, None)
    click.echo(f"signer: listening on {ctx.settings.signer_socket_path}", err=True)
    serve(ctx.settings, secret, interval)


COMMANDS = [account, pki, signer]
