"""Pruning the audit queue (migration 0033): rows already in the tree under a signed
checkpoint go, everything else stays; nobody can delete a row that is not yet covered, the
serving role only through audit_queue_prune; the leading sequencer prunes on its own, and
the log still verifies afterwards."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.keys import signer
from audit.record import Entry, checkpoint_now
from audit.sequencer import (
    KEEP_SECONDS,
    PRUNE_MOST,
    PRUNE_SECONDS,
    ensure_running,
    integrate,
    prune,
)
from audit.verify import verify
from audit.writer import QUEUE_INSERT, QUEUE_INSERT_JSON, GroupCommitWriter, json_rows, queued_row
from mapserver import db
from mapserver.settings import Settings

from .conftest import audit_log_fixtures, empty_database

log, key = audit_log_fixtures("citygrid_prune")


def _queue(log: Settings, tag: str, n: int) -> list[int]:
    """Entries queued as the serving role's writer queues them (no sequencer started)."""
    now = dt.datetime.now(dt.UTC)
    with psycopg.connect(log.serving_database_url, autocommit=True) as app:
        return [
            int(
                app.execute(
                    QUEUE_INSERT, queued_row(Entry(action="t", request_id=f"{tag}-{i}"), now)
                ).fetchone()[0]
            )  # type: ignore[index]
            for i in range(n)
        ]


def _write(log: Settings, key: Ed25519PrivateKey, tag: str, n: int) -> list[int]:
    writer = GroupCommitWriter(log.serving_database_url, key, 1000, 3600, connections=1)
    return [writer.write(Entry(action="tiles.read", request_id=f"{tag}-{i}")) for i in range(n)]


def _queued(conn: psycopg.Connection, ids: list[int]) -> set[int]:
    return {
        int(i) for (i,) in conn.execute("SELECT id FROM audit_queue WHERE id = ANY(%s)", (ids,))
    }


def _in_tree(conn: psycopg.Connection, ids: list[int]) -> set[int]:
    rows = conn.execute("SELECT queue_id FROM audit_entry WHERE queue_id = ANY(%s)", (ids,))
    return {int(i) for (i,) in rows}


