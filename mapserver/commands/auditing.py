"""The audit log and offline verification of signed actions."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mapserver import settings as settings_mod
from mapserver.commands.base import (
    Context,
    Finite,
    _audit_cli,
    fail,
    pass_ctx,
    reports_errors,
    writable,
)
from mapserver.errors import CityGridError, InvalidInput

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


@audit.command("sequencer")
@click.option(
    "--renderer",
    is_flag=True,
    help="The renderer's own log (its audit connection), not the gateway's.",
)
@pass_ctx
@reports_errors
def audit_sequencer(ctx: Context, renderer: bool) -> None:
    """Run the install's audit sequencer in the foreground (citygrid-sequencer.service).

    It is a candidate like the one in every serving process: while it holds the install's
    lock they follow, so integrating queued entries, hashing the tree and signing checkpoints
    run here rather than beside requests; if it stops, a serving process takes over within
    seconds. SIGTERM ends it after a final round; an unreachable database ends it with an
    error, for systemd to start it again."""
    import signal
    import threading

    import psycopg

    from audit import sequencer
    from audit.keys import signer

    settings = ctx.settings
    if renderer:
        from tiles.renderer_audit import writer_url

        url = writer_url(settings)
    else:
        url = settings.serving_database_url
    key = signer(settings.pki_dir)
    try:  # a database without the log's tables would be retried silently for ever
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1 FROM audit_tree, audit_queue LIMIT 0")
    except psycopg.OperationalError:
        pass  # unreachable: the candidate retries, then ends with an error (below)
    every, seconds = settings.audit_checkpoint_entries, settings.audit_checkpoint_seconds
    candidate = sequencer.Sequencer(url, key, every, seconds)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    candidate.start()
    leading = False
    while not stop.wait(0.2):
        if not candidate.alive():
            fail("audit sequencer: the database stayed unreachable")
        if candidate.leading.is_set() != leading:
            leading = not leading
            click.echo("audit sequencer: leading" if leading else "audit sequencer: following")
    candidate.stop()
    try:
        done = sequencer.drain(url, key, every, seconds)
    except psycopg.Error as exc:  # the queue keeps the entries: the next leader takes them
        fail(f"audit sequencer: no final round ({type(exc).__name__})")
    size = f", the log's size {done.size}" if done else ""
    click.echo(f"audit sequencer: stopped{size}")


@audit.command("ship")
@pass_ctx
@reports_errors
def audit_ship(ctx: Context) -> None:
    """Ship this host's audit spool files that no process holds into the audit queue.

    A serving process ships its own file as it goes, and adopts those of processes that
    ended; run this when a host's serving processes are stopped for good (before the host is
    retired, or its data directory moved), so that no entry waits in a file nobody ships."""
    import psycopg

    from audit import spool

    settings = ctx.settings
    directory = settings.audit_spool_path
    if not directory.is_dir():
        click.echo(f"audit spool: {directory} holds nothing")
        return
    try:
        with psycopg.connect(settings.serving_database_url, autocommit=True) as conn:
            adopted = spool.adopt(conn, directory, set())
    except psycopg.Error as exc:
        why = " ".join(str(exc).split())[:200]  # libpq's messages span lines
        fail(f"audit spool: not shipped ({type(exc).__name__}: {why})")
    held = len(list(directory.glob(f"*{spool.SUFFIX}")))
    click.echo(f"audit spool: {adopted} file(s) shipped, {held} held by running processes")


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
@reports_errors
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
@reports_errors
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
@reports_errors
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
    click.option(
        "--before",
        type=click.IntRange(0),
        help="Only entries before this leaf index (the next page back: the oldest shown).",
    ),
]


def _search_options(func: Any) -> Any:
    for option in reversed(_SEARCH_OPTIONS):
        func = option(func)
    return func


@audit.command("search")
@_search_options
@click.option("--limit", type=click.IntRange(1, 500), default=100, show_default=True)
@pass_ctx
@reports_errors
def audit_search(ctx: Context, **options: Any) -> None:
    """Entries matching the filters, newest last; a full page says how to see older ones."""
    from audit.review import entries
    from mapserver import db as db_mod

    with db_mod.connect(ctx.settings) as conn:
        found = entries(conn, _audit_filters(**options))
    _print_entries(found)
    if len(found) == options["limit"]:
        click.echo(f"(older entries may match: add --before {found[-1]['leaf_index']})", err=True)


@audit.command("export")
@_search_options
@click.option(
    "--limit",
    type=click.IntRange(1),
    help="At most this many entries, the newest (default: every entry that matches).",
)
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
@reports_errors
def audit_export(ctx: Context, fmt: str, output: Path, limit: int | None, **options: Any) -> None:
    """Export every matching entry, newest first: JSON with the latest checkpoint and each
    entry's inclusion proof against it, or CSV. Written to a file beside OUTPUT and renamed
    when complete, so that an interrupted export leaves no file that looks whole."""
    from audit import review
    from mapserver import db as db_mod

    if not output.name:
        raise InvalidInput("--output must name a file")
    partial = output.with_name(f".{output.name}.part")
    with db_mod.connect(ctx.settings) as conn:
        pages = review.every_page(conn, _audit_filters(**options, limit=review.MAX_PAGE), limit)
        try:
            with _opened(partial, output) as out, _counting() as count:
                if fmt == "csv":
                    writer = csv.writer(out, lineterminator="\n")
                    writer.writerow(review.csv_header())
                    for page in pages:
                        writer.writerows(review.csv_row(item) for item in page)
                        count(len(page))
                else:
                    checkpoint = review.latest_checkpoint(conn)
                    head = json.dumps(checkpoint, ensure_ascii=False, default=str)
                    out.write(f'{{"checkpoint": {head},\n "entries": [')
                    for page in pages:
                        for item in review.proven(conn, page, checkpoint):
                            out.write(",\n  " if count.total else "\n  ")
                            out.write(json.dumps(item, ensure_ascii=False, default=str))
                            count(1)
                    out.write("\n ]}\n")
            # Audited before the file is there: no export without its entry.
            _audit_cli(conn, "audit.export", str(output.name), format=fmt, entries=count.total)
            conn.commit()
            partial.replace(output)
        except BaseException:
            with contextlib.suppress(OSError):  # none was made, or it went
                partial.unlink()
            raise
    click.echo(f"{output}: {count.total} entries")


@contextlib.contextmanager
def _opened(partial: Path, output: Path) -> Iterator[Any]:
    """`partial` open for writing; a failure to open it is told as `output`'s, the file the
    person named."""
    try:
        handle = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(output)) from None
    with handle:
        yield handle


class _Count:
    """Entries written so far, shown on a terminal as they go."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.total, self._progress, self._task = 0, progress, task

    def __call__(self, n: int) -> None:
        self.total += n
        self._progress.update(self._task, completed=self.total)


