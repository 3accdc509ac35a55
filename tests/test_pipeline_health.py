"""GET /health and `citygrid config check` say when the work behind requests has stopped:
entries waiting for an audit sequencer, no witness cosigning, (the exchange's unsent
messages share the path)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import cosignature, sequencer
from mapserver import db, pipeline_health
from mapserver.cli import main

from .app_client import Install
from .conftest import empty_database
from .sequenced import sequenced, shipped


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    settings = empty_database("citygrid_pipeline", tmp_path_factory.mktemp("pipeline-var"))
    found = Install(settings, tmp_path_factory.mktemp("pipeline-certs"))
    found.account("ph-admin", ["admin"])
    yield found
    found.close()
    db.drop_database(settings)


def _report(install: Install, later: dt.timedelta, **overrides: str):  # type: ignore[no-untyped-def]
    settings = dataclasses.replace(install.settings, **overrides)
    with db.connect(settings) as conn:
        return pipeline_health.report(conn, settings, later)


def test_a_stopped_sequencer_is_an_error(install: Install, tmp_path: Path) -> None:
    admin = install.client("ph-admin")
    assert admin.get("/auth/whoami").status_code == 200
    sequenced(install.settings.database_url)
    figures, found = _report(install, dt.timedelta(0))
    assert figures["audit"]["waiting"] == 0 and not found, found
    shown = admin.get("/health").get_json()
    assert shown["audit"]["tree_size"] >= 1 and shown["exchange"]["unacknowledged"] == 0

    # The sequencer's lock held elsewhere: entries wait in the queue, durable, unsequenced.
    dbname = str(psycopg.conninfo.conninfo_to_dict(install.settings.database_url)["dbname"])
    sequencer.forget(dbname)  # this process's candidate stops and lets its lock go
    with psycopg.connect(install.settings.database_url, autocommit=True) as holder:
        lock = "SELECT pg_try_advisory_lock(%s)"
        deadline = time.monotonic() + 10
        while not holder.execute(lock, (sequencer.LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the sequencer's lock was never let go"
            time.sleep(0.05)
        assert admin.get("/auth/whoami").status_code == 200
        shipped(install.settings.database_url)
        figures, found = _report(install, dt.timedelta(minutes=2))
        assert (
            figures["audit"]["waiting"] >= 1 and figures["audit"]["oldest_waiting_seconds"] >= 120
        )
        assert [(f.level, f.what) for f in found][:1] == [("error", "audit")]
        assert "is the audit sequencer running" in found[0].message
        _, now = _report(install, dt.timedelta(0))
        assert not [f for f in now if f.level == "error"]  # a second's wait is no finding
        env = {"CITYGRID_DATABASE_URL": install.settings.database_url,
               "CITYGRID_DATA_DIR": str(install.settings.data_dir)}  # fmt: skip
        checked = CliRunner().invoke(main, ["config", "check"], env=env)
        assert "audit" not in checked.output  # not yet late
    sequenced(install.settings.database_url)  # the lock let go: the entries go in


def test_witnesses_that_stopped_cosigning_are_a_warning(install: Install) -> None:
    witness = cosignature.witness_of("ph-witness", Ed25519PrivateKey.generate()).vkey()
    sequenced(install.settings.database_url)
    with psycopg.connect(install.settings.database_url, autocommit=True) as conn:
        signed = conn.execute("SELECT count(*) FROM audit_checkpoint").fetchone()[0]
    assert signed >= 1
    figures, found = _report(install, dt.timedelta(minutes=1), audit_witnesses=witness)
    assert figures["witnesses"] == {"last_cosignature_age_seconds": None}
    assert not [f for f in found if f.what == "witnesses"]  # a young log: their first turn
    _, found = _report(install, dt.timedelta(hours=3), audit_witnesses=witness)
    late = [f for f in found if f.what == "witnesses"]
    assert late and late[0].level == "warning" and "none yet" in late[0].message
    _, found = _report(install, dt.timedelta(hours=3))
    assert not [f for f in found if f.what == "witnesses"]  # none configured: nothing to say


def test_a_host_clock_ahead_does_not_hide_a_stopped_sequencer(install: Install) -> None:
    """An entry's time is its serving host's clock; how long it has waited is judged by the
    database's (migration 0044), so a host a day ahead still shows its entries waiting."""
    from audit.keys import signer
    from audit.record import Entry
    from audit.writer import GroupCommitWriter

    url = install.settings.database_url
    sequenced(url)
    dbname = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    sequencer.forget(dbname)
    with psycopg.connect(url, autocommit=True) as holder:
        deadline = time.monotonic() + 10
        while not holder.execute(
            "SELECT pg_try_advisory_lock(%s)", (sequencer.LOCK_KEY,)
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the sequencer's lock was never let go"
            time.sleep(0.05)
        writer = GroupCommitWriter(url, signer(install.settings.pki_dir), 1000, 3600, 1)
        try:
            ahead = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
            writer.write(Entry(action="ph.ahead", account="ph-host-ahead", at=ahead))
            figures, found = _report(install, dt.timedelta(minutes=2))
            assert figures["audit"]["oldest_waiting_seconds"] >= 120, figures
            assert [(f.level, f.what) for f in found][:1] == [("error", "audit")], found
        finally:
            writer.close()  # and this process's sequencer candidate with it
        assert install.client("ph-admin").get("/auth/whoami").status_code == 200  # a new one
    sequenced(url)  # the lock let go: the entry goes in


def test_an_install_not_backed_up_for_two_days_is_a_warning(
    install: Install, tmp_path: Path
) -> None:
    """A nightly timer that stopped says nothing until a restore is needed: the newest
    `backup.create` in the log older than two days is a warning, and so is none at all in a
    log older than that; a young install without one is not."""
    figures, found = _report(install, dt.timedelta(hours=1))
    assert figures["backup"] == {"last_age_seconds": None}
    assert not [f for f in found if f.what == "backup"]  # a young install
    _, found = _report(install, dt.timedelta(days=3))
    late = [f for f in found if f.what == "backup"]
    assert late and late[0].level == "warning" and "no backup of this install" in late[0].message

    env = {"CITYGRID_DATABASE_URL": install.settings.database_url,
           "CITYGRID_DATA_DIR": str(install.settings.data_dir)}  # fmt: skip
    made = CliRunner().invoke(main, ["backup", "create", str(tmp_path / "nightly")], env=env)
    assert made.exit_code == 0, made.output
    figures, found = _report(install, dt.timedelta(days=1))
    assert figures["backup"]["last_age_seconds"] >= 86_400
    assert not [f for f in found if f.what == "backup"]
    _, found = _report(install, dt.timedelta(days=3))
    late = [f for f in found if f.what == "backup"]
    assert late and "the newest backup is" in late[0].message, found
    shown = install.client("ph-admin").get("/health").get_json()
    assert shown["backup"]["last_age_seconds"] is not None
