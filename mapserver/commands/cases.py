"""`citygrid case create|list|show|act|export`: the case workflow inside the secure zone.

A change is signed by the person who makes it (`--as NAME --key FILE --cert FILE`, their
signing key and certificate), checked by the same policy and signed-action path as over
HTTP, and audited.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import (
    Context,
    Finite,
    _audit_cli,
    _connection,
    pass_ctx,
    prune_as_owner,
    reports_errors,
    writable,
)
from mapserver.commands.signing import identity as _identity
from mapserver.errors import InvalidInput, NotFound

_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


@click.group("case")
def case() -> None:
    """Cases: create, list, show, act on them, export their evidence."""


def _signer_options(func: Any) -> Any:
    func = click.option(
        "--cert", "cert_file", type=_FILE, required=True, help="Signing certificate."
    )(func)
    func = click.option("--key", "key_file", type=_FILE, required=True, help="Signing key (PEM).")(
        func
    )
    return click.option("--as", "account", required=True, help="The person acting.")(func)


def _signed(
    conn: Any,
    ctx: Context,
    who: Any,
    key_file: Path,
    cert_file: Path,
    action: str,
    resource: str,
    params: dict[str, Any],
) -> Any:
    """Sign `params` as `who` with their key (0600), and accept it as the server would."""
    from mapserver.commands import signing

    signer = signing.load(key_file, cert_file)
    return signing.sign_and_accept(
        conn, ctx.settings.pki_dir, who, signer, action, resource, params
    )


def _fields(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InvalidInput(f"--field takes NAME=VALUE, got {pair!r}")
        out[name] = (
            int(value) if value.isascii() and value.isdigit() and name == "working_hours" else value
        )
    return out


def _grid(ctx: Context) -> Any:
    from tiles.service import grid_from

    return grid_from(ctx.settings)


@case.command("create")
@_signer_options
@click.option(
    "--source",
    type=click.Choice(["inspector", "phone", "web", "sms", "city_platform", "leader"]),
    required=True,
)
@click.option("--event", "event_class", help="Event class MAJOR/MINOR, e.g. 01/02.")
@click.option("--component", help="Component code (a component case).")
@click.option("--address", help="Where: an address.")
@click.option("--grid", "grid_code", help="Where: a unit grid code.")
@click.option("--point", nargs=2, type=Finite(), help="Where: X Y in the install's CRS.")
@click.option("--description", required=True)
@click.option("--contact", default="", help="The caller's contact (operators only see it).")
@pass_ctx
@reports_errors
def create(
    ctx: Context,
    account: str,
    key_file: Path,
    cert_file: Path,
    source: str,
    event_class: str | None,
    component: str | None,
    address: str | None,
    grid_code: str | None,
    point: tuple[float, float] | None,
    description: str,
    contact: str,
) -> None:
    """Record a new case; prints its number."""
    from auth import policy
    from mapserver.cases import contact as contact_mod
    from mapserver.cases import flow, on_map, store
    from mapserver.maintenance import calendar_overrides
    from tiles.service import TileService

    params: dict[str, Any] = {"source": source, "description": description}
    private = None
    if contact:
        private, params["contact_digest"] = contact_mod.new(contact.strip())
    if component:
        params.update(kind="component", component=component)
    elif event_class:
        major, _, minor = event_class.partition("/")
        places = {"address": address, "grid": grid_code, "point": list(point) if point else None}
        given = {k: v for k, v in places.items() if v}
        if len(given) != 1:
            raise InvalidInput("an event case needs exactly one of --address, --grid, --point")
        params.update(kind="event", major=major, minor=minor, place=given)
    else:
        raise InvalidInput("give --event MAJOR/MINOR or --component CODE")
    action = flow.SOURCES[source]
    grid = _grid(ctx)
    with _connection(ctx) as conn, conn.transaction():
        who = _identity(conn, account)
        policy.check(who.roles, policy.Request(action), who.streets)
        signed = {k: v for k, v in params.items() if k != "place" or "point" not in v}
        act = _signed(conn, ctx, who, key_file, cert_file, action, "cases", signed)
        action_id = act.action_id
        number = store.create(
            conn,
            ctx.settings,
            grid,
            calendar_overrides.for_settings(conn, ctx.settings),
            account=account,
            params=params,
            signed_action=action_id,
            contact=private,
            allow_point=True,
        )
        _audit_cli(
            conn,
            action,
            f"case {number}",
            signed_action=action_id,
            signature_sha256=act.signature_sha256,
            case_version=1,
        )
        pixel = on_map.pixel_of_case(conn, grid, number)
    on_map.expire(TileService.for_cache(ctx.settings), pixel)  # the cases overlay there
    click.echo(number)


@case.command("act")
@click.argument("number")
@click.argument("transition")
@_signer_options
@click.option(
    "--field", "fields", multiple=True, help="NAME=VALUE (repeat), e.g. bureau=bureau-01."
)
@pass_ctx
@reports_errors
def act(
    ctx: Context,
    number: str,
    transition: str,
    account: str,
    key_file: Path,
    cert_file: Path,
    fields: tuple[str, ...],
) -> None:
    """Fire TRANSITION on case NUMBER as a signed action; prints the new state."""
    from auth import policy
    from mapserver.cases import flow, on_map, reading, store
    from mapserver.maintenance import calendar_overrides
    from tiles.service import TileService

    t = flow.transition(transition)
    with _connection(ctx) as conn, conn.transaction():
        who = _identity(conn, account)
        policy.check(who.roles, policy.Request(t.action), who.streets)
        row = conn.execute("SELECT state FROM city_case WHERE number = %s", (number,)).fetchone()
        if row is None:
            raise NotFound(f"no case {number}")
        params = {"from": row[0], **_fields(fields)}
        act = _signed(
            conn, ctx, who, key_file, cert_file, f"case.{transition}", f"case {number}", params
        )
        action_id = act.action_id
        bureau = reading.organisation_of(conn, account) if "bureau_handler" in who.roles else None
        state, version = store.act(
            conn,
            calendar_overrides.for_settings(conn, ctx.settings),
            number=number,
            name=transition,
            params=params,
            account=account,
            signed_action=action_id,
            bureau_of_actor=bureau,
            peer_org=ctx.settings.forwarding_org,
        )
        _audit_cli(
            conn,
            f"case.{transition}",
            f"case {number}",
            signed_action=action_id,
            signature_sha256=act.signature_sha256,
            case_version=version,
        )
        pixel = on_map.pixel_of_case(conn, _grid(ctx), number)
    on_map.expire(TileService.for_cache(ctx.settings), pixel)  # the cases overlay there
    click.echo(f"{number}: {state} (version {version})")


@case.command("prune-uploads")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(1, 3650),
    default=30,
    show_default=True,
    help="Days since the upload.",
)
@pass_ctx
@reports_errors
def prune_uploads(ctx: Context, days: int) -> None:
    """Remove photos and recordings uploaded DAYS ago or more that no case's step names (a
    report never sent); never one a step names. As the database's owner."""
    from mapserver.cases import attachments

    removed, size = prune_as_owner(
        ctx, attachments.prune_unattached, days, "uploads", "case.prune_uploads", "case uploads"
    )
    click.echo(f"removed {removed} upload(s), {size} bytes, that no step names")


