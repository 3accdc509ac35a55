"""Versioned schema migrations: numbered SQL files applied once each, in order.

Each migration runs in its own transaction together with its bookkeeping row, so a failed
migration leaves the schema exactly as it was. An advisory lock keeps two processes from
migrating the same database at once.

That lock is the database's own: two databases of one cluster (a gateway's and a renderer's
on one machine, the tests' processes) migrate side by side. Roles and their memberships are
the cluster's, not a database's, so two first migrations can both find a role missing and
both create it; the second then fails when the first commits (a duplicate key in
`pg_authid`, or "tuple concurrently updated"). Such a migration is rolled back whole and run
again (RACE_RETRIES times at most): the second time it finds the role made.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import psycopg

from mapserver.errors import CityGridError, MigrationFailed, NotUpgraded
from mapserver.settings import Settings

_LOCK_KEY = 0x43697479  # "City": one advisory lock for migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql\Z")
RACE_RETRIES = 5  # runs again of a migration that met another database's on the cluster


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with this version of CityGrid, oldest first."""
    found = []
    for entry in resources.files("mapserver.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def render(migration: Migration, settings: Settings) -> str:
    return migration.sql.replace("{{SRID}}", str(int(settings.srid)))


def applied(conn: psycopg.Connection) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    return {version: name for version, name in rows}


def upgrade(
    conn: psycopg.Connection, settings: Settings, migrations: Iterable[Migration] | None = None
) -> list[Migration]:
    """Apply every pending migration (by default those shipped, `available()`); returns those
    applied (empty when up to date)."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        _check_srid(conn, settings)
        done = applied(conn)
        newly = []
        for migration in available() if migrations is None else migrations:
            if migration.version in done:
                continue
            for attempt in range(RACE_RETRIES + 1):
                try:
                    _apply(conn, migration, settings)
                    break
                except psycopg.Error as exc:
                    if attempt < RACE_RETRIES and cluster_race(exc):
                        time.sleep(0.05 * (attempt + 1))  # the other's commit has happened
                        continue
                    detail = (exc.diag.message_primary or str(exc)).strip()
                    raise MigrationFailed(
                        f"migration {migration.version:04d}_{migration.name} failed and was"
                        f" rolled back: {detail}"
                    ) from None
            newly.append(migration)
        return newly
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _apply(conn: psycopg.Connection, migration: Migration, settings: Settings) -> None:
    """`migration` and its bookkeeping row, in one transaction."""
    with conn.transaction():
        sql = render(migration, settings)
        if "{{TILE_" in sql:  # the install's secret tile origin, drawn once
            from tiles.origin import render_migration

            sql = render_migration(sql, conn, settings.srid)
        conn.execute(sql.encode("utf-8"))
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
            (migration.version, migration.name),
        )


_CLUSTER_CATALOGS = ("pg_authid", "pg_auth_members")


def cluster_race(exc: psycopg.Error) -> bool:
    """Whether `exc` is a migration meeting another database's on the cluster's roles (module
    docstring): worth running again, not a fault of the migration."""
    diag = exc.diag
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return (diag.table_name or "") in _CLUSTER_CATALOGS or any(
            name in (diag.constraint_name or "") for name in _CLUSTER_CATALOGS
        )
    if isinstance(exc, psycopg.errors.DuplicateObject):
        return "role" in (diag.message_primary or "")
    return "tuple concurrently updated" in (diag.message_primary or "")


def _check_srid(conn: psycopg.Connection, settings: Settings) -> None:
    """The CRS is fixed when the schema is created; a later change of setting is an error."""
    if not conn.execute("SELECT to_regclass('install_info') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return
    row = conn.execute("SELECT value FROM install_info WHERE key = 'srid'").fetchone()
    if row and int(row[0]) != settings.srid:
        raise CityGridError(
            f"srid: this database stores EPSG:{row[0]}, settings say EPSG:{settings.srid}"
        )


def pending(conn: psycopg.Connection) -> list[Migration]:
    done = applied(conn)
    return [m for m in available() if m.version not in done]


def require_current(conn: psycopg.Connection) -> None:
    """Refuse to start a service on a database `citygrid db upgrade` has not brought to this
    version: it would fail at its first request instead (errors.NotUpgraded)."""
    waiting = pending(conn)
    if waiting:
        first = waiting[0]
        raise NotUpgraded(
            f"{len(waiting)} migration{'s' if len(waiting) > 1 else ''} pending,"
            f" from {first.version:04d}_{first.name}"
        )
