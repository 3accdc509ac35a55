"""`citygrid maint ...`: application maintenance inside the secure zone — the organisation
tree, class tables, time limits and work calendar overrides — with the same functions,
signed actions and versions as `/maintenance` over HTTP.

A change is signed by an administrator's signing key and certificate (--admin-key and
--admin-cert, or $CITYGRID_ADMIN_KEY / $CITYGRID_ADMIN_CERT), accepted by auth.actions
exactly as the server accepts a browser's, stored with the change, and audited.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import Context, _audit_cli, _connection, pass_ctx, reports_errors
from mapserver.errors import InvalidInput
from mapserver.maintenance.organisations import KINDS as ORG_KINDS

KEY_ENV, CERT_ENV = "CITYGRID_ADMIN_KEY", "CITYGRID_ADMIN_CERT"
_PATH = click.Path(dir_okay=False, path_type=Path)


def _admin_options(func: Any) -> Any:
    func = click.option(
        "--admin-cert", envvar=CERT_ENV, type=_PATH, help=f"Signing certificate (${CERT_ENV})."
    )(func)
    return click.option(
        "--admin-key", envvar=KEY_ENV, type=_PATH, help=f"Signing key, PEM (${KEY_ENV})."
    )(func)


def _signed_change(
    ctx: Context,
    key_file: Path | None,
    cert_file: Path | None,
    action: str,
    resource: str,
    params: dict[str, Any],
    apply: Callable[[Any, int, str], dict[str, Any]],
) -> dict[str, Any]:
    """Sign `params` as the administrator, accept it as the server would, apply the change
    in the same transaction and audit it; returns what `apply` returns."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from auth import accounts, actions, pki, policy, signed_action
    from auth.ca_store import CaStore
    from mapserver.commands.cases import _identity

    if key_file is None or cert_file is None:
        raise InvalidInput(
            f"changes are signed: give --admin-key and --admin-cert (or {KEY_ENV}, {CERT_ENV})"
        )
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (ValueError, TypeError, OSError):
        raise InvalidInput("--admin-key and --admin-cert must be unencrypted PEM files") from None
    account = pki.account_of(cert)
    if not account:
        raise InvalidInput("the signing certificate names no account")
    with _connection(ctx) as conn, conn.transaction():
        who = _identity(conn, account)
        policy.check(who.roles, policy.Request("config.admin"), who.streets)
        nonce, _ = actions.new_nonce(conn, who.account)
        data = signed_action.payload(
            action, resource, params, nonce, pki.now(), pki.thumbprint(cert)
        )
        envelope = {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),  # type: ignore[arg-type]
            "certificate": pki.pem(cert).decode(),
        }
        verified, action_id = actions.accept(
            conn, who, envelope, action, resource, CaStore(ctx.settings.pki_dir).certificate()
        )
        accounts.act_as(conn, who.account)
        shown = apply(conn, action_id, who.account)
        _audit_cli(
            conn,
            action,
            resource,
            signed_action=action_id,
            signature_sha256=verified.signature_sha256,
            account=who.account,
        )
    return {**shown, "signed_action": action_id}


def _echo(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=1))


@click.group("maint")
def maint() -> None:
    """Application maintenance: organisations, classes, limits, calendar (signed, versioned)."""


@maint.command("history")
@click.option("--area", type=click.Choice(["organisation", "class", "limit", "calendar"]))
@pass_ctx
@reports_errors
def history(ctx: Context, area: str | None) -> None:
    """Every change, newest first: version, who signed it, what changed."""
    from mapserver.maintenance import changes

    with _connection(ctx) as conn:
        _echo(changes.history(conn, area))


# ---------------------------------------------------------------- organisations


@maint.group("org")
def org() -> None:
    """The organisation tree."""


@org.command("list")
@pass_ctx
@reports_errors
def org_list(ctx: Context) -> None:
    from mapserver.maintenance import organisations

    with _connection(ctx) as conn:
        for o in organisations.listing(conn):
            state = "" if o["active"] else "  (inactive)"
            click.echo(
                f"{o['code']:<24} {o['kind']:<18} parent={o['parent'] or '-':<16} "
                f"street={o['street'] or '-':<9} {o['name']}{state}"
            )


@org.command("save")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--kind", required=True, type=click.Choice(sorted(ORG_KINDS)))
@click.option("--parent", default=None, help="Parent organisation code.")
@click.option("--street", default=None, help="Street code (street offices, communities).")
@click.option("--inactive", is_flag=True, help="Mark the organisation inactive.")
@_admin_options
@pass_ctx
@reports_errors
def org_save(
    ctx: Context,
    code: str,
    name: str,
    kind: str,
    parent: str | None,
    street: str | None,
    inactive: bool,
    admin_key: Path | None,
    admin_cert: Path | None,
) -> None:
    """Add or change an organisation (signed org.save)."""
    from mapserver.maintenance import organisations

    params = {"name": name, "kind": kind, "parent": parent, "street": street,
              "active": not inactive}  # fmt: skip
    shown = _signed_change(
        ctx, admin_key, admin_cert, "org.save", f"organisation {code}", params,
        lambda conn, a, who: organisations.save(conn, code, params, who, a),
    )  # fmt: skip
    click.echo(f"organisation {code}: version {shown['version']}, signed action "
               f"{shown['signed_action']}")  # fmt: skip


# ---------------------------------------------------------------- classes and limits


@maint.group("class")
def class_() -> None:
    """The component and event class tables."""


