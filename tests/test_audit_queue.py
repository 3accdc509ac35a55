"""Queue, then sequence: under load, SIGKILL the workers and the sequencer. Every answered
request is in the queue when its response leaves; after a restart the sequencer integrates
the rest, checkpoints the tail once the log is idle, and the tree verifies. The serving role
can append to the queue and nothing else."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner

from audit.record import Entry
from audit.sequencer import LOCK_KEY
from audit.writer import QUEUE_INSERT, queued_row
from mapserver import db
from mapserver.cli import main

from .conftest import demo_database
from .sequenced import sequenced
from .test_gateway import World
from .tls import REFUSED, Server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = demo_database("citygrid_queue", tmp_path_factory.mktemp("queue-var"))
    yield World(settings, tmp_path_factory.mktemp("queue-certs"))
    db.drop_database(settings)


def _leader(url: str, timeout: float = 30) -> int:
    """The pid of the process whose sequencer holds the install's lock (waits for one)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND (l.classid::bigint << 32 | l.objid::bigint) = %s",
                (LOCK_KEY,),
            ).fetchone()
            if row and str(row[0]).startswith("citygrid-sequencer-"):
                return int(str(row[0]).rsplit("-", 1)[1])
            time.sleep(0.05)
    raise AssertionError("no sequencer leads")


def test_sigkill_of_workers_and_sequencer_loses_no_entry(world: World) -> None:
    url = world.settings.database_url
    srv = Server(world.env())
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    try:
        srv.wait_ready()
        desc = world.get(srv.port, "/tiles/topo2000", "gw-alice").json()
        level = desc["levels"][-1]
        t = level["tiles"]
        path = f"/tiles/topo2000/{level['level']}/{t['x_min']}/{t['y_min']}.png"

        def hammer() -> None:
            while not stop.is_set():
                try:
                    reply = world.get(srv.port, path, "gw-alice")
                except REFUSED:
                    continue  # a killed worker's connections: no answer, nothing promised
                if reply.status == 200:
                    with lock:
                        answered.append(reply.headers["X-Request-Id"])

        def answers_reach(n: int) -> None:
            deadline = time.monotonic() + 60
            while len(answered) < n:
                assert time.monotonic() < deadline, f"only {len(answered)} answers"
                time.sleep(0.05)

        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for th in threads:
            th.start()
        answers_reach(30)
        workers = subprocess.run(
            ["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        leader = _leader(url)
        assert str(leader) in workers  # a serving worker sequences; nothing else was started
        os.kill(leader, signal.SIGKILL)  # the sequencer, mid-load
        answers_reach(len(answered) + 30)
        successor = _leader(url)  # another worker took the lock over
        assert successor != leader
        others = [int(w) for w in workers if int(w) not in (leader, successor)]
        for pid in [successor, *others]:
            os.kill(pid, signal.SIGKILL)  # the new sequencer and any other first worker
        answers_reach(len(answered) + 30)  # served on by the workers gunicorn started anew
        os.killpg(srv.proc.pid, signal.SIGKILL)  # then all at once: no worker leaves in order
        srv.proc.wait()
        stop.set()
        for th in threads:
            th.join()
    finally:
        stop.set()
        srv.stop()
    assert len(answered) >= 90
    with psycopg.connect(url) as conn:
        queued = {
            r
            for (r,) in conn.execute(
                "SELECT request_id FROM audit_queue WHERE request_id = ANY(%s)", (answered,)
            )
        }
    assert set(answered) <= queued, f"{len(set(answered) - queued)} answered, not queued"

    # Restarted: the sequencer integrates what the killed ones left, then checkpoints the tail.
    again = Server(world.env())
    try:
        again.wait_ready()
        sequenced(url)
        deadline = time.monotonic() + 30
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                size, checkpointed = conn.execute(
                    "SELECT size, checkpoint_size FROM audit_tree"
                ).fetchone()  # type: ignore[misc]
                if size == checkpointed or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert size == checkpointed, "the idle tail was never checkpointed"
            logged = conn.execute(
                "SELECT request_id, count(*) FROM audit_entry WHERE request_id = ANY(%s)"
                " GROUP BY request_id",
                (answered,),
            ).fetchall()
            queue_rows, entry_rows = conn.execute(
                "SELECT (SELECT count(*) FROM audit_queue),"
                " (SELECT count(*) FROM audit_entry WHERE queue_id IS NOT NULL)"
            ).fetchone()  # type: ignore[misc]
    finally:
        again.stop()
    assert {r for r, _ in logged} == set(answered) and all(n == 1 for _, n in logged)
    assert queue_rows == entry_rows  # each queued entry in the tree exactly once
    result = CliRunner().invoke(
        main,
        ["audit", "verify"],
        env={"CITYGRID_DATABASE_URL": url, "CITYGRID_DATA_DIR": str(world.settings.data_dir)},
    )
    assert result.exit_code == 0, result.output


def test_the_serving_role_only_appends_to_the_queue(world: World) -> None:
    with psycopg.connect(world.settings.serving_database_url, autocommit=True) as app:
        row = queued_row(Entry(action="test.append"), dt.datetime.now(dt.UTC))
        app.execute(QUEUE_INSERT, row)
        for statement in (
            "UPDATE audit_queue SET account = 'someone-else'",
            "DELETE FROM audit_queue",
            "TRUNCATE audit_queue",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    with psycopg.connect(world.settings.database_url, autocommit=True) as owner:
        for statement in ("UPDATE audit_queue SET account = 'x'", "DELETE FROM audit_queue"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                owner.execute(statement)
