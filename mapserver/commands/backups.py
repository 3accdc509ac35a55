"""`citygrid backup create|verify|restore|prune`: an install's database and key files, kept
together with a signed manifest of their hashes (mapserver.backup, mapserver.restore)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mapserver.commands.base import Context, _audit_cli, _connection, pass_ctx, reports_errors
from mapserver.errors import InvalidInput

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@click.group("backup")
def backup() -> None:
    """Backups: the database and the keys of the data directory, and their restore."""


@contextlib.contextmanager
def _stages() -> Iterator[Callable[[str], None]]:
    """Each stage of a long backup or restore, as it begins, on a terminal
    (stderr); nothing when the output goes elsewhere."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda stage: None
        return
    with console.status("") as status:
        yield lambda stage: status.update(f"{stage} …")


def _said(manifest: object) -> str:
    from mapserver.backup import Manifest

    assert isinstance(manifest, Manifest)
    log = manifest.checkpoint
    at = f"the audit log's checkpoint of {log['size']} entries" if log else "no audit checkpoint"
    return f"database {manifest.database} at {manifest.migration}, {at}, made {manifest.created_at}"


_KEY = click.Path(dir_okay=False, exists=True, path_type=Path)
_LOG_KEY_HELP = "The audit log's public key (pki/audit-ed25519.pub, as witnesses pin it)."


def _log_key(path: Path | None) -> Ed25519PublicKey | None:
    from audit.keys import verifier

    return None if path is None else verifier(Path("."), path)


@backup.command("create")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option(
    "--under",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write into a new directory under ROOT named for the time (UTC), as the timer does.",
)
@pass_ctx
@reports_errors
def backup_create(ctx: Context, out: Path | None, root: Path | None) -> None:
    """Write a backup of this install into OUT, a new or empty directory (owner-only: it
    holds the CA key and the checkpoint key, encrypted as on the install), its manifest
    signed with the audit log's key."""
    import datetime as dt

    from mapserver import backup as backup_mod

    if out is not None and root is not None:
        raise InvalidInput("name the backup's directory or a root with --under, not both")
    if root is not None:
        out = backup_mod.dated(root, dt.datetime.now(dt.UTC))
    if out is None:
        raise InvalidInput("name the backup's directory, or a root with --under")
    with _stages() as stage:
        made = backup_mod.create(ctx.settings, out, stage)
    with _connection(ctx) as conn:
        _audit_cli(conn, "backup.create", str(out), manifest_sha256=made.sha256)
        conn.commit()
    click.echo(f"{out}: {_said(made.manifest)}; manifest SHA-256 {made.sha256}")


@backup.command("verify")
@click.argument("backup_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--log-key", "log_key_file", type=_KEY, help=_LOG_KEY_HELP)
@reports_errors
def backup_verify(backup_dir: Path, log_key_file: Path | None) -> None:
    """Check that BACKUP_DIR's files are the ones it made (by their SHA-256) and, with
    --log-key, that the install with that audit log key made it (its signed manifest)."""
    from mapserver import backup as backup_mod

    verified = backup_mod.verify(backup_dir, _log_key(log_key_file))
    signature = {
        "checked": "signed by the log key",
        "not checked": "signature not checked (no --log-key)",
        "unsigned": "unsigned (format 1: compare its hashes with the backup.create entry)",
    }[verified.signature]
    click.echo(f"{backup_dir}: intact, {signature}; {_said(verified.manifest)}")


@backup.command("restore")
@click.argument("backup_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--log-key", "log_key_file", type=_KEY, help=_LOG_KEY_HELP)
@pass_ctx
@reports_errors
def backup_restore(ctx: Context, backup_dir: Path, log_key_file: Path | None) -> None:
    """Restore BACKUP_DIR into this install's database and data directory, which must be
    empty (a restore makes a new install; it never writes over one). Run it as the user the
    services run as: the files restored are theirs, with a database URL of a superuser: it
    makes the install's roles the cluster lacks (without passwords) and the PostGIS
    extension. A restore that fails leaves both as they were, for another try."""
    from mapserver import restore as restore_mod

    with _stages() as stage:
        restored = restore_mod.restore(ctx.settings, backup_dir, stage, _log_key(log_key_file))
    verified = restored.verified
    with _connection(ctx) as conn:
        _audit_cli(conn, "backup.restore", str(backup_dir), manifest_sha256=verified.sha256)
        conn.commit()
    click.echo(f"restored: {_said(verified.manifest)}")
    if restored.roles_made:
        click.echo(
            f"Made the roles {', '.join(restored.roles_made)} on this cluster, without"
            " passwords: set them as the deployment does."
        )
    if verified.signature != "checked":
        click.echo(f"The backup's signature was not checked ({verified.signature}).")
    log = verified.manifest.checkpoint
    if log:
        click.echo(
            f"The audit log ends as it was then (checkpoint of {log['size']} entries): a witness"
            " that cosigned a larger one will report it as cut, which it is."
        )


@backup.command("prune")
@click.argument("root", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--keep", type=click.IntRange(min=1), required=True, help="Complete backups kept.")
@reports_errors
def backup_prune(root: Path, keep: int) -> None:
    """Remove the backups in ROOT older than its newest KEEP complete ones (their files
    checked against their manifests). A directory without a manifest (a backup under way,
    anything else) is never removed, nor a damaged backup newer than those kept."""
    from mapserver import backup as backup_mod

    pruned = backup_mod.prune(root, keep)
    for path in pruned.removed:
        click.echo(f"removed {path}")
    for path, why in pruned.left:
        click.echo(f"left {path}: {why}", err=True)
    newest = f", newest {pruned.kept[0]}" if pruned.kept else ""
    click.echo(f"{root}: {len(pruned.kept)} complete backups kept{newest}")


COMMANDS = [backup]
