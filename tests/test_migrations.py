"""Schema migrations against a real PostgreSQL: apply, re-apply as a no-op, fail atomically."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import db, migrate
from mapserver.cli import main
from mapserver.errors import CityGridError, MigrationFailed
from mapserver.settings import Settings

from .conftest import database_url


@pytest.fixture
def fresh(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    url = database_url("citygrid_mig")
    s = dataclasses.replace(Settings(), database_url=url, data_dir=tmp_path)
    db.drop_database(s)
    yield s
    db.drop_database(s)


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows}


def test_upgrade_on_empty_database_then_noop(fresh: Settings) -> None:
    assert db.ensure_database(fresh) is True
    with db.connect(fresh) as conn:
        first = migrate.upgrade(conn, fresh)
        assert [m.version for m in first] == [m.version for m in migrate.available()]
        tables = _tables(conn)
        schema_before = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchone()
        assert migrate.upgrade(conn, fresh) == []
        schema_after = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchone()
        assert _tables(conn) == tables
        assert schema_before == schema_after
        classes = conn.execute("SELECT count(*) FROM component_class").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM event_class").fetchone()[0]
    assert {"district", "street", "community", "unit_grid", "component", "address"} <= tables
    assert {"building", "road_line", "road_surface", "water", "green", "railway"} <= tables
    assert {"wall", "annotation", "organisation", "account", "account_role"} <= tables
    assert classes >= 40 and events >= 30
    assert db.ensure_database(fresh) is False


def test_geometries_in_install_crs_with_spatial_indexes(settings: Settings, conn) -> None:  # type: ignore[no-untyped-def]
    srids = conn.execute(
        "SELECT DISTINCT srid FROM geometry_columns WHERE f_table_schema = 'public'"
    ).fetchall()
    assert srids == [(settings.srid,)]
    unindexed = conn.execute(
        """SELECT g.f_table_name FROM geometry_columns g
           WHERE g.f_table_schema = 'public' AND NOT EXISTS (
             SELECT 1 FROM pg_indexes i WHERE i.tablename = g.f_table_name
               AND i.indexdef ILIKE '%USING gist%')"""
    ).fetchall()
    assert unindexed == []


def test_failed_migration_leaves_schema_as_it_was(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.ensure_database(fresh)
    with db.connect(fresh) as conn:
        migrate.upgrade(conn, fresh)
        before = _tables(conn)
        broken = migrate.Migration(
            9999,
            "broken",
            "CREATE TABLE half_done (id int); ALTER TABLE component ADD COLUMN x int; "
            "SELECT 1 / 0;",
        )
        shipped = migrate.available()
        monkeypatch.setattr(migrate, "available", lambda: [*shipped, broken])
        with pytest.raises(MigrationFailed, match="9999_broken failed and was rolled back"):
            migrate.upgrade(conn, fresh)
        assert _tables(conn) == before
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'component' AND column_name = 'x'"
        ).fetchone()[0]
        assert columns == 0
        assert 9999 not in migrate.applied(conn)


def test_two_databases_creating_one_role_at_once_both_migrate(fresh: Settings) -> None:
    """Roles are the cluster's: while another database's migration has created a role and not
    yet committed, this database's migration that creates it too waits, fails when the other
    commits, and is run again, finding the role made (mapserver.migrate)."""
    db.ensure_database(fresh)
    role = f"citygrid_race_{uuid.uuid4().hex[:8]}"
    creates = migrate.Migration(
        1,
        "role",
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN"
        f" CREATE ROLE {role}; END IF; END $$; CREATE TABLE made_by_role_migration (id int);",
    )
    other = psycopg.connect(fresh.database_url)  # a transaction left open: the other database's
    result: list[object] = []
    try:
        other.execute(f"CREATE ROLE {role}")
        conn = psycopg.connect(fresh.database_url, application_name=role)

        def migrating() -> None:
            try:
                result.append(migrate.upgrade(conn, fresh, [creates]))
            except Exception as exc:  # noqa: BLE001 - asserted below
                result.append(exc)

        thread = threading.Thread(target=migrating)
        thread.start()
        watch = psycopg.connect(fresh.database_url, autocommit=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until its CREATE ROLE waits for the other's
            row = watch.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE application_name = %s",
                (role,),
            ).fetchone()
            if row and row[0] == "Lock":
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the migration never waited for the other's role")
        watch.close()
        other.commit()
        thread.join(30)
        assert result == [[creates]], result
        assert 1 in migrate.applied(conn)
        assert _tables(conn) == {"schema_migrations", "made_by_role_migration"}
        conn.close()
    finally:
        other.rollback()
        other.autocommit = True
        other.execute(f"DROP ROLE IF EXISTS {role}")
        other.close()
        db.drop_database(fresh)


def test_changed_srid_is_refused(settings: Settings) -> None:
    other = dataclasses.replace(settings, srid=4547)
    with db.connect(other) as conn, pytest.raises(CityGridError, match="srid"):
        migrate.upgrade(conn, other)


def test_cli_upgrade_and_unreachable_database(fresh: Settings) -> None:
    runner = CliRunner()
    env = {"CITYGRID_DATABASE_URL": fresh.database_url}
    first = runner.invoke(main, ["db", "upgrade"], env=env)
    assert first.exit_code == 0, first.output
    assert "applied 0001_grid_city" in first.output
    again = runner.invoke(main, ["db", "upgrade"], env=env)
    assert "schema is up to date" in again.output
    down = runner.invoke(
        main,
        ["db", "upgrade"],
        env={"CITYGRID_DATABASE_URL": "postgresql://postgres:secret@127.0.0.1:1/none"},
    )
    assert down.exit_code == 1
    assert down.output.startswith("citygrid: error: database 127.0.0.1:1/none unavailable")
    assert "secret" not in down.output
    assert "Traceback" not in down.output


def test_cli_on_a_database_not_upgraded_says_so_in_one_line(fresh: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Commands met a database `citygrid db upgrade` never ran on (or an older one) with a
    traceback of a missing relation; `seed` and `tiles render` also with one of an unreachable
    server (the tile service connected outside mapserver.db). Now one line each, and the
    database stays as it was."""
    assert db.ensure_database(fresh) is True
    env = {"CITYGRID_DATABASE_URL": fresh.database_url, "CITYGRID_DATA_DIR": str(tmp_path)}
    out = str(tmp_path / "t.png")
    for args in (
        ["district", "show"],
        ["case", "list"],
        ["pki", "list"],
        ["audit", "tail"],
        ["maint", "org", "list"],
        ["geocode", "point", "1", "2"],
        ["demo", "--area-km2", "1"],
        ["seed", "--map", "topo500", "--levels", "7"],
        ["tiles", "render", "topo500", "8", "1", "1", "-o", out],
        ["audit", "sequencer"],  # retried the missing tables silently until stopped
    ):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1, (args, result.output)
        line = result.output
        assert line.startswith("citygrid: error: the database is not upgraded"), (args, line)
        assert line.endswith("does not exist): run `citygrid db upgrade`\n"), (args, line)
        assert line.count("\n") == 1, (args, line)
    with db.connect(fresh) as conn:
        assert _tables(conn) == set()
    # The CA signer started, then failed at every request; now it refuses to start, also on
    # a database one version behind.
    shipped = migrate.available()
    signer = CliRunner().invoke(main, ["signer"], env=env)
    assert signer.exit_code == 1 and signer.output == (
        "citygrid: error: the database is not upgraded to this version of CityGrid"
        f" ({len(shipped)} migrations pending, from 0001_{shipped[0].name}):"
        " run `citygrid db upgrade`\n"
    ), signer.output
    with db.connect(fresh) as conn:
        migrate.upgrade(conn, fresh, shipped[:-1])
    signer = CliRunner().invoke(main, ["signer"], env=env)
    last = shipped[-1]
    assert signer.exit_code == 1 and signer.output.endswith(
        f" (1 migration pending, from {last.version:04d}_{last.name}): run `citygrid db upgrade`\n"
    ), signer.output
    down = {**env, "CITYGRID_DATABASE_URL": "postgresql://postgres:secret@127.0.0.1:1/none"}
    for args in (
        ["seed", "--map", "topo500", "--levels", "7"],
        ["tiles", "render", "topo500", "8", "1", "1", "-o", out],
    ):
        result = CliRunner().invoke(main, args, env=down)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("citygrid: error: database 127.0.0.1:1/none unavailable")
        assert result.output.count("\n") == 1 and "secret" not in result.output, args


