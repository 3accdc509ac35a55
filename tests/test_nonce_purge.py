"""Spent and expired nonces of signed actions are purged, a bounded batch at a time."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from auth.actions import PURGE_BATCH, new_nonce, purge_nonces, use_nonce
from auth.signed_action import SignatureRefused
from mapserver.settings import Settings


def _nonce(conn: psycopg.Connection, name: str, expired: str, used: bool = False) -> None:
    conn.execute(
        "INSERT INTO action_nonce (nonce, account, issued_at, expires_at, used_at)"
        " VALUES (%s, 'alice', now() - interval '1 day', now() - %s::interval,"
        " CASE WHEN %s THEN now() - interval '1 day' END)",
        (name, expired, used),
    )


def _left(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT nonce FROM action_nonce").fetchall()}


def test_issuing_a_nonce_purges_old_spent_and_expired_ones(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM action_nonce")
    _nonce(conn, "spent-long-ago-0001", "1 hour", used=True)
    _nonce(conn, "unused-long-ago-001", "1 hour")
    _nonce(conn, "expired-just-now-01", "1 second")  # still answered "expired", not "unknown"
    _nonce(conn, "spent-but-valid-001", "-2 minutes", used=True)
    conn.execute("SET ROLE citygrid_app")  # what the web process runs as
    fresh, _ = new_nonce(conn, "alice")
    assert _left(conn) == {"expired-just-now-01", "spent-but-valid-001", fresh}
    with pytest.raises(SignatureRefused, match="expired"):
        use_nonce(conn, "alice", "expired-just-now-01")
    with pytest.raises(SignatureRefused, match="already used"):
        use_nonce(conn, "alice", "spent-but-valid-001")
    with pytest.raises(SignatureRefused, match="unknown"):  # purged: still never reusable
        use_nonce(conn, "alice", "spent-long-ago-0001")


def test_purge_is_bounded_per_call(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM action_nonce")
    conn.execute(
        "INSERT INTO action_nonce (nonce, account, expires_at)"
        " SELECT 'old-nonce-' || lpad(i::text, 8, '0'), 'alice', now() - interval '1 hour'"
        " FROM generate_series(1, %s) AS i",
        (PURGE_BATCH * 2 + 5,),
    )
    conn.execute("SET ROLE citygrid_app")
    new_nonce(conn, "alice")
    assert len(_left(conn)) == PURGE_BATCH + 5 + 1
    assert purge_nonces(conn) == PURGE_BATCH
    assert purge_nonces(conn, 10_000) == 5  # the rest; never more than 1000 at once
    assert len(_left(conn)) == 1


def test_app_role_still_cannot_delete_live_nonces(conn: psycopg.Connection) -> None:
    fresh, _ = new_nonce(conn, "alice")
    conn.execute("SET ROLE citygrid_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
        conn.execute("DELETE FROM action_nonce WHERE nonce = %s", (fresh,))
    conn.execute("SELECT action_nonce_purge(interval '-1 year', 1000)")  # no shortcut
    assert fresh in _left(conn)


def test_a_nonce_expires_by_the_databases_clock(settings: Settings) -> None:
    """Issued by the database's clock, a nonce was judged expired by the serving host's: a
    host running six minutes ahead (faketime) refused every signed act as "nonce expired"."""
    from .test_renewal import LIBFAKETIME

    assert LIBFAKETIME is not None, "needs Debian's faketime (deploy/setup.sh installs it)"
    script = (
        "import psycopg\n"
        "from auth.actions import new_nonce, use_nonce\n"
        f"with psycopg.connect({settings.database_url!r}) as conn:\n"
        "    nonce, _ = new_nonce(conn, 'alice')\n"
        "    use_nonce(conn, 'alice', nonce)\n"
        "    conn.rollback()\n"
        "print('spent')\n"
    )
    ahead = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": "+6m", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **ahead},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and run.stdout.strip() == "spent", run.stderr[-500:]