@case.command("list")
@click.option("--state", help="Comma-separated states.")
@click.option("--street", help="Street code.")
@click.option("--overdue", is_flag=True)
@click.option("--limit", type=click.IntRange(1, 10000), default=50)
@pass_ctx
@reports_errors
def listing(ctx: Context, state: str | None, street: str | None, overdue: bool, limit: int) -> None:
    """Cases, by deadline."""
    from mapserver.cases import flow

    conditions: list[str] = ["true"]
    values: list[Any] = []
    if state:
        unknown = [s for s in state.split(",") if s not in flow.STATES]
        if unknown:  # a mistyped state listed nothing, as if no case were in it
            raise InvalidInput(f"no state {unknown[0]!r}; states: {', '.join(flow.STATES)}")
        conditions.append("state = ANY(%s)")
        values.append(state.split(","))
    if street:
        conditions.append("street_code = %s")
        values.append(street)
    if overdue:
        conditions.append("stage_deadline < now()")
    with _connection(ctx) as conn:
        if (
            street
            and not conn.execute("SELECT 1 FROM street WHERE code = %s", (street,)).fetchone()
        ):
            raise InvalidInput(f"no street {street!r} in this district (a 9-digit street code)")
        rows = conn.execute(
            "SELECT number, state, kind, major || minor, grid_code, stage_deadline, description"
            f" FROM city_case WHERE {' AND '.join(conditions)}"  # noqa: S608 - fixed texts
            " ORDER BY stage_deadline NULLS LAST, id LIMIT %s",
            [*values, limit + 1],
        ).fetchall()
    for number, st, kind, cls, grid, deadline, text in rows[:limit]:
        due = f"{deadline:%Y-%m-%d %H:%M}" if deadline else "-"
        click.echo(f"{number}  {st:<10} {kind:<9} {cls:<5} {grid}  {due}  {text[:40]}")
    if len(rows) > limit:
        click.echo(f"(more cases match than the {limit} shown: see --limit)", err=True)


