"""Restoring a backup (`mapserver.backup`) into a new install: an empty database and an empty
data directory, never over an install.

A restore completes or leaves both as they were, so that it can be run again: the data
files are checked and extracted beside the data directory first, `pg_restore` runs in one
transaction (a failure rolls all of it back), and one rename then puts the files in place.
Should that rename fail (something wrote into the data directory meanwhile), what the
restore put in the database is taken out again: the database it made is dropped, or the
schemas of the empty one it found are made again as they were. A failure is one line (the
cluster unreachable or refusing too); should undoing it fail as well, the same line says what
is left to undo by hand.

The database roles (`ROLES`) and their memberships are cluster-wide, not in a dump: a restore
makes those missing (all of them on a new machine's cluster), without passwords (set them as
the deployment does). With the PostGIS extension the dump creates, that takes a superuser.

After a restore the audit log ends where the dump's did: a witness that cosigned a larger
checkpoint reports the restored log as truncated, which is the truth about it.
"""

from __future__ import annotations

import functools
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg import conninfo, sql

from mapserver import db
from mapserver.backup import DATA, DUMP, BackupFailed, Verified, holds_required, run_tool, verify
from mapserver.errors import CityGridError, Conflict, DatabaseUnavailable, InvalidInput
from mapserver.settings import Settings

# The login roles the migrations make (each with CONNECT on its database): cluster-wide, so
# not in a dump. tests/test_backup.py checks this list against the migrations.
ROLES = ("citygrid_app", "citygrid_map", "citygrid_audit", "citygrid_component")
# Role memberships the migrations grant (0036): cluster-wide too.
MEMBERSHIPS = (("citygrid_map", "citygrid_component"),)
_MEMBER = "SELECT 1 FROM pg_auth_members WHERE roleid = to_regrole(%s) AND member = to_regrole(%s)"
_SCHEMAS = "FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"


def _quiet(stage: str) -> None:
    """No word of each stage (the command line shows them on a terminal)."""


class Restored(NamedTuple):
    verified: Verified
    roles_made: list[str]  # missing from the cluster, made without passwords


class _Schema(NamedTuple):
    name: str
    owner: str
    grants: list[tuple[str, str]]  # (grantee, privilege); grantee "" is PUBLIC


def _empty(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
        " AND c.relkind IN ('r', 'p')"
    ).fetchone()
    return row is not None and row[0] == 0


def _schemas(conn: psycopg.Connection) -> list[_Schema]:
    rows = conn.execute(
        "SELECT nspname, pg_get_userbyid(nspowner), ARRAY(SELECT ARRAY["
        " CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type]"
        f" FROM aclexplode(nspacl) a) {_SCHEMAS}"
    ).fetchall()
    return [_Schema(name, owner, [(g, p) for g, p in grants]) for name, owner, grants in rows]


def _made_again(settings: Settings, schemas: list[_Schema]) -> None:
    """Take out of the database what a restore put in: its schemas dropped, and those it
    held before (`public`, empty) made again with their owners and grants."""
    with psycopg.connect(settings.database_url) as conn:
        for (name,) in conn.execute(f"SELECT nspname {_SCHEMAS}").fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        for schema in schemas:
            name = sql.Identifier(schema.name)
            owner = sql.Identifier(schema.owner)
            conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(name, owner))
            for grantee, privilege in schema.grants:
                conn.execute(
                    sql.SQL("GRANT {} ON SCHEMA {} TO {}").format(
                        sql.SQL({"USAGE": "USAGE", "CREATE": "CREATE"}[privilege]),
                        name,
                        sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                    )
                )


