"""Waiting for the audit pipeline: a request's entry is durable in its server's spool file when
its response leaves (or in `audit_queue`, with `audit_durability = "database"`), in
`audit_queue` once the spool's shipper has shipped it (within about 0.1 s), and in the tree
(`audit_entry`) once the sequencer's next round has run, within a second. Tests that read
`audit_queue` after a request wait for `shipped` first; those that read `audit_entry`, for
`sequenced`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

from audit import spool

_PENDING = (
    "SELECT count(*) FROM audit_queue q WHERE q.id <= %s"
    " AND NOT EXISTS (SELECT 1 FROM audit_entry e WHERE e.queue_id = q.id)"
)


def shipped(database_url: str, timeout: float = 30.0) -> None:
    """Until every line in this host's spool files now is shipped to the queue (or the
    file is gone: shipped, then deleted)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        marks = {path: size for path, (_, size) in spool.pending(conn).items()}
        deadline = time.monotonic() + timeout
        while marks:
            now = spool.pending(conn)
            marks = {p: size for p, size in marks.items() if p in now and now[p][0] < size}
            if not marks:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"audit spool files not shipped: {sorted(marks)}")
            time.sleep(0.02)


def sequenced(database_url: str, timeout: float = 30.0) -> None:
    """Until every entry spooled or queued so far is in the tree."""
    shipped(database_url, timeout)
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


def spooled(directory: Path) -> set[str]:
    """The request ids of the complete lines in the spool files of `directory`: entries that
    are durable on the host's disk and not yet shipped (or shipped, and not yet deleted)."""
    found = set()
    for path in directory.glob("*.spool"):
        for line in path.read_bytes().split(b"\n")[:-1]:
            found.add(json.loads(line)["e"]["request_id"])  # audit.writer.queue_line
    return found