@class_.command("list")
@click.option("--kind", type=click.Choice(["event", "component"]), default="event")
@pass_ctx
@reports_errors
def class_list(ctx: Context, kind: str) -> None:
    from mapserver.maintenance import classes

    with _connection(ctx) as conn:
        for c in classes.listing(conn, kind):
            click.echo(
                f"{c['major']}/{c['minor']:<4} {c['time_limit']:g} {c['time_unit']:<14} "
                f"{c['department'] or '-':<12} {c['name']}"
            )


def _class_code(text: str) -> tuple[str, str]:
    major, sep, minor = text.partition("/")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise InvalidInput(f"a class is MAJOR/MINOR, e.g. 01/02, not {text!r}")
    return major, minor


@class_.command("set")
@click.argument("kind", type=click.Choice(["event", "component"]))
@click.argument("code")
@click.option("--field", "fields", multiple=True, help="NAME=VALUE: name, department, "
              "filing_condition, closing_condition.")  # fmt: skip
@click.option("--time-limit", type=float)
@click.option("--time-unit", type=click.Choice(["working_hours", "working_days"]))
@_admin_options
@pass_ctx
@reports_errors
def class_set(
    ctx: Context,
    kind: str,
    code: str,
    fields: tuple[str, ...],
    time_limit: float | None,
    time_unit: str | None,
    admin_key: Path | None,
    admin_cert: Path | None,
) -> None:
    """Change a class's texts or handling limit (signed class.update)."""
    from mapserver.maintenance import classes

    major, minor = _class_code(code)
    params: dict[str, Any] = {}
    for pair in fields:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput(f"--field takes NAME=VALUE, got {pair!r}")
        params[name] = value
    if time_limit is not None:
        params["time_limit"] = int(time_limit) if time_limit.is_integer() else time_limit
    if time_unit is not None:
        params["time_unit"] = time_unit
    shown = _signed_change(
        ctx, admin_key, admin_cert, "class.update", f"class {kind}/{major}/{minor}", params,
        lambda conn, a, who: classes.update_class(conn, kind, major, minor, params, who, a),
    )  # fmt: skip
    extra = f", limits version {shown['limits_version']}" if shown["limits_version"] else ""
    click.echo(f"class {kind}/{major}/{minor}: version {shown['version']}{extra}")


@maint.group("limit")
def limit() -> None:
    """Stage time limits and per-class overrides (versioned; a case keeps its filing's)."""


@limit.command("list")
@pass_ctx
@reports_errors
def limit_list(ctx: Context) -> None:
    from mapserver.maintenance import classes

    with _connection(ctx) as conn:
        _echo(classes.stage_limits(conn))


@limit.command("set")
@click.argument("stage")
@click.option("--amount", type=float)
@click.option("--unit", type=click.Choice(["working_hours", "working_days"]))
@click.option("--class", "of_class", help="KIND/MAJOR/MINOR: a class's override.")
@click.option("--remove", is_flag=True, help="Drop the class's override.")
@_admin_options
@pass_ctx
@reports_errors
def limit_set(
    ctx: Context,
    stage: str,
    amount: float | None,
    unit: str | None,
    of_class: str | None,
    remove: bool,
    admin_key: Path | None,
    admin_cert: Path | None,
) -> None:
    """Set a stage's default limit or a class's override (signed limit.set)."""
    from mapserver.maintenance import classes

    params: dict[str, Any] = {}
    if of_class:
        kind, _, rest = of_class.partition("/")
        params["kind"] = kind
        params["major"], params["minor"] = _class_code(rest)
    if remove:
        params["remove"] = True
    else:
        if amount is None or unit is None:
            raise InvalidInput("give --amount and --unit (or --remove)")
        params["amount"] = int(amount) if amount.is_integer() else amount
        params["unit"] = unit
    shown = _signed_change(
        ctx, admin_key, admin_cert, "limit.set", f"limit {stage}", params,
        lambda conn, a, who: classes.set_limit(conn, stage, params, who, a),
    )  # fmt: skip
    click.echo(f"limit {stage}: limits version {shown['limits_version']}")


# ---------------------------------------------------------------- calendar


@maint.group("calendar")
def calendar() -> None:
    """Work calendar overrides (beside the settings' holidays and working days)."""


@calendar.command("list")
@pass_ctx
@reports_errors
def calendar_list(ctx: Context) -> None:
    from mapserver.maintenance import calendar_overrides

    with _connection(ctx) as conn:
        for o in calendar_overrides.listing(conn):
            click.echo(f"{o['day']} {o['kind']:<8} {o['note']}")


@calendar.command("set")
@click.argument("day")
@click.argument("kind", type=click.Choice(["holiday", "workday", "none"]))
@click.option("--note", default="")
@_admin_options
@pass_ctx
@reports_errors
def calendar_set(
    ctx: Context,
    day: str,
    kind: str,
    note: str,
    admin_key: Path | None,
    admin_cert: Path | None,
) -> None:
    """Declare DAY a holiday or a working day, or drop its override (signed calendar.set)."""
    from mapserver.maintenance import calendar_overrides

    params = {"kind": kind, "note": note}
    shown = _signed_change(
        ctx, admin_key, admin_cert, "calendar.set", f"calendar {day}", params,
        lambda conn, a, who: calendar_overrides.set_day(conn, day, params, who, a),
    )  # fmt: skip
    click.echo(f"calendar {day}: {kind}, version {shown['version']}")


COMMANDS = [maint]
