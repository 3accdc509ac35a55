"""`citygrid maint ...`: application maintenance inside the secure zone — the organisation
tree, class tables, time limits and work calendar overrides — with the same functions,
signed actions and versions as `/maintenance` over HTTP.

A change is signed by an administrator's signing key (mode 0600) and certificate
(--admin-key and --admin-cert, or $CITYGRID_ADMIN_KEY / $CITYGRID_ADMIN_CERT), accepted by
auth.actions exactly as the server accepts a browser's, stored with the change, and audited
under the administrator's name with the signature's hash.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import Context, Finite, _connection, pass_ctx, reports_errors
from mapserver.commands.signing import admin_options
from mapserver.errors import InvalidInput
from mapserver.maintenance.organisations import KINDS as ORG_KINDS


def _signed_change(
    ctx: Context,
    key_file: Path | None,
    cert_file: Path | None,
    action: str,
    resource: str,
    params: dict[str, Any],
    apply: Callable[[Any, int, str], dict[str, Any]],
) -> dict[str, Any]:
    """Sign `params` with the administrator's key (mapserver.commands.signing: the same
    helpers as the account and pki commands), accept it as the server would, apply the
    change in the same transaction and audit it under the signer's name."""
    from audit.keys import signer as audit_key
    from audit.record import record
    from auth import accounts, policy
    from mapserver.commands import signing

    if key_file is None or cert_file is None:
        raise InvalidInput(
            "changes are signed: give --admin-key and --admin-cert (or "
            f"{signing.KEY_ENV}, {signing.CERT_ENV})"
        )
    admin = signing.load(key_file, cert_file)
    with _connection(ctx) as conn, conn.transaction():
        who = signing.identity(conn, admin.account)
        policy.check(who.roles, policy.Request("config.admin"), who.streets)
        signed = signing.sign_and_accept(
            conn, ctx.settings.pki_dir, who, admin, action, resource, params
        )
        accounts.act_as(conn, who.account)  # the change register names the signer
        shown = apply(conn, signed.action_id, who.account)
        entry = signing.cli_entry(who.account, action, resource, signed, {})
        record(conn, entry, audit_key(ctx.settings.pki_dir))
    return {**shown, "signed_action": signed.action_id}


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
        _echo(changes.history(conn, area, limit=2**31)[0])  # every one (the page lists 200)


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
@admin_options
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
        for c in classes.listing(conn, kind, ctx.settings.locale):
            click.echo(
                f"{c['major']}/{c['minor']:<4} {c['time_limit']:g} {c['time_unit']:<14} "
                f"{c['department'] or '-':<12} {c['name']}"
            )


def _amount(value: float) -> int | float:
    """A time limit as signed; refused here if no limit can be (1e300 is not even signable:
    JCS has no integer that large; click refuses nan and inf)."""
    from mapserver.maintenance import classes

    classes.checked_amount(value)
    return int(value) if value.is_integer() else value


def _class_code(text: str) -> tuple[str, str]:
    major, sep, minor = text.partition("/")
    if not sep or not (major + minor).isascii() or not major.isdigit() or not minor.isdigit():
        raise InvalidInput(f"a class is MAJOR/MINOR, e.g. 01/02, not {text!r}")
    return major, minor


@class_.command("set")
@click.argument("kind", type=click.Choice(["event", "component"]))
@click.argument("code")
@click.option("--field", "fields", multiple=True, help="NAME=VALUE: name, department, "
              "filing_condition, closing_condition.")  # fmt: skip
@click.option("--time-limit", type=Finite())
@click.option("--time-unit", type=click.Choice(["working_hours", "working_days"]))
@admin_options
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
        params["time_limit"] = _amount(time_limit)
    if time_unit is not None:
        params["time_unit"] = time_unit
    shown = _signed_change(
        ctx, admin_key, admin_cert, "class.update", f"class {kind}/{major}/{minor}", params,
        lambda conn, a, who: classes.update_class(
            conn, kind, major, minor, params, who, a, ctx.settings.locale
        ),
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
@click.option("--amount", type=Finite())
@click.option("--unit", type=click.Choice(["working_hours", "working_days"]))
@click.option("--class", "of_class", help="KIND/MAJOR/MINOR: a class's override.")
@click.option("--remove", is_flag=True, help="Drop the class's override.")
@admin_options
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
        if kind not in ("event", "component"):
            raise InvalidInput(f"--class is KIND/MAJOR/MINOR, e.g. event/01/02, not {of_class!r}")
        params["kind"] = kind
        params["major"], params["minor"] = _class_code(rest)
    if remove:
        params["remove"] = True
    else:
        if amount is None or unit is None:
            raise InvalidInput("give --amount and --unit (or --remove)")
        params["amount"] = _amount(amount)
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
@admin_options
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