@contextlib.contextmanager
def _counting() -> Iterator[_Count]:
    from rich.console import Console
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.completed:,} entries exported"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        yield _Count(progress, progress.add_task("export", total=None))


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


@audit.command("bundle")
@click.argument("action_id", type=click.IntRange(1, 2**63 - 1))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
@reports_errors
def audit_bundle(ctx: Context, action_id: int, output: Path) -> None:
    """Write signed action ACTION_ID with its audit entry, inclusion proof, checkpoint and
    CRLs, for `citygrid verify-action` on another machine."""
    from audit.cosignature import parse_vkeys
    from auth import action_bundle, actions
    from mapserver import db as db_mod
    from mapserver.errors import NotFound

    writable(output)
    with db_mod.connect(ctx.settings) as conn:
        found = actions.stored(conn, action_id)
        if found is None:
            raise NotFound(f"no signed action {action_id}")
        _, data, signature, cert_pem = found
        witnesses = parse_vkeys(ctx.settings.audit_witnesses)
        doc = action_bundle.for_action(
            conn, ctx.settings.pki_dir, witnesses, data, signature, cert_pem
        )
        _audit_cli(conn, "audit.bundle", f"signed action {action_id}", file=output.name)
        conn.commit()
    output.write_text(json.dumps(doc, ensure_ascii=False, indent=1), "utf-8")
    click.echo(f"signed action {action_id} written to {output}")


def _trust(
    ca_file: Path | None,
    log_key_file: Path | None,
    witness: tuple[str, ...],
    require: bool,
    max_delay: float | None = None,
) -> Any:
    """What the verifier pins: given on the command line, else the install's own files."""
    import datetime as dt

    from cryptography import x509

    from audit.cosignature import parse_vkeys
    from audit.keys import verifier
    from auth.signed_action import Trust

    install = None if ca_file and log_key_file else settings_mod.load()
    ca_path = ca_file or install.pki_dir / "ca.crt"  # type: ignore[union-attr]
    try:
        ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    except ValueError:
        raise InvalidInput(f"{ca_path} is not a CA certificate (PEM)") from None
    log_key = verifier(install.pki_dir if install else Path("."), log_key_file)
    vkeys = ",".join(witness) if witness else (install.audit_witnesses if install else "")
    delay = dt.timedelta(seconds=max_delay) if max_delay is not None else None
    return Trust(ca, log_key, parse_vkeys(vkeys), require, delay)


