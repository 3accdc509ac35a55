"""`citygrid exchange send|status` (the city–district exchange's sender) and `citygrid
components import|history` (bulk component updates inside the secure zone, signed)."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path

import click

from mapserver.commands.base import (
    Context,
    Finite,
    _audit_cli,
    _connection,
    pass_ctx,
    prune_as_owner,
    reports_errors,
)
from mapserver.commands.cases import _identity, _signed, _signer_options
from mapserver.errors import InvalidInput

_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)
_COMPONENT_CODE = re.compile(r"[0-9]{16,17}\Z")


@click.group("exchange")
def exchange() -> None:
    """City–district exchange: send the outbox to the peer install, show its state."""


@exchange.command("send")
@click.option("--loop", "forever", is_flag=True, help="Keep sending every --interval seconds.")
@click.option("--interval", type=Finite(0.1, 3600), default=5.0, show_default=True)
@pass_ctx
@reports_errors
def send(ctx: Context, forever: bool, interval: float) -> None:
    """Send unacknowledged messages in order, each until the peer acknowledges it."""
    from mapserver.exchange import outbox, sender

    outbox.me(ctx.settings)  # refuses in one line when no exchange is configured
    if forever:
        sender.loop(ctx.settings, interval)
        return
    for sent in sender.send_pending(ctx.settings):
        reason = f" ({sent.reason})" if sent.reason else ""
        click.echo(f"{sent.source_id} seq {sent.seq}: {sent.outcome}{reason}")


@exchange.command("export")
@click.argument("source_id")
@click.option("--bundle", "out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--files",
    "files_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write the photos and recordings the message lists here, as SHA256.EXT.",
)
@pass_ctx
@reports_errors
def export(ctx: Context, source_id: str, out: Path, files_dir: Path | None) -> None:
    """Write a message received from the peer, as it was received, for `citygrid
    verify-action` against the peer's CA and log key (and its files, `--files`)."""
    import json

    from mapserver.errors import NotFound

    with _connection(ctx) as conn:
        row = conn.execute(
            "SELECT seq, kind, bundle FROM exchange_inbox WHERE source_id = %s", (source_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no message {source_id[:200]!r} was received from the peer")
        files = (
            conn.execute(
                """SELECT f.sha256, f.media_type, f.data FROM exchange_file f
               WHERE f.sha256 IN (SELECT jsonb_array_elements(%s::jsonb) ->> 'sha256')""",
                (json.dumps(row[2].get("content", {}).get("attachments", [])),),
            ).fetchall()
            if files_dir is not None
            else []
        )
        _audit_cli(conn, "exchange.export", f"exchange {source_id}", file=out.name)
        conn.commit()
    out.write_text(json.dumps(row[2], ensure_ascii=False, indent=1), "utf-8")
    if files_dir is not None:
        from mapserver.cases import evidence_files

        written = evidence_files.write(files_dir, ((r[0], r[1], bytes(r[2])) for r in files))
        click.echo(f"{written} photo(s) and recording(s) written to {files_dir}")
    click.echo(f"{source_id} (seq {row[0]}, {row[1]}) written to {out}")


@exchange.command("status")
@pass_ctx
@reports_errors
def status(ctx: Context) -> None:
    """Messages waiting for the peer, and the last one taken in from it."""
    with _connection(ctx) as conn:
        waiting = conn.execute(
            "SELECT seq, source_id, kind, attempts, last_error FROM exchange_outbox"
            " WHERE acked_at IS NULL ORDER BY seq"
        ).fetchall()
        last = conn.execute("SELECT last_seq FROM exchange_peer_state").fetchone()
    click.echo(f"received from the peer up to seq {last[0] if last else 0}")
    click.echo(f"{len(waiting)} message(s) waiting for acknowledgement")
    for seq, source_id, kind, attempts, error in waiting:
        click.echo(
            f"  {seq} {source_id} {kind}: {attempts} attempt(s){'; ' + error if error else ''}"
        )


@exchange.command("prune-files")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(1, 3650),
    default=7,
    show_default=True,
    help="Days since the peer delivered the file.",
)
@pass_ctx
@reports_errors
def prune_files(ctx: Context, days: int) -> None:
    """Remove files the peer delivered that no message taken in names, once they are DAYS
    old (a send that never completed left them; they count against the peer's bound)."""
    from mapserver.exchange import files

    removed, size = prune_as_owner(
        ctx, files.prune, days, "exchange files", "exchange.prune_files", "exchange files"
    )
    click.echo(f"removed {removed} file(s), {size} bytes, that no message names")


@click.group("components")
def components() -> None:
    """Components: bulk updates from a CSV or GeoPackage (signed), a component's history."""


@components.command("import")
@_signer_options
@click.argument("path", type=_FILE)
@click.option("--check", "check_only", is_flag=True, help="Check and report; apply nothing.")
@pass_ctx
@reports_errors
def import_(
    ctx: Context, account: str, key_file: Path, cert_file: Path, path: Path, check_only: bool
) -> None:
    """Check every row of PATH (.csv or .gpkg), then apply all of them as one signed action
    of the bureau's person (--as), or none if any row has a problem."""
    from mapserver.components import bulk, kept, store
    from mapserver.exchange import components as exchange_components
    from tiles.service import TileService, grid_from

    fmt = {".csv": "csv", ".gpkg": "gpkg"}.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput("the file must be .csv or .gpkg")
    with path.open("rb") as f:  # never more than the limit in memory, whatever the file is
        data = f.read(bulk.MAX_BYTES + 1)
    rows = bulk.read(data, fmt, ctx.settings.srid)
    grid = grid_from(ctx.settings)
    import_id = str(uuid.uuid4())
    with _connection(ctx) as conn, conn.transaction():
        who = _identity(conn, account)
        own = store.departments(conn, account)
        home = conn.execute(
            "SELECT o.name FROM account a JOIN organisation o ON o.code = a.org_code"
            " WHERE a.name = %s",
            (account,),
        ).fetchone()
        if not own or home is None or "bureau_handler" not in who.roles:
            raise InvalidInput(f"{account} is no bureau's person")
        with conn.transaction(force_rollback=True):
            changes, report = bulk.check(conn, ctx.settings, grid, rows, own)
        shown = bulk.save(
            conn, import_id=import_id, account=account, data=data, filename=path.name[:200],
            fmt=fmt, changes=changes, report=report,
        )  # fmt: skip
        for r in report:
            verdict = "; ".join(r["problems"]) or "ok"
            click.echo(f"row {r['row']}: {r['op']} {r['code'] or '(new)'}: {verdict}")
        if not shown["ok"] or check_only:  # the report and its audit entry are kept
            verdict = "ok" if shown["ok"] else "refused"
            resource = f"component import {import_id}"
            _audit_cli(conn, "component.import", resource, verdict, sha256=shown["sha256"])
    if not shown["ok"]:
        raise InvalidInput(f"{shown['problems']} row(s) with problems: nothing applied")
    if check_only:
        click.echo(f"checked {shown['rows']} row(s): nothing applied (--check)")
        return
    with _connection(ctx) as conn, conn.transaction():
        signed = _signed(
            conn, ctx, who, key_file, cert_file, "component.import",
            f"component import {import_id}", {"sha256": shown["sha256"]},
        )  # fmt: skip
        action = int(signed.action_id)
        done, points = bulk.apply(
            conn, ctx.settings, grid, import_id=import_id, account=account, own=own,
            home=str(home[0]), signed_action=action,
        )  # fmt: skip
        changed = exchange_components.items(conn, done)
        said = exchange_components.enqueue(conn, ctx.settings, changed, action)  # to the city
        _audit_cli(
            conn, "component.import", f"component import {import_id}", signed_action=action,
            signature_sha256=signed.signature_sha256, applied=len(done), exchange=said,
        )  # fmt: skip
    kept.expire(TileService.for_cache(ctx.settings), points)
    click.echo(f"applied {len(done)} change(s) as signed action {action}")


@components.command("history")
@click.argument("code")
@click.option("--as-of", "as_of", help="ISO date or time: the component as it stood then.")
@pass_ctx
@reports_errors
def history(ctx: Context, code: str, as_of: str | None) -> None:
    """Every version of a component (or the one in force at --as-of)."""
    if not _COMPONENT_CODE.match(code):
        raise InvalidInput("a component code is 16 or 17 digits")
    with _connection(ctx) as conn:
        rows = conn.execute(
            """SELECT version, change, valid_from, valid_to, name, state, grid_code, actor,
                      signed_action FROM component_history WHERE code = %s
                      AND (%s::timestamptz IS NULL OR (valid_from <= %s::timestamptz
                           AND (valid_to IS NULL OR valid_to > %s::timestamptz)))
               ORDER BY valid_from, id""",
            (code, _when(as_of), _when(as_of), _when(as_of)),
        ).fetchall()
    if not rows:
        raise InvalidInput(f"no history of component {code}" + (f" at {as_of}" if as_of else ""))
    for v, change, start, end, name, state, grid_code, actor, action in rows:
        until = end.isoformat() if end else "now"
        click.echo(
            f"v{v} {change} {start.isoformat()} .. {until}: {name} [{state}] grid {grid_code}"
            f" by {actor or '-'}" + (f" (signed action {action})" if action else "")
        )


def _when(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("--as-of must be an ISO 8601 date or time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


COMMANDS = [exchange, components]
