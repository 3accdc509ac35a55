"""Backups of an install, and their restore.

A backup is a directory of three files:
- `database.dump`: the database, `pg_dump`'s custom format, one consistent snapshot;
- `data.tar`: the files of the data directory that no row of the database can replace: the
  CA (its key encrypted under its passphrase), the audit log's checkpoint key, the token
  keys, the server certificates and the CRL, object-store credentials;
- `manifest.json`: the SHA-256 of both, the database's last migration, and the newest
  signed checkpoint of the audit log when the dump began (the dump holds at least that).

Left out of `data.tar`: the tile cache (rendered again from the database), sockets and locks
(`run/`), and the audit spool. An entry a serving process had flushed to its spool but not yet
shipped when the dump began (under a second of them while shipments flow) is not in the
backup, as nothing after the backup is.

A restore goes into an empty database and an empty data directory only, never over an
install. The database roles (`ROLES`) are cluster-wide, not in a dump: a restore makes those
missing, without passwords (set them as the deployment does). After a restore the audit log
ends where the dump's did: a witness that cosigned a larger checkpoint reports the restored
log as truncated, which is the truth about it.

The backup holds the CA key and the checkpoint key: keep it as those are kept. Its directory
and files are made readable by their owner only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from psycopg import conninfo, sql

from mapserver import db, migrate
from mapserver.errors import CityGridError, Conflict, InvalidInput
from mapserver.settings import Settings

FORMAT = 1
DUMP, DATA, MANIFEST = "database.dump", "data.tar", "manifest.json"
# The login roles the migrations make (each with CONNECT on its database): cluster-wide, so
# not in a dump. tests/test_backup.py checks this list against the migrations.
ROLES = ("citygrid_app", "citygrid_map", "citygrid_audit", "citygrid_component")
# Role memberships the migrations grant (0036): cluster-wide too.
MEMBERSHIPS = (("citygrid_map", "citygrid_component"),)
# Under the data directory, what a backup leaves out: made again, or never kept.
LEFT_OUT = ("tiles", "run", "audit-spool")
# What every install's data directory holds and a backup must: the CA's certificate and the
# audit log's checkpoint key (the CA's key is on the zone that signs; a renderer has none).
REQUIRED = ("data/pki/ca.crt", "data/pki/audit-ed25519.key")


def _quiet(stage: str) -> None:
    """No word of each stage (the command line shows them on a terminal)."""


class BackupFailed(CityGridError):
    status = 500
    code = "backup_failed"


class Manifest(NamedTuple):
    created_at: str
    database: str
    migration: str
    checkpoint: dict[str, Any] | None  # the newest signed checkpoint when the dump began
    files: dict[str, str]  # name → SHA-256

    def text(self) -> str:
        doc = {"format": FORMAT, **self._asdict()}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _run(command: list[str], url: str) -> None:
    """Run a PostgreSQL tool on the database at `url`: its connection string goes in
    `--dbname` whole (TLS files, options) but for the password, which goes in the
    environment, never on a command line."""
    tool = shutil.which(command[0])
    if tool is None:
        raise BackupFailed(f"{command[0]} is not installed (Debian: postgresql-client)")
    params = conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, **({"PGPASSWORD": str(password)} if password is not None else {})}
    target = conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
    done = subprocess.run(
        [tool, *command[1:], f"--dbname={target}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise BackupFailed(f"{command[0]} failed: {lines[-1] if lines else done.returncode}")


def _kept(data_dir: Path, spool_dir: Path) -> Any:
    """The tar filter for the data directory (archived as `data/`): what a backup keeps, as
    plain files and directories."""
    spool = spool_dir.resolve()

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(member.name).parts[1:]
        if parts and parts[0] in LEFT_OUT:
            return None
        if data_dir.joinpath(*parts).resolve() == spool:
            return None
        if not (member.isfile() or member.isdir()):
            return None  # sockets, links: nothing a restore needs
        return member

    return keep


def _holds_required(data: Path, what: str) -> None:
    with tarfile.open(data) as tar:
        missing = sorted(name.removeprefix("data/") for name in set(REQUIRED) - set(tar.getnames()))
    if missing:
        raise BackupFailed(f"{what} lacks {', '.join(missing)}: not an install's data directory")


def create(settings: Settings, out: Path, stage: Callable[[str], None] = _quiet) -> Manifest:
    """Back up the install `settings` names into the new directory `out`; on a failure,
    nothing of it is left there."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(f"{out} exists and is not an empty directory")
    if out.resolve().is_relative_to(settings.data_dir.resolve()):
        raise InvalidInput(f"{out} is inside the data directory it would back up")
    from audit import review

    with db.connect(settings) as conn:
        done = migrate.applied(conn)
        if not done:
            raise InvalidInput("the database has no CityGrid schema (citygrid db upgrade)")
        migration = f"{max(done):04d}_{done[max(done)]}"
        checkpoint = review.latest_checkpoint(conn)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    dump, data = out / DUMP, out / DATA
    try:
        stage("dumping the database (pg_dump)")
        _run(["pg_dump", "--format=custom", "--file", str(dump)], settings.database_url)
        stage("archiving the data directory's key files")
        source = settings.data_dir.resolve()  # a link to it is archived as the directory
        with tarfile.open(data, "w") as tar:
            tar.add(source, arcname="data", filter=_kept(source, settings.audit_spool_path))
        _holds_required(data, f"the data directory {settings.data_dir}")
    except BaseException:
        for path in (dump, data):
            path.unlink(missing_ok=True)
        raise
    for path in (dump, data):
        path.chmod(0o600)
    manifest = Manifest(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        database=str(conninfo.conninfo_to_dict(settings.database_url).get("dbname", "")),
        migration=migration,
        checkpoint=None if checkpoint is None else {k: checkpoint[k] for k in ("size", "root")},
        files={DUMP: _sha256(dump), DATA: _sha256(data)},
    )
    (out / MANIFEST).write_text(manifest.text(), "utf-8")
    (out / MANIFEST).chmod(0o600)
    return manifest


