"""The log of maintenance changes: one append-only row per signed change, whose id is the
version of the area it changed."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

AREAS = ("organisation", "class", "limit", "calendar")


def record(
    conn: psycopg.Connection,
    area: str,
    subject: str,
    change: dict[str, Any],
    account: str,
    signed_action: int,
) -> int:
    row = conn.execute(
        """INSERT INTO maintenance_change (area, subject, change, account, signed_action)
           VALUES (%s, %s, %s, %s, %s) RETURNING id""",
        (area, subject, Jsonb(change), account, signed_action),
    ).fetchone()
    assert row is not None
    return int(row[0])


MAX_LISTED = 200


def history(
    conn: psycopg.Connection,
    area: str | None = None,
    limit: int = MAX_LISTED,
    before: int | None = None,
) -> tuple[list[dict], int | None]:
    """The newest `limit` changes (of `area`, before version `before`), newest first, and
    the version to ask before for the next page back (None: there is none)."""
    rows = conn.execute(
        """SELECT id, area, subject, change, account, signed_action, created_at
           FROM maintenance_change
           WHERE (%s::text IS NULL OR area = %s) AND (%s::bigint IS NULL OR id < %s)
           ORDER BY id DESC LIMIT %s""",
        (area, area, before, before, limit + 1),
    ).fetchall()
    shown = [
        {
            "version": i,
            "area": a,
            "subject": s,
            "change": c,
            "account": who,
            "signed_action": sa,
            "created_at": at.isoformat(),
        }
        for i, a, s, c, who, sa, at in rows[:limit]
    ]
    return shown, (shown[-1]["version"] if len(rows) > limit else None)


def current(conn: psycopg.Connection, area: str) -> int:
    """The version of an area: the id of its newest change (0 before any)."""
    row = conn.execute(
        "SELECT coalesce(max(id), 0) FROM maintenance_change WHERE area = %s", (area,)
    ).fetchone()
    return int(row[0]) if row else 0
