"""`citygrid backup create|verify|restore`: an install's database and key files, kept
together with a manifest of their hashes (mapserver.backup)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from mapserver.commands.base import Context, _audit_cli, _connection, pass_ctx, reports_errors


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


@backup.command("create")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
@reports_errors
def backup_create(ctx: Context, out: Path) -> None:
    """Write a backup of this install into OUT, a new or empty directory (owner-only: it
    holds the CA key and the checkpoint key, encrypted as on the install)."""
    from mapserver import backup as backup_mod

    with _stages() as stage:
        manifest = backup_mod.create(ctx.settings, out, stage)
    with _connection(ctx) as conn:
        _audit_cli(conn, "backup.create", str(out), sha256=manifest.files)
        conn.commit()
    click.echo(f"{out}: {_said(manifest)}")


@backup.command("verify")
@click.argument("backup_dir", type=click.Path(file_okay=False, path_type=Path))
@reports_errors
def backup_verify(backup_dir: Path) -> None:
    """Check that BACKUP_DIR's files are the ones it made (by their SHA-256)."""
    from mapserver import backup as backup_mod

    click.echo(f"{backup_dir}: intact; {_said(backup_mod.verify(backup_dir))}")


@backup.command("restore")
@click.argument("backup_dir", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
@reports_errors
def backup_restore(ctx: Context, backup_dir: Path) -> None:
    """Restore BACKUP_DIR into this install's database and data directory, which must be
    empty (a restore makes a new install; it never writes over one). Run it as the user the
    services run as: the files restored are theirs."""
    from mapserver import backup as backup_mod

    with _stages() as stage:
        manifest = backup_mod.restore(ctx.settings, backup_dir, stage)
    with _connection(ctx) as conn:
        _audit_cli(conn, "backup.restore", str(backup_dir), sha256=manifest.files)
        conn.commit()
    click.echo(f"restored: {_said(manifest)}")
    log = manifest.checkpoint
    if log:
        click.echo(
            f"The audit log ends as it was then (checkpoint of {log['size']} entries): a witness"
            " that cosigned a larger one will report it as cut, which it is."
        )


COMMANDS = [backup]
