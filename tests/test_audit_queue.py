"""Spool, queue, then sequence: under load, SIGKILL the workers and the sequencer. Every
answered request is durable when its response leaves, in its worker's spool file or already
shipped to the queue; after a restart the spool files of the killed workers are shipped
exactly once, the sequencer integrates the rest, checkpoints the tail once the log is idle,
and the tree verifies. The serving role
can append to the queue and nothing else."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from audit import sequencer as audit_sequencer
from audit.keys import signer
from audit.record import Entry
from audit.writer import QUEUE_INSERT, queued_row
from mapserver import db
from mapserver.cli import main

from .conftest import demo_database, empty_database
from .load import Load, kill, kill_group, sequencer_leader, workers
from .output import Output
from .sequenced import sequenced, spooled
from .test_gateway import World
from .tls import Server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = demo_database("citygrid_queue", tmp_path_factory.mktemp("queue-var"))
    yield World(settings, tmp_path_factory.mktemp("queue-certs"))
    db.drop_database(settings)


def test_sigkill_of_workers_and_sequencer_loses_no_entry(world: World) -> None:
    url = world.settings.database_url
    srv = Server(world.env())
    try:
        srv.wait_ready()
        desc = world.get(srv.port, "/tiles/topo2000", "gw-alice").json()
        level = desc["levels"][-1]
        t = level["tiles"]
        path = f"/tiles/topo2000/{level['level']}/{t['x_min']}/{t['y_min']}.png"
        with Load(lambda n: world.get(srv.port, path, "gw-alice")) as load:
            load.answers_reach(30)
            first = workers(srv.proc.pid)
            leader = sequencer_leader(url)
            assert leader in first  # a serving worker sequences; nothing else was started
            kill(leader)  # the sequencer, mid-load
            load.answers_reach(len(load.answered) + 30)
            successor = sequencer_leader(url, other_than=leader)  # another worker took over
            others = [w for w in first if w not in (leader, successor)]
            for pid in [successor, *others]:
                kill(pid)  # the new sequencer and any other first worker
            load.answers_reach(len(load.answered) + 30)  # served on by gunicorn's new workers
            kill_group(srv.proc)  # then all at once: no worker leaves in order
    finally:
        srv.stop()
    answered = load.answered
    assert len(answered) >= 90
    with psycopg.connect(url) as conn:
        queued = {
            r
            for (r,) in conn.execute(
                "SELECT request_id FROM audit_queue WHERE request_id = ANY(%s)", (answered,)
            )
        }
    durable = queued | spooled(world.settings.data_dir / "audit-spool")
    assert set(answered) <= durable, f"{len(set(answered) - durable)} answered, not durable"

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


def _sequencer_service(world: World) -> tuple[subprocess.Popen[bytes], Output]:
    """`citygrid audit sequencer` (citygrid-sequencer.service) started, and its output."""
    output = Output()
    service = subprocess.Popen(
        [sys.executable, "-m", "mapserver.cli", "audit", "sequencer"],
        env={**os.environ, **world.env()},
        stdout=output.file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return service, output


def test_a_sequencer_service_leads_and_the_workers_take_over_when_it_stops(world: World) -> None:
    """`citygrid audit sequencer` (citygrid-sequencer.service) holds the install's lock: the
    serving workers follow while it integrates their entries; stopped, it runs a final round
    and a worker leads instead."""
    url = world.settings.database_url
    service, output = _sequencer_service(world)
    srv = Server(world.env())
    try:
        assert sequencer_leader(url) == service.pid, output.text()
        srv.wait_ready()
        answers = [world.get(srv.port, "/auth/whoami", "gw-alice") for _ in range(20)]
        ids = [a.headers["X-Request-Id"] for a in answers]
        sequenced(url)
        with psycopg.connect(url) as conn:
            logged = conn.execute(
                "SELECT count(*) FROM audit_entry WHERE request_id = ANY(%s)", (ids,)
            ).fetchone()
        assert logged == (20,)
        assert sequencer_leader(url) == service.pid  # no worker took the lock meanwhile
        os.killpg(service.pid, signal.SIGTERM)
        assert service.wait(30) == 0, output.text()
        assert "audit sequencer: leading" in output.text()
        assert "audit sequencer: stopped" in output.text()
        successor = sequencer_leader(url, other_than=service.pid)
        assert successor in workers(srv.proc.pid)
    finally:
        srv.stop()
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()


def test_a_leaving_worker_waits_for_the_leaders_round_not_its_lock(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that leaves while a sequencer service leads (every worker's exit, as
    deployed) returns once the leader has integrated what was queued, although the leader
    never lets its lock go: not at the end of its wait."""
    url = world.settings.database_url
    service, output = _sequencer_service(world)
    monkeypatch.setattr(audit_sequencer, "DRAIN_SECONDS", 600.0)
    try:
        assert sequencer_leader(url) == service.pid, output.text()
        marker = f"leaving-{os.getpid()}"
        with psycopg.connect(world.settings.serving_database_url, autocommit=True) as app:
            for i in range(5):
                row = queued_row(Entry(action=marker, request_id=str(i)), dt.datetime.now(dt.UTC))
                app.execute(QUEUE_INSERT, row)
        returned: list[object] = []
        leaving = threading.Thread(
            target=lambda: returned.append(
                audit_sequencer.drain(
                    world.settings.serving_database_url, signer(world.settings.pki_dir), 1000, 60
                )
            )
        )
        leaving.start()
        leaving.join(timeout=30)  # the leader polls every 0.25 s; the wait allows 600
        assert not leaving.is_alive() and returned == [None]
        with psycopg.connect(url) as conn:
            logged = conn.execute(
                "SELECT count(*) FROM audit_entry WHERE action = %s", (marker,)
            ).fetchone()
        assert logged == (5,)
        assert sequencer_leader(url) == service.pid
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(30)


def test_dropping_a_database_stops_its_sequencing_first(tmp_path: Path) -> None:
    """A process that sequenced a database stops doing so before it drops it: no candidate
    goes on knocking at a database that is gone, and none tries a final round at exit."""
    settings = empty_database("citygrid_forget", tmp_path)
    key = signer(settings.pki_dir)
    other = audit_sequencer.ensure_running(settings.serving_database_url, key, 1000, 10)
    candidate = audit_sequencer.ensure_running(settings.database_url, key, 1000, 10)
    assert candidate.alive() and other.alive()
    db.drop_database(settings)
    assert not candidate.alive() and not other.alive()
    assert settings.database_url not in audit_sequencer._running
    assert settings.serving_database_url not in audit_sequencer._running
