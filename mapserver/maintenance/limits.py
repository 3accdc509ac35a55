"""Versions of the time limits, so that a case keeps the limits in force when it was filed.

The newest version is the live tables (case_stage_limit, case_stage_class_limit and the
classes' own handling limits). A change first writes the limits it supersedes into that
version's snapshot, then changes the live tables and opens the next version; a case pinned
to an older version reads its snapshot. `lookup` is the one rule for both (pure).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

_LOCK = 0x4C696D69  # "Limi": one change of the limits at a time


def current_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM limit_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def pinned(conn: psycopg.Connection, version: int) -> dict[str, Any] | None:
    """The limits of a superseded version; None while `version` is the one in force."""
    row = conn.execute(
        "SELECT snapshot FROM limit_version WHERE version = %s", (version,)
    ).fetchone()
    return row[0] if row else None


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """The live limits as plain data: stage defaults, per-class overrides, class limits."""
    stages = {
        s: [float(a), u]
        for s, a, u in conn.execute("SELECT stage, amount, unit FROM case_stage_limit")
    }
    overrides = {
        f"{k}/{a}/{b}/{s}": [float(n), u]
        for k, a, b, s, n, u in conn.execute(
            "SELECT kind, major, minor, stage, amount, unit FROM case_stage_class_limit"
        )
    }
    classes = {
        f"{k}/{a}/{b}": [float(n), u]
        for k, a, b, n, u in conn.execute(
            "SELECT 'event', major, minor, time_limit, time_unit FROM event_class"
            " UNION ALL SELECT 'component', major, minor, time_limit, time_unit"
            " FROM component_class"
        )
    }
    return {"stage": stages, "override": overrides, "class": classes}


def lookup(
    snap: dict[str, Any], kind: str, major: str, minor: str, stage: str
) -> tuple[float, str] | None:
    """(amount, unit) of a stage for a class: an override, the class's own limit for the
    handling stage, or the stage default (None: the class or stage is unknown)."""
    found = snap["override"].get(f"{kind}/{major}/{minor}/{stage}")
    if found is None and stage == "handle":
        found = snap["class"].get(f"{kind}/{major}/{minor}")
    if found is None:
        found = snap["stage"].get(stage)
    if found is None:
        return None
    return float(found[0]), str(found[1])


def supersede(conn: psycopg.Connection) -> int:
    """Before changing the live limits: keep what the version in force holds, and return
    the number the next version will have (call `open_version` once the change is made)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
    version = current_version(conn)
    conn.execute(
        "UPDATE limit_version SET snapshot = %s WHERE version = %s",
        (Jsonb(snapshot(conn)), version),
    )
    return version + 1


def open_version(conn: psycopg.Connection, version: int, change_id: int) -> None:
    conn.execute(
        "INSERT INTO limit_version (version, change_id) VALUES (%s, %s)", (version, change_id)
    )


def history(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT v.version, v.created_at, m.subject, m.change, m.account, m.signed_action
           FROM limit_version v LEFT JOIN maintenance_change m ON m.id = v.change_id
           ORDER BY v.version"""
    ).fetchall()
    return [
        {
            "version": v,
            "created_at": at.isoformat(),
            "subject": subject,
            "change": change,
            "account": account,
            "signed_action": action,
        }
        for v, at, subject, change, account, action in rows
    ]
