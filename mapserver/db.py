"""PostgreSQL access: one connection pool per process, and database creation for set-up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import conninfo, sql
from psycopg_pool import ConnectionPool

from audit import sequencer
from mapserver.errors import DatabaseUnavailable
from mapserver.settings import Settings


def connect(settings: Settings, **kwargs: object) -> psycopg.Connection:
    """A single connection, for CLI commands and migrations."""
    try:
        return psycopg.connect(settings.database_url, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(describe_url(settings.database_url), exc) from None


# Seconds a request waits for a pooled connection before 503. By default a pool is as large
# as a worker's threads, so a request waits that long only for a database that is down or not
# answering: psycopg_pool's default of 30 s left a person before a blank page that long.
POOL_WAIT_S = 5.0


def open_pool(settings: Settings, name: str = "citygrid") -> ConnectionPool:
    """A pool for the web app and worker threads; opened now so a bad URL fails at start."""
    pool = ConnectionPool(
        settings.serving_database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        name=name,
        open=False,
        timeout=POOL_WAIT_S,
    )
    try:
        pool.open(wait=True, timeout=10)
    except Exception as exc:  # psycopg_pool raises PoolTimeout with the cause logged
        pool.close()
        raise DatabaseUnavailable(describe_url(settings.serving_database_url), exc) from None
    return pool


def describe_url(url: str) -> str:
    """The URL's host, port and database, never its password."""
    params = conninfo.conninfo_to_dict(url)
    host = params.get("host", "localhost")
    return f"{host}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def admin_conninfo(settings: Settings) -> str:
    """The configured server, at its `postgres` database: where databases are made and dropped."""
    return conninfo.make_conninfo(settings.database_url, dbname="postgres")


def ensure_database(settings: Settings) -> bool:
    """Create the configured database if it is missing; True when it was created."""
    params = conninfo.conninfo_to_dict(settings.database_url)
    dbname = str(params.get("dbname") or "")
    if not dbname:
        raise DatabaseUnavailable(describe_url(settings.database_url), "no database name in URL")
    try:
        with psycopg.connect(admin_conninfo(settings), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if exists.fetchone():
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            return True
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(describe_url(settings.database_url), exc) from None


def drop_database(settings: Settings) -> None:
    """Drop the configured database (tests only use this on their own databases)."""
    dbname = str(conninfo.conninfo_to_dict(settings.database_url)["dbname"])
    sequencer.forget(dbname)  # this process's sequencing of it ends first
    with psycopg.connect(admin_conninfo(settings), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )


@contextmanager
def transaction(settings: Settings) -> Iterator[psycopg.Connection]:
    """One connection in one transaction: committed on success, rolled back on any error."""
    with connect(settings) as conn, conn.transaction():
        yield conn