def test_orders_a_return_left_open_end_at_that_return(fresh: Settings) -> None:
    """Migration 0041 on a history written before it: an order that a return (or a feedback)
    left open ends at that step; an order given after it, an answered order and a reminder
    stay as they were."""
    before = [m for m in migrate.available() if m.version < 41]
    assert db.ensure_database(fresh) is True
    with db.connect(fresh) as conn:
        migrate.upgrade(conn, fresh, before)
        with conn.transaction():
            # History rows alone: their cases, accounts and bureaus are not needed here.
            conn.execute("SET LOCAL session_replication_role = replica")
            for event, case, transition in (
                (10, 1, "order"), (11, 1, "return"), (12, 1, "dispatch"), (13, 1, "order"),
                (20, 2, "order"), (21, 2, "answer"), (22, 2, "return"),
                (30, 3, "remind"), (31, 3, "return"), (40, 4, "order"), (41, 4, "forward"),
            ):  # fmt: skip
                conn.execute(
                    "INSERT INTO case_event (id, case_id, at, actor, transition, to_state,"
                    " version) VALUES (%s, %s, now() + %s * interval '1 minute', 'x', %s,"
                    " 'handling', %s)",
                    (event, case, event, transition, event),
                )
            for case, event, kind, answer in (
                (1, 10, "order", None), (1, 13, "order", None), (2, 20, "order", 21),
                (3, 30, "reminder", None), (4, 40, "order", None),
            ):  # fmt: skip
                conn.execute(
                    "INSERT INTO case_order (case_id, event_id, kind, street_code, bureau, actor,"
                    " at, message, due_at, answer_event, answered_at, answer) VALUES (%s, %s,"
                    " %s, '110108001', 'b', 'x', now(), 'm', CASE WHEN %s = 'order' THEN now()"
                    " END, %s, CASE WHEN %s::bigint IS NOT NULL THEN now() END,"
                    " CASE WHEN %s::bigint IS NOT NULL THEN 'a' END)",
                    (case, event, kind, kind, answer, answer, answer),
                )
    with db.connect(fresh) as conn:
        assert 41 in [m.version for m in migrate.upgrade(conn, fresh)]
        rows = conn.execute(
            "SELECT o.event_id, o.ended_event, o.ended_at = e.at, o.answer_event"
            " FROM case_order o LEFT JOIN case_event e ON e.id = o.ended_event ORDER BY o.event_id"
        ).fetchall()
    assert rows == [(10, 11, True, None), (13, None, None, None), (20, None, None, 21),
                    (30, None, None, None), (40, 41, True, None)]  # fmt: skip