def _extracted(data: Path, target: Path) -> Path:
    """The backup's data directory extracted beside `target`, where one rename puts it in
    place (nothing is left of it should extraction fail)."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=parent))
    except PermissionError:
        raise InvalidInput(
            f"a restore extracts the files beside the data directory first: {parent} must be"
            " writable"
        ) from None
    try:
        if target.exists() and target.stat().st_dev != staging.stat().st_dev:
            raise InvalidInput(
                f"the data directory {target} is a mount point: restore into a directory in it"
            )
        with tarfile.open(data) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not parts or parts[0] != "data":
                    raise InvalidInput(f"{data} holds {member.name!r}, outside data/")
                member.name = str(Path(*parts[1:])) if len(parts) > 1 else "."
            tar.extractall(staging, filter="data")
    except tarfile.TarError as exc:  # a member outside data/, a link out of it, a cut file
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidInput(f"{data} cannot be extracted: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _said(exc: BaseException, url: str) -> str:
    """A failure in one line, as the command line says it (`url`: where a connection went)."""
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailable(db.describe_url(url), exc).message
    if isinstance(exc, CityGridError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


def _undo(
    failure: BaseException, settings: Settings, undo: Callable[[], None], left: str, url: str
) -> None:
    """Undo what the restore did before `failure` (connecting to `url`); should that fail too,
    the failure is still what is reported, with what is `left` to undo, in the same line."""
    try:
        undo()
    except Exception as exc:
        why = _said(exc, url)
        raise BackupFailed(
            f"{_said(failure, settings.database_url)}; and {left} ({why}): do it by hand"
            " before another try"
        ) from None


def _roles(settings: Settings, dbname: str) -> list[str]:
    """Make the install's roles and memberships this cluster lacks (a new machine's has none)
    and grant the roles their database; returns the roles made, which have no password yet."""
    made: list[str] = []
    url = db.admin_conninfo(settings)
    try:
        admin = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(db.describe_url(url), exc) from None
    with admin:
        try:
            for role in ROLES:
                if not admin.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone():
                    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                    made.append(role)
                admin.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                        sql.Identifier(dbname), sql.Identifier(role)
                    )
                )
            for granted, grantee in MEMBERSHIPS:
                if not admin.execute(_MEMBER, (granted, grantee)).fetchone():  # else: kept
                    admin.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.Identifier(granted), sql.Identifier(grantee)
                        )
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            user = admin.info.user
            raise BackupFailed(
                f"the role {user} may not make the install's roles on this cluster"
                f" ({exc.diag.message_primary}): a restore makes roles and the PostGIS"
                " extension, so run it as a superuser"
            ) from None
    return made


def restore(
    settings: Settings,
    backup: Path,
    stage: Callable[[str], None] = _quiet,
    log_key: Ed25519PublicKey | None = None,
) -> Restored:
    """Restore `backup` into the empty database and data directory `settings` names."""
    stage("checking the backup's files against its manifest")
    verified = verify(backup, log_key)
    holds_required(backup / DATA, str(backup / DATA))
    target = settings.data_dir.resolve()  # a link to it: the directory is restored
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise Conflict(f"the data directory {settings.data_dir} is not empty")
    dbname = str(conninfo.conninfo_to_dict(settings.database_url)["dbname"])
    created = db.ensure_database(settings)
    try:
        with db.connect(settings) as conn:
            if not _empty(conn):
                raise Conflict(f"the database {dbname} is not empty: a restore makes a new install")
            schemas = _schemas(conn)
        stage("extracting the data directory beside it")
        staging = _extracted(backup / DATA, target)
        try:
            made = _roles(settings, dbname)
            stage("restoring the database (pg_restore)")
            # One transaction: a restore that fails leaves the database empty, for another try.
            run_tool(
                ["pg_restore", "--exit-on-error", "--single-transaction", str(backup / DUMP)],
                settings.database_url,
            )
            stage("putting the data directory in place")
            try:
                os.rename(staging, target)
            except OSError as exc:
                failed = Conflict(
                    f"the data directory {settings.data_dir} could not be put in place"
                    f" ({exc.strerror})"
                )
                if not created:
                    left = f"what pg_restore put in the database {dbname} could not be taken out"
                    again = functools.partial(_made_again, settings, schemas)
                    _undo(failed, settings, again, left, settings.database_url)
                raise Conflict(
                    f"{failed.message}: nothing is restored; run the restore again"
                ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed
    except BaseException as exc:
        if created:
            left = f"the database {dbname} it made could not be dropped"
            drop = functools.partial(db.drop_database, settings)
            _undo(exc, settings, drop, left, db.admin_conninfo(settings))
        if isinstance(exc, psycopg.OperationalError):  # the cluster went away, or refused
            raise DatabaseUnavailable(db.describe_url(settings.database_url), exc) from None
        raise
    return Restored(verified, made)
