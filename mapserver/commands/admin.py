"""Accounts, roles and CityGrid's certificate authority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import Context, _audit_cli, pass_ctx, reports_errors

# ---------------------------------------------------------------- accounts


@click.group()
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


@pki.command("enrol-code")
@click.argument("name")
@click.option(
    "--hours", type=click.IntRange(1, 14 * 24), default=24, show_default=True, help="Lifetime."
)
@pass_ctx
@reports_errors
def pki_enrol_code(ctx: Context, name: str, hours: int) -> None:
    """Print a one-time code that lets NAME enrol one browser signing key (give it out of
    band); only its hash is stored."""
    import datetime as dt

    from auth import enrol
    from mapserver import db as db_mod

    with db_mod.transaction(ctx.settings) as conn:
        code = enrol.issue_code(conn, name, dt.timedelta(hours=hours))
        _audit_cli(conn, "pki.enrol_code", name, hours=hours, code_sha256=enrol.code_hash(code))
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
    type=click.FloatRange(1, 86400),
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

    secret = ca_store.passphrase()
    for name in (ca_store.PASSPHRASE_ENV, ca_store.PASSPHRASE_FILE_ENV):
        os.environ.pop(name, None)
    click.echo(f"signer: listening on {ctx.settings.signer_socket_path}", err=True)
    serve(ctx.settings, secret, interval)


COMMANDS = [account, pki, signer]
