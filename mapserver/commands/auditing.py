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
    """Recompute the tree from the entries; check every checkpoint and their consistency,
    and that nothing is below what a witness cosigned."""
    import base64

    from audit.cosignature import parse_vkeys
    from audit.keys import verifier
    from audit.verify import verify
    from mapserver import db as db_mod

    witnesses = parse_vkeys(ctx.settings.audit_witnesses)
    with db_mod.connect(ctx.settings) as conn:
        report = verify(conn, verifier(ctx.settings.pki_dir, key_file), witnesses)
    if not report.ok:
        fail(f"audit log NOT intact: {report.problem}")
    top = report.cosigned
    witnessed = (
        f"cosigned up to size {top.checkpoint.size} by {top.witness}"
        if top
        else "no witness cosignature" + ("" if witnesses else " (no witness configured)")
    )
    click.echo(
        f"ok: {report.entries} entries, {report.checkpoints} checkpoints, root "
        f"{base64.b64encode(report.root).decode()}; {witnessed}; "
        f"{report.changes} register changes"
    )


@audit.command("key")
@click.option("--fingerprint", is_flag=True, help="Only the fingerprint, to pin the key with.")
@pass_ctx
@reports_errors
def audit_key(ctx: Context, fingerprint: bool) -> None:
    """The checkpoint key: its fingerprint is what witnesses and the review page pin."""
    from audit import witness
    from audit.cosignature import raw
    from audit.keys import signer

    public = raw(signer(ctx.settings.pki_dir).public_key())
    if fingerprint:
        click.echo(witness.fingerprint(public))
        return
    click.echo(f"fingerprint {witness.fingerprint(public)}")
    click.echo(f"public key  {base64_text(public)}")


def base64_text(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


@audit.group("witness")
def audit_witness() -> None:
    """A witness of the log, for the security office's own machine and key."""


_STATE = click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The witness's own directory (its key and what it saw).",
)


@audit_witness.command("init")
@_STATE
@click.option("--name", required=True, help="The witness's name, e.g. security-office/w1.")
@click.option(
    "--log-fingerprint",
    required=True,
    help="The log key's fingerprint (`citygrid audit key --fingerprint`), given out of band.",
)
def witness_init(state_dir: Path, name: str, log_fingerprint: str) -> None:
    """Make the witness's key; prints the verifier key for CITYGRID_AUDIT_WITNESSES."""
    from audit import witness
    from audit.cosignature import CosignatureError

    try:
        made = witness.init(state_dir, name, log_fingerprint)
    except (witness.WitnessError, CosignatureError) as exc:
        fail(str(exc))
        return
    click.echo(made.vkey())


@audit_witness.command("key")
@_STATE
def witness_key(state_dir: Path) -> None:
    """The witness's verifier key (for CITYGRID_AUDIT_WITNESSES)."""
    from audit import witness

    try:
        click.echo(witness.public(state_dir).vkey())
    except witness.WitnessError as exc:
        fail(str(exc))


@audit_witness.command("run")
@_STATE
@click.option("--server", required=True, help="https://host:port of the CityGrid server.")
@click.option("--cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
def witness_run(state_dir: Path, server: str, cert: Path, key: Path, ca: Path) -> None:
    """Check the newest checkpoint against the last one cosigned, then cosign it. Exit 3 and
    a loud message when the log shrank or forked."""
    import time

    from audit import witness

    try:
        state = witness.run(state_dir, witness.HttpsLog(server, cert, key, ca), int(time.time()))
    except witness.Refusal as exc:
        click.secho(f"WITNESS REFUSES: {exc}", err=True, fg="red", bold=True)
        click.secho(
            "The audit log was truncated or rewritten on the server, or this is not the log "
            "this witness watches. Do not trust it; keep this witness's state as evidence.",
            err=True,
            fg="red",
        )
        raise SystemExit(3) from None
    except witness.WitnessError as exc:
        fail(str(exc))
        return
    click.echo(f"cosigned: size {state.size}, root {state.root}")


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
            first = doc["events"][0]
            partner = (
                f"; created unsigned by partner {first['actor']} (request sha256 "
                f"{first['open311']['request_sha256'][:16]}…)"
                if first.get("bundle") is None
                else ""
            )
            span = f" from {chain[0].action} to {chain[-1].action}" if chain else ""
            people = ", ".join(sorted({v.account for v in chain}))
            click.echo(
                f"valid: case {doc['case']}, {len(chain)} signed actions{span} ({people}){partner}"
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