def _peer(ca_file: Path | None, log_key_file: Path | None) -> Any:
    """The exchange peer's CA and log key, for a case it forwarded: given on the command
    line, else the install's exchange settings; None when neither names them."""
    from cryptography import x509

    from audit.keys import verifier
    from mapserver.exchange.bundle import PeerTrust

    if ca_file is None or log_key_file is None:
        install = settings_mod.load()
        ca_file = ca_file or (Path(install.exchange_peer_ca) if install.exchange_peer_ca else None)
        log_key_file = log_key_file or (
            Path(install.exchange_peer_log_key) if install.exchange_peer_log_key else None
        )
        if ca_file is None or log_key_file is None:
            return None
    try:
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    except ValueError:
        raise InvalidInput(f"{ca_file} is not a CA certificate (PEM)") from None
    return PeerTrust(ca, verifier(Path("."), log_key_file))


_ISO = "%Y-%m-%dT%H:%M:%SZ"


def _exchange_bundle(doc: Any) -> bool:
    from mapserver.exchange import bundle

    return isinstance(doc, dict) and doc.get("format") == bundle.FORMAT


def _message(doc: dict[str, Any], peer: Any) -> str:
    """An exchange message received from the peer (`citygrid exchange export`), checked as
    the receiving install checked it: every act signed by the peer's people, in the peer's
    checkpointed log, which recorded this number, addressee and content."""
    from auth.signed_action import SignatureRefused
    from mapserver.exchange import bundle
    from mapserver.exchange.outbox import PEER

    if peer is None:
        raise SignatureRefused(
            "an exchange message: pin the peer's CA certificate and audit log key to verify it"
        )
    to, sender = doc.get("to"), doc.get("from")
    if not isinstance(to, str) or not isinstance(sender, str) or PEER.get(to) != sender:
        raise SignatureRefused("an exchange message goes from the city to a district or back")
    message = bundle.verify(doc, peer, to, sender)
    act = message.actions[-1]
    return (
        f"valid: message {message.source_id} (seq {message.seq}, {message.kind}) from the "
        f"{sender} to the {to}: {act.action} by {act.account}, logged "
        f"{message.logged_at:{_ISO}} in the peer's log; {len(message.actions)} signed "
        f"action{'s' if len(message.actions) > 1 else ''}"
    )


def _when(evidence: Any) -> str:
    logged = evidence.logged
    text = f"logged at {logged.at:{_ISO}} (leaf {logged.leaf_index} of {logged.tree_size}"
    if logged.cosigned:
        names = ", ".join(sorted({c.witness for c in logged.cosigned}))
        text += f", cosigned by {names} by {logged.witnessed_by:%Y-%m-%dT%H:%M:%SZ}"
    else:
        text += ", checkpoint not cosigned by a pinned witness"
    text += f"; CRL {evidence.crl_number} current then"
    if evidence.revoked_at is not None:
        text += f"; certificate revoked later, at {evidence.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
    return text + ")"


