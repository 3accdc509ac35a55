"""Audit entries whose values a JSON round trip could change if it were careless, and their
stored values read back: for tests that every way of queueing an entry stores the same."""

from __future__ import annotations

import datetime as dt

import psycopg

from audit.record import Entry

COLUMNS = "at, account, role, client_addr, action, outcome, status, bytes, latency_ms, detail"


def varied(tag: str) -> list[Entry]:
    """Entries whose values a JSON round trip could change if it were careless: floats,
    times with and without microseconds, no status, escaped control characters, a lone
    surrogate, non-ASCII text and nested detail."""
    at = dt.datetime(2026, 11, 26, 8, 30, 0, tzinfo=dt.UTC)
    return [
        Entry(
            action="tiles.read",
            request_id=f"{tag}-{i}",
            account=["alice", "街道\x00", "eve\x1b[2J", "\ud800"][i % 4],
            client_addr="10.0.0.7" if i % 2 else "",
            status=[200, None, 304, 404][i % 4],
            outcome="refused" if i % 4 == 3 else "ok",
            bytes=[None, 0, 2**40, 123][i % 4],
            latency_ms=[0.1, 1e-7, 123456.789, None][i % 4],
            detail={"i": i, "tile": [8, 10, 12], "note": "a\tb \u00e9", "f": 1 / 3},
            at=None if i % 3 else at + dt.timedelta(microseconds=i * 7),
        )
        for i in range(12)
    ]


def stored(conn: psycopg.Connection, tag: str) -> list[tuple[object, ...]]:
    """The stored values of `varied(tag)`'s entries in log order, by entry; the time only
    where the entry had its own (the others take the time they were queued)."""
    rows = conn.execute(
        f"SELECT request_id, {COLUMNS} FROM audit_entry"  # noqa: S608 - fixed names
        " WHERE request_id LIKE %s ORDER BY leaf_index",
        (f"{tag}-%",),
    ).fetchall()
    out = []
    for request_id, at, *rest in rows:
        i = int(request_id.rsplit("-", 1)[1])
        out.append((i, at if i % 3 == 0 else None, *rest))
    return out