def verify(backup: Path) -> Manifest:
    """The backup's manifest, once every file it names hashes to what it says."""
    try:
        doc = json.loads((backup / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{backup} holds no {MANIFEST}: not a CityGrid backup") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{backup / MANIFEST} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InvalidInput(f"{backup / MANIFEST}: not a backup of format {FORMAT}")
    try:
        manifest = Manifest(**{k: doc[k] for k in Manifest._fields})
    except (KeyError, TypeError):
        raise InvalidInput(f"{backup / MANIFEST} lacks a field a backup has") from None
    if not isinstance(manifest.files, dict) or set(manifest.files) != {DUMP, DATA}:
        raise InvalidInput(f"{backup / MANIFEST} must name {DUMP} and {DATA}")
    for name, expected in manifest.files.items():
        path = backup / name
        if not path.is_file():
            raise InvalidInput(f"{path} is missing")
        if _sha256(path) != expected:
            raise InvalidInput(f"{path} is not the file the backup made (its SHA-256 differs)")
    return manifest


def _empty(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        " AND c.relkind IN ('r', 'p')"
    ).fetchone()
    return row is not None and row[0] == 0


def restore(settings: Settings, backup: Path, stage: Callable[[str], None] = _quiet) -> Manifest:
    """Restore `backup` into the empty database and data directory `settings` names."""
    stage("checking the backup's files against its manifest")
    manifest = verify(backup)
    _holds_required(backup / DATA, str(backup / DATA))
    if settings.data_dir.exists() and any(settings.data_dir.iterdir()):
        raise Conflict(f"the data directory {settings.data_dir} is not empty")
    db.ensure_database(settings)
    dbname = str(conninfo.conninfo_to_dict(settings.database_url)["dbname"])
    with db.connect(settings) as conn:
        if not _empty(conn):
            raise Conflict(f"the database {dbname} is not empty: a restore makes a new install")
    with psycopg.connect(db.admin_conninfo(settings), autocommit=True) as admin:
        for role in ROLES:
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            admin.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
        for granted, grantee in MEMBERSHIPS:
            admin.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(granted), sql.Identifier(grantee))
            )
    stage("restoring the database (pg_restore)")
    # One transaction: a restore that fails leaves the database empty, for another try.
    _run(
        ["pg_restore", "--exit-on-error", "--single-transaction", str(backup / DUMP)],
        settings.database_url,
    )
    stage("restoring the data directory")
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tarfile.open(backup / DATA) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not parts or parts[0] != "data":
                raise InvalidInput(f"{backup / DATA} holds {member.name!r}, outside data/")
            member.name = str(Path(*parts[1:])) if len(parts) > 1 else "."
        tar.extractall(settings.data_dir, filter="data")
    return manifest