@click.command("verify-action")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CityGrid's CA certificate (default: the install's pki/ca.crt).",
)
@click.option(
    "--log-key",
    "log_key_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The audit log's Ed25519 public key (default: the install's audit-ed25519.pub).",
)
@click.option(
    "--witness",
    multiple=True,
    help="A witness verifier key to credit (repeatable; default: CITYGRID_AUDIT_WITNESSES).",
)
@click.option(
    "--peer-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="For a case the exchange peer forwarded: the peer's CA certificate (default: the "
    "install's exchange_peer_ca).",
)
@click.option(
    "--peer-log-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="For a case the exchange peer forwarded: the peer's audit log key (default: the "
    "install's exchange_peer_log_key).",
)
@click.option(
    "--files",
    "files_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The photos and recordings exported beside the bundle (export --files): each must "
    "hash to its name and be one the bundle's signed actions or message name.",
)
@click.option(
    "--require-witness", is_flag=True, help="Refuse acts whose checkpoint no witness cosigned."
)
@click.option(
    "--max-witness-delay",
    type=Finite(0, 86400),
    help="Seconds an entry's time may lie before a witness first saw it (e.g. 120: checkpoint "
    "interval + witness interval + slack); refuses entries back-dated further.",
)
def verify_action(
    bundle: Path,
    ca_file: Path | None,
    log_key_file: Path | None,
    witness: tuple[str, ...],
    peer_ca: Path | None,
    peer_log_key: Path | None,
    files_dir: Path | None,
    require_witness: bool,
    max_witness_delay: float | None,
) -> None:
    """Check an exported signed-action or case bundle offline, at the log's time: only the
    bundle, the CA certificate, the log key and the witnesses' keys (and, for a case the
    exchange peer forwarded, the peer's CA certificate and log key)."""
    from audit.cosignature import CosignatureError
    from auth.signed_action import verify_bundle
    from mapserver.cases import evidence, evidence_files

    def with_files(text: str, vouched: set[str]) -> str:
        if files_dir is None:
            return text
        return f"{text}; {evidence_files.said(evidence_files.check(files_dir, vouched))}"

    try:
        doc = json.loads(bundle.read_text("utf-8"))
    except (ValueError, OSError) as exc:
        fail(f"{bundle.name}: not a readable bundle ({type(exc).__name__})")
        return
    try:
        trust = _trust(ca_file, log_key_file, witness, require_witness, max_witness_delay)
        from_peer = evidence.forwarded(doc) or _exchange_bundle(doc)
        peer = _peer(peer_ca, peer_log_key) if from_peer else None
    except settings_mod.SettingsError as exc:
        fail("bad settings: " + "; ".join(exc.problems), 2)
        return
    except CityGridError as exc:  # a CA or log key file of another kind
        fail(exc.message)
        return
    except (ValueError, OSError, CosignatureError) as exc:
        fail(f"cannot read what to pin (CA, log key, witnesses): {type(exc).__name__}")
        return
    try:
        if isinstance(doc, dict) and doc.get("format") == evidence.FORMAT:
            chain, forwarded, submitted, head = evidence.verify_case_bundle(doc, trust, peer)
            first = doc["events"][0]
            if forwarded is not None:
                act = forwarded.actions[-1]
                partner = (
                    f"; forwarded by the {evidence.FORWARDED_BY} as message "
                    f"{forwarded.source_id} ({act.action} by {act.account}, logged "
                    f"{forwarded.logged_at:{_ISO}} in the peer's log)"
                )
            elif submitted is not None:
                partner = (
                    f"; created unsigned by partner {first['actor']} (request sha256 "
                    f"{first['open311']['request_sha256'][:16]}…, logged {submitted.at:{_ISO}})"
                )
            else:
                partner = ""
            span = (
                f" from {chain[0].action.action} to {chain[-1].action.action}, logged "
                f"{chain[0].logged.at:{_ISO}} to {chain[-1].logged.at:{_ISO}}"
                if chain
                else ""
            )
            people = ", ".join(sorted({v.action.account for v in chain}))
            events = len(doc["events"])
            complete = (
                f"; complete: the log recorded its export at version {events} "
                f"({doc['events'][-1]['to']}) at {head.at:{_ISO}}"
                if head is not None
                else f"; not shown complete: no logged export head (an event after "
                f"version {events} would not show)"
            )
            vouched = evidence_files.vouched_by_actions(v.action.parameters for v in chain)
            if forwarded is not None:
                vouched |= evidence_files.vouched_by_content(forwarded.content)
            click.echo(
                with_files(
                    f"valid: case {doc['case']}, {len(chain)} signed actions{span} ({people})"
                    f"{partner}{complete}",
                    vouched,
                )
            )
            return
        if _exchange_bundle(doc):
            said = _message(doc, peer)
            click.echo(with_files(said, evidence_files.vouched_by_content(doc["content"])))
            return
        checked = verify_bundle(doc, trust)
    except (ValueError, OSError) as exc:
        fail(f"{bundle.name}: not a readable bundle ({type(exc).__name__})")
        return
    except CityGridError as exc:
        fail(f"{bundle.name}: INVALID: {exc.message}")
        return
    verified = checked.action
    text = (
        f"valid: {verified.action} on {verified.resource} by {verified.account}, "
        f"{_when(checked)}; payload time {verified.time:%Y-%m-%dT%H:%M:%SZ}, certificate "
        f"{verified.certificate.serial_number:x}"
    )
    try:
        click.echo(with_files(text, evidence_files.vouched_by_actions([verified.parameters])))
    except CityGridError as exc:
        fail(f"{bundle.name}: INVALID: {exc.message}")


COMMANDS = [audit, verify_action]
