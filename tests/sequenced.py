"""Waiting for the audit sequencer: a request's entry is durable in `audit_queue` when its
response leaves, and in the tree (`audit_entry`) once the sequencer's next round has run,
within a second. Tests that read `audit_entry` after a request wait for that first."""

from __future__ import annotations

import time

import psycopg

_PENDING = (
    "SELECT count(*) FROM audit_queue q WHERE q.id <= %s"
    " AND NOT EXISTS (SELECT 1 FROM audit_entry e WHERE e.queue_id = q.id)"
)


def sequenced(database_url: str, timeout: float = 30.0) -> None:
    """Until every entry queued so far is in the tree."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        top = conn.execute("SELECT coalesce(max(id), 0) FROM audit_queue").fetchone()
        mark = int(top[0]) if top else 0
        deadline = time.monotonic() + timeout
        while True:
            row = conn.execute(_PENDING, (mark,)).fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{row[0] if row else '?'} queued entries not sequenced")
            time.sleep(0.05)
