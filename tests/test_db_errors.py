"""Database errors that reach a person or a client name no server path and no password."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import psycopg
import pytest

from mapserver import db
from mapserver.errors import DatabaseUnavailable
from mapserver.settings import Settings


def test_unreachable_socket_names_no_path_or_password(tmp_path: Path) -> None:
    sockets = tmp_path / "no-such-socket-dir"
    url = f"postgresql://someone:hunter2-secret@/citygrid?host={sockets}&connect_timeout=2"
    settings = dataclasses.replace(Settings(), database_url=url)
    with pytest.raises(DatabaseUnavailable) as caught:
        db.connect(settings)
    text = caught.value.message
    assert str(tmp_path) not in text and "no-such-socket-dir" not in text, text
    assert "hunter2" not in text and ".s.PGSQL" not in text
    assert text.startswith("database ") and "unavailable" in text


def test_path_and_password_in_a_driver_message_are_hidden() -> None:
    cause = psycopg.OperationalError(
        'connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: '
        'could not open file "/home/ops/.pgpass" password=s3cret'
    )
    text = DatabaseUnavailable("127.0.0.1:5432/citygrid", cause).message
    assert "/run/" not in text and "/home/" not in text and "s3cret" not in text
    assert "127.0.0.1:5432/citygrid" in text


def test_a_database_gone_answers_within_the_pools_wait() -> None:
    """With its database gone, a request waited psycopg_pool's default 30 s for a connection
    before its 503; it waits db.POOL_WAIT_S (the pool is as large as a worker's threads, so
    only an unreachable database makes anyone wait)."""
    import time

    from psycopg_pool import PoolTimeout

    from . import pg_cluster
    from .conftest import BASE_URL

    try:
        with pg_cluster.throwaway_cluster(pg_cluster.binaries(BASE_URL)) as cluster:
            settings = dataclasses.replace(Settings(), app_database_url=cluster.url)
            pool = db.open_pool(settings, "gone")
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    except pg_cluster.Unavailable as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but no throwaway PostgreSQL cluster: {exc}")
        pytest.skip(f"no throwaway PostgreSQL cluster: {exc}")
    try:  # the cluster stopped (immediately, as on a crash) and removed
        waited = None
        for _ in range(3):  # the connection taken before may be handed out first, broken
            asked = time.monotonic()
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT 1")
            except PoolTimeout:  # before OperationalError, which it is a kind of
                waited = time.monotonic() - asked
                break
            except psycopg.OperationalError:
                continue
    finally:
        pool.close(timeout=1)
    assert waited is not None and waited < db.POOL_WAIT_S + 5, waited
