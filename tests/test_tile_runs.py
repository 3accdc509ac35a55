"""Runs of tiles (tiles.tile_runs): the renderer's accepted tile answers, one entry per run of
one presenter and grant, handed over by a thread of their own or by the answer that fills it."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import threading
import time
from typing import Any

from audit import entry as audit_entry
from audit import review
from audit.record import Entry, append, prepare
from audit.review import Filters
from mapserver import db
from mapserver.settings import Settings
from tiles import tile_runs
from tiles.grant import Grant
from tiles.renderer_audit import Answered, Peer
from tiles.tile_runs import Runs

from .conftest import audit_log_fixtures
from .python_process import REPO, run_python

GATEWAY = Peer("gateway", "1f", "ab" * 32)
ALL = Grant("zone-operator", ("topo500",), 19, None)
STREET = Grant("street-viewer", ("topo500",), 19, frozenset({"s2", "s1"}))

log, key = audit_log_fixtures("citygrid_tile_runs")


def _answer(grant: Grant, x: int, status: int = 200, size: int = 1234) -> Answered:
    return Answered(
        peer=GATEWAY, grant=grant, authorization="", endpoint="tile", method="GET",
        path=f"/tile/topo500/19/{x}/52.png", client_addr="10.0.0.5", request_id=f"r-{x}",
        status=status, size=size, reason="", started=time.monotonic(), channel="tiles",
    )  # fmt: skip


class Handed:
    """What the runs hand over, and a way to wait for it."""

    def __init__(self) -> None:
        self.entries: list[tuple[Entry, int]] = []
        self._state = threading.Condition()

    def __call__(self, e: Entry, answers: int) -> None:
        with self._state:
            self.entries.append((e, answers))
            self._state.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[Entry, int]]:
        with self._state:
            assert self._state.wait_for(lambda: len(self.entries) >= n, timeout), self.entries
            return list(self.entries)


def test_the_answers_of_one_grant_are_one_entry_handed_over_when_due() -> None:
    handed = Handed()
    runs = Runs(handed, seconds=0.3)
    for x in (7, 8, 9):
        runs.add(_answer(ALL, x, size=100 + x))
    runs.add(_answer(STREET, 7, status=304, size=0))
    assert handed.entries == []  # not before the run is due
    assert runs.pending()[0] == 4
    found = {e.detail["grant_account"]: (e, n) for e, n in handed.wait_for(2)}
    assert runs.pending() == (0, 0.0)

    run, n = found["zone-operator"]
    assert n == 3 and run.action == "renderer.tiles" and run.outcome == "ok"
    assert (run.account, run.role, run.cert_serial, run.cert_sha256) == (
        "gateway", "service", "1f", "ab" * 32,
    )  # fmt: skip
    assert run.client_addr == "10.0.0.5" and run.method == "GET"
    assert run.resource == "/tile/topo500/19/" and run.request_id == "r-7"
    assert run.bytes == 107 + 108 + 109 and run.status == 200
    assert run.detail["products"] == ["topo500"] and run.detail["level"] == 19
    assert run.detail["streets"] is None and run.detail["channel"] == "tiles"
    tiles = tile_runs.answers(run.detail)
    assert [t["path"] for t in tiles] == [f"/tile/topo500/19/{x}/52.png" for x in (7, 8, 9)]
    assert [t["request_id"] for t in tiles] == ["r-7", "r-8", "r-9"]
    assert [t["bytes"] for t in tiles] == [107, 108, 109]
    offsets = [t["after_us"] for t in tiles]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert all(isinstance(t["latency_us"], int) and t["latency_us"] >= 0 for t in tiles)
    assert run.latency_ms == max(t["latency_us"] for t in tiles) / 1000

    street, n = found["street-viewer"]
    assert n == 1 and street.detail["streets"] == ["s1", "s2"]
    assert [(t["status"], t["bytes"]) for t in tile_runs.answers(street.detail)] == [(304, 0)]


def test_a_full_run_is_handed_over_by_the_answer_that_fills_it() -> None:
    handed = Handed()
    runs = Runs(handed, seconds=60, most=3)
    for x in range(3):
        runs.add(_answer(ALL, x))
    assert [n for _, n in handed.entries] == [3]  # at once, on the adding thread
    runs.add(_answer(ALL, 3))
    assert runs.pending()[0] == 1
    runs.flush()  # at exit: whatever is open goes now
    assert [n for _, n in handed.entries] == [3, 1] and runs.pending() == (0, 0.0)


def test_a_full_run_is_stored_whole() -> None:
    """A hundred answers with long paths and ids stay within what an entry's detail keeps
    (audit.storable): nothing cut, and the leaf covers every row."""
    run = tile_runs.Run(_answer(ALL, 0), dt.datetime.now(dt.UTC), time.monotonic())
    long = "/tile/topo2000/20/1048575/1048575.png"
    for i in range(tile_runs.RUN_MOST):
        run.rows.append([i * 1000, f"{'f' * 16}{0x7FFFFF:x}-{i:x}", long, 200, 2**20, 99_999])
    values = prepare(tile_runs.entry_of(run), dt.datetime.now(dt.UTC))
    assert values["detail"]["tiles"] == run.rows  # type: ignore[index]
    other = [list(r) for r in run.rows]
    other[57][3] = 304
    changed = prepare(tile_runs.entry_of(tile_runs.Run(run.answered, run.at, 0.0, other)), run.at)
    assert audit_entry.leaf(values) != audit_entry.leaf(changed)


def test_a_review_by_resource_finds_the_runs_that_hold_it(log: Settings, key: Any) -> None:
    """A security officer looking for who was given a tile finds the renderer's runs that
    hold it, by its path or a prefix of it, as well as entries of its own."""
    assert review.RUN_ACTION == tile_runs.ACTION
    run = tile_runs.Run(_answer(ALL, 0), dt.datetime.now(dt.UTC), time.monotonic())
    for x in (7, 8):
        run.rows.append([x, f"r-{x}", f"/tile/topo500/19/{x}/52.png", 200, 10, 5])
    single = Entry(action="renderer.tile", resource="/tile/topo500/19/9/52.png", status=200)
    with db.transaction(log) as conn:
        append(conn, [tile_runs.entry_of(run), single], key)
    with db.connect(log) as conn:

        def found(resource: str) -> list[str]:
            return [e["action"] for e in review.entries(conn, Filters(resource=resource))]

        assert found("/tile/topo500/19/8/52.png") == ["renderer.tiles"]
        assert found("/tile/topo500/19/9/") == ["renderer.tile"]
        assert found("/tile/topo500/19/") == ["renderer.tile", "renderer.tiles"]  # newest first
        assert found("/tile/topo500/19/6/") == []
        assert found("/tile/topo2000/") == []


def test_a_leaving_renderer_worker_commits_and_integrates_its_runs(log: Settings) -> None:
    """gunicorn's worker_exit (deploy/gunicorn/renderer.conf.py) hands over the runs not yet
    due and commits them before the sequencer's last round: a graceful stop leaves the
    renderer's tree holding every answer, not its queue."""
    marker = f"stop-{os.getpid()}-{time.monotonic_ns()}"
    program = textwrap.dedent(
        f"""
        import os, runpy, time
        from pathlib import Path
        from audit.keys import signer
        from audit.writer import GroupCommitWriter
        from tiles import renderer_audit, tile_runs
        from tiles.grant import Grant
        from tiles.renderer_audit import Answered, Peer
        writer = GroupCommitWriter({log.serving_database_url!r},
                                   signer(Path({str(log.pki_dir)!r})), 1000, 3600)
        trail = renderer_audit.Trail(writer)
        trail.runs = tile_runs.Runs(trail._run_behind, seconds=3600)  # none due before exit
        grant = Grant("zone-operator", ("topo500",), 19, None)
        for x in range(3):
            trail.answered_behind(Answered(
                peer=Peer("gateway", "1f", "ab" * 32), grant=grant, authorization="",
                endpoint="tile", method="GET", path=f"/tile/topo500/19/{{x}}/52.png",
                client_addr="10.0.0.5", request_id=f"{marker}-{{x}}", status=200, size=10,
                reason="", started=time.monotonic(), channel="tiles"))
        conf = runpy.run_path({str(REPO / "deploy" / "gunicorn" / "renderer.conf.py")!r})
        conf["worker_exit"](None, None)
        os.write(1, b"exited\\n")
        os._exit(0)  # gunicorn's worker_exit, then no more (atexit handlers are best effort)
        """
    )
    run_python(
        program,
        b"exited\n",
        **{f"CITYGRID_TLS_RENDERER_{n}": "unused" for n in ("CERT", "KEY", "CA")},
    )
    with db.connect(log) as conn:
        rows = conn.execute(
            "SELECT detail FROM audit_entry WHERE action = %s AND request_id = %s",
            (tile_runs.ACTION, f"{marker}-0"),
        ).fetchall()
    assert len(rows) == 1
    assert [t["request_id"] for t in tile_runs.answers(rows[0][0])] == [
        f"{marker}-{x}" for x in range(3)
    ]