def test_only_rows_in_the_tree_under_a_checkpoint_are_pruned(
    log: Settings, key: Ed25519PrivateKey
) -> None:
    with psycopg.connect(log.database_url, autocommit=True) as owner:
        covered = _queue(log, "covered", 5)
        integrate(owner, key, 1000, 3600)
        with owner.transaction():
            checkpoint_now(owner, key)
        uncovered = _queue(log, "uncovered", 2)
        assert not integrate(owner, key, 1000, 3600).checkpointed  # in the tree, no checkpoint
        pending = _queue(log, "pending", 1)  # queued, not yet in the tree

        # Neither the owner nor the serving role deletes a row the checkpoints do not cover.
        for row in (uncovered[0], pending[0]):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                owner.execute("DELETE FROM audit_queue WHERE id = %s", (row,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner.execute("TRUNCATE audit_queue")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            owner.execute("UPDATE audit_queue SET account = 'x' WHERE id = %s", (covered[0],))

        with psycopg.connect(log.serving_database_url, autocommit=True) as app:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("DELETE FROM audit_queue WHERE id = %s", (covered[0],))
            assert prune(app, keep=3600) == 0  # all of them are younger than an hour
            assert prune(app, keep=0) >= 5

        everything = covered + uncovered + pending
        assert _queued(owner, everything) == set(uncovered + pending)
        assert _in_tree(owner, everything) == set(covered + uncovered)

        # The next rounds go on as before: the pending entry joins the tree, once.
        integrate(owner, key, 1000, 3600, idle=True)
        assert _in_tree(owner, everything) == set(everything)
    with psycopg.connect(log.database_url) as conn:
        report = verify(conn, key.public_key())
    assert report.ok, report.problem


def test_the_leading_sequencer_prunes_the_queue(log: Settings, key: Ed25519PrivateKey) -> None:
    """This process's sequencer candidate (started by the writer) leads, and prunes."""
    ids = _write(log, key, "led", 4)
    sequencer = ensure_running(log.serving_database_url, key, 1000, 3600)
    sequencer.idle, sequencer.prune_every, sequencer.keep = 0.1, 0.2, 0.0
    try:
        deadline = time.monotonic() + 20
        with psycopg.connect(log.database_url, autocommit=True) as conn:
            while _queued(conn, ids):
                assert time.monotonic() < deadline, "the queue was never pruned"
                time.sleep(0.05)
            assert _in_tree(conn, ids) == set(ids)
            size, checkpointed = conn.execute(
                "SELECT size, checkpoint_size FROM audit_tree"
            ).fetchone()  # type: ignore[misc]
            assert size == checkpointed
    finally:
        sequencer.prune_every, sequencer.keep = PRUNE_SECONDS, KEEP_SECONDS


def test_a_backlog_is_pruned_chunk_after_chunk(log: Settings, key: Ed25519PrivateKey) -> None:
    """Five chunks' worth of prunable rows, a chunk per statement: once the first chunk has
    gone, a full chunk makes the leader prune again at its next round rather than after
    another period, so the rest goes well within one period."""
    period = 4.0
    ids = _write(log, key, "backlog", 50)
    sequencer = ensure_running(log.serving_database_url, key, 1000, 3600)
    sequencer.idle, sequencer.keep, sequencer.prune_most = 0.1, 0.0, 10
    sequencer.prune_every = period
    try:
        deadline = time.monotonic() + 30
        with psycopg.connect(log.database_url, autocommit=True) as conn:
            while len(_queued(conn, ids)) == len(ids):
                assert time.monotonic() < deadline, "the queue was never pruned"
                time.sleep(0.02)
            first = time.monotonic()
            while _queued(conn, ids):
                assert time.monotonic() < deadline, f"{len(_queued(conn, ids))} never pruned"
                time.sleep(0.02)
            rest = time.monotonic() - first
            assert _in_tree(conn, ids) == set(ids)
    finally:
        sequencer.prune_every, sequencer.keep = PRUNE_SECONDS, KEEP_SECONDS
        sequencer.prune_most = PRUNE_MOST
    # Four more chunks, a round (0.25 s) apart; a chunk a period would take 4 × 4 s.
    assert rest < period - 0.5, rest


HISTORY = 20_000  # entries queued, integrated and pruned before the prune measured


def test_a_prune_reads_what_it_prunes_not_the_log_before_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Migration 0038: a prune reaches the queue's oldest row without walking the entries of
    every row pruned before (it did: 800,000 of them, 330 ms, on the benchmark database). In
    one transaction, the entries it fetches are counted (pg_stat_xact_user_tables): a few
    per row pruned, however long the log behind them."""
    s = empty_database("citygrid_prune_reads", tmp_path_factory.mktemp("prune-reads-var"))
    try:
        key = signer(s.pki_dir)
        now = dt.datetime.now(dt.UTC)
        history = [queued_row(Entry(action="t", request_id=f"h-{i}"), now) for i in range(HISTORY)]
        with psycopg.connect(s.database_url, autocommit=True) as owner:
            owner.execute(QUEUE_INSERT_JSON, (json_rows(history),))
            integrate(owner, key, 1000, 3600)
            with owner.transaction():
                checkpoint_now(owner, key)
            assert prune(owner, keep=0, most=HISTORY) == HISTORY
            recent = _queue(s, "recent", 5)
            integrate(owner, key, 1000, 3600)
            with owner.transaction():
                checkpoint_now(owner, key)
            owner.execute("ANALYZE audit_entry")  # as autovacuum would have, by now
            owner.execute("ANALYZE audit_queue")

        def fetched(conn: psycopg.Connection) -> int:
            row = conn.execute(
                "SELECT idx_tup_fetch + seq_tup_read FROM pg_stat_xact_user_tables"
                " WHERE relname = 'audit_entry'"
            ).fetchone()
            return int(row[0]) if row else 0

        with psycopg.connect(s.database_url) as conn, conn.transaction():
            # The plans PostgreSQL chose on the benchmark's log of a million entries (merge
            # joins over the id indexes); on a small log it may choose others on its own.
            # The delete's check (a trigger) is held to them too.
            conn.execute("SET LOCAL enable_nestloop = off")
            conn.execute("SET LOCAL enable_hashjoin = off")
            conn.execute("SET LOCAL enable_seqscan = off")
            before = fetched(conn)
            assert prune(conn, keep=0, most=1000) == len(recent)
            assert fetched(conn) - before < 50  # HISTORY and more when it walked the history
            assert _queued(conn, recent) == set()
        with psycopg.connect(s.database_url) as conn:
            report = verify(conn, key.public_key())
        assert report.ok, report.problem
    finally:
        db.drop_database(s)