@case.command("show")
@click.argument("number")
@pass_ctx
@reports_errors
def show(ctx: Context, number: str) -> None:
    """A case and its history, as JSON."""
    with _connection(ctx) as conn:
        row = conn.execute(
            """SELECT c.id, c.number, c.state, c.version, c.kind, c.major, c.minor,
                      c.component_code, c.source, c.description, c.grid_code, c.street_code,
                      c.bureau, c.stage, c.stage_deadline, c.rework_count
               FROM city_case c WHERE c.number = %s""",
            (number,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no case {number}")
        keys = (
            "number",
            "state",
            "version",
            "kind",
            "major",
            "minor",
            "component",
            "source",
            "description",
            "grid",
            "street",
            "bureau",
            "stage",
            "deadline",
            "rework_count",
        )
        shown: dict[str, Any] = dict(zip(keys, row[1:], strict=True))
        shown["history"] = [
            {"at": at, "actor": actor, "transition": t, "from": f, "to": to, "signed_action": a}
            for at, actor, t, f, to, a in conn.execute(
                "SELECT at, actor, transition, from_state, to_state, signed_action"
                " FROM case_event WHERE case_id = %s ORDER BY id",
                (row[0],),
            ).fetchall()
        ]
    click.echo(json.dumps(shown, ensure_ascii=False, indent=2, default=str))


@case.command("export")
@click.argument("number")
@click.option("--bundle", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--wait",
    type=Finite(0, 600),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the log to take this export in under a signed checkpoint.",
)
@click.option(
    "--without-head",
    is_flag=True,
    help="Write the bundle even if no export of this version is under a checkpoint yet (no "
    "audit sequencer runs on this database): each event verifies, not that none is missing.",
)
@click.option(
    "--files",
    "files_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the case's photos and recordings here, as SHA256.EXT (verify-action "
    "--files checks them against the signed actions).",
)
@pass_ctx
@reports_errors
def export(
    ctx: Context, number: str, out: Path, wait: float, without_head: bool, files_dir: Path | None
) -> None:
    """Write everything needed to verify the case's chain offline (`citygrid verify-action`).

    The export is audited with the version it read; once that entry (or an earlier export's
    of the same version) is under a signed checkpoint, the bundle carries it as its head,
    which shows that the bundle left no event out. The audit sequencer (a serving process,
    or `citygrid audit sequencer`) puts it there within seconds."""
    from audit.cosignature import parse_vkeys
    from auth.action_bundle import NotYetLogged
    from mapserver.cases import reading

    writable(out)
    with _connection(ctx) as conn:
        doc = reading.bundle(conn, ctx.settings, number)
        if not doc["events"]:
            raise NotFound(f"no case {number}")
        for i, event in enumerate(doc["events"], start=1):
            for evidence in (event["bundle"], event.get("open311")):
                if evidence is not None and evidence.get("pending"):
                    raise NotYetLogged(f"event {i}: {evidence['pending']}")
        stated = reading.stated_head(number, doc["events"])
        _audit_cli(
            conn, "case.export", reading.head_resource(number), case_head=stated, file=out.name
        )
        conn.commit()
        witnesses = parse_vkeys(ctx.settings.audit_witnesses)
        deadline = time.monotonic() + wait
        while doc["head"].get("pending") and time.monotonic() < deadline:
            time.sleep(0.2)  # the sequencer's next rounds: integrated, then a checkpoint
            doc["head"] = reading.head(conn, witnesses, stated)
            conn.commit()
    pending = doc["head"].get("pending")
    if pending and not without_head:
        raise NotYetLogged(
            f"the export's own entry: {pending} (no audit sequencer running? --without-head "
            "writes the bundle without the proof that no event is missing)"
        )
    if pending:
        del doc["head"]
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1), "utf-8")
    if files_dir is not None:
        from mapserver.cases import evidence_files

        with _connection(ctx) as conn:
            rows = conn.execute(
                """SELECT DISTINCT a.sha256, a.media_type, a.data FROM case_attachment a
                   JOIN case_attachment_link l ON l.attachment_id = a.id
                   JOIN city_case c ON c.id = l.case_id WHERE c.number = %s""",
                (number,),
            ).fetchall()
        written = evidence_files.write(files_dir, ((r[0], r[1], bytes(r[2])) for r in rows))
        click.echo(f"{number}: {written} photo(s) and recording(s) written to {files_dir}")
    complete = (
        "without a head: it does not show that no event is missing"
        if pending
        else f"complete as the log recorded version {stated['version']} ({stated['state']})"
    )
    click.echo(f"{number}: {len(doc['events'])} events written to {out.name}, {complete}")


COMMANDS = [case]
