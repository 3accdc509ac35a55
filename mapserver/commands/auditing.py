"""The audit log and offline verification of signed actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from mapserver import settings as settings_mod
from mapserver.commands.base import Context, _audit_cli, fail, pass_ctx, reports_errors
from mapserver.errors import CityGridError

# ---------------------------------------------------------------- audit


@click.group()
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
        f"{base64.b64encode(report.root).decode()}; {report.changes} register changes"
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


@click.command("verify-action")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CityGrid's CA certificate (default: the install's pki/ca.crt).",
)
def verify_action(bundle: Path, ca_file: Path | None) -> None:
    """Check an exported signed-action or case bundle offline: only the bundle and the CA."""
    from cryptography import x509

    from auth.signed_action import verify_bundle
    from mapserver.cases import evidence

    try:
        ca_path = ca_file or settings_mod.load().pki_dir / "ca.crt"
        ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
        doc = json.loads(bundle.read_text("utf-8"))
        if isinstance(doc, dict) and doc.get("format") == evidence.FORMAT:
            chain = evidence.verify_case_bundle(doc, ca)
            click.echo(
                f"valid: case {doc['case']}, {len(chain)} signed actions from "
                f"{chain[0].action} to {chain[-1].action} "
                f"({', '.join(sorted({v.account for v in chain}))})"
            )
            return
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


COMMANDS = [audit, verify_action]
