"""Local overrides of the work calendar kept in the database (beside the settings' own):
a day declared a holiday or a working day, changed by signed actions and versioned. An
override applies to every deadline counted after it (a declared holiday is a fact about a
day, for all cases), unlike the limits, which a case keeps from its filing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from mapserver import days
from mapserver.cases.calendar import WorkCalendar
from mapserver.errors import InvalidInput
from mapserver.maintenance import changes

KINDS = ("holiday", "workday")


def listing(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return [
        {"day": d.isoformat(), "kind": k, "note": n}
        for d, k, n in conn.execute(
            "SELECT day, kind, note FROM calendar_override ORDER BY day"
        ).fetchall()
    ]


def version(conn: psycopg.Connection) -> int:
    return changes.current(conn, "calendar")


def apply(base: WorkCalendar, conn: psycopg.Connection) -> WorkCalendar:
    """`base` (from the settings) with the database's overrides, which win over it."""
    holidays, workdays = set(base.local_holidays), set(base.local_workdays)
    for day, kind in conn.execute("SELECT day, kind FROM calendar_override").fetchall():
        (holidays if kind == "holiday" else workdays).add(day)
        (workdays if kind == "holiday" else holidays).discard(day)
    return WorkCalendar(
        periods=base.periods,
        tz=base.tz,
        statutory=base.statutory,
        local_holidays=frozenset(holidays),
        local_workdays=frozenset(workdays),
    )


def set_day(
    conn: psycopg.Connection, day: str, params: Mapping[str, Any], account: str, action_id: int
) -> dict[str, Any]:
    """Declare `day` a holiday or a working day, or `kind: none` to drop the override
    (signed `calendar.set` on `calendar DAY`)."""
    try:
        when = days.day(day)
    except ValueError:
        raise InvalidInput("the day must be a date YYYY-MM-DD") from None
    unknown = set(params) - {"kind", "note"}
    if unknown:  # what is signed is kept: nothing rides along that is not stored
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r:.70}")
    kind, note = params.get("kind"), params.get("note", "")
    if kind not in (*KINDS, "none"):
        raise InvalidInput("kind must be holiday, workday or none")
    if not isinstance(note, str) or len(note) > 200:
        raise InvalidInput("note must be text of at most 200 characters")
    before = conn.execute(
        "SELECT kind, note FROM calendar_override WHERE day = %s", (when,)
    ).fetchone()
    if kind == "none":
        if before is None:
            raise InvalidInput(f"{day} has no override")
        conn.execute("DELETE FROM calendar_override WHERE day = %s", (when,))
    else:
        conn.execute(
            """INSERT INTO calendar_override (day, kind, note) VALUES (%s, %s, %s)
               ON CONFLICT (day) DO UPDATE SET kind = excluded.kind, note = excluded.note""",
            (when, kind, note),
        )
    change = {"day": day, "before": before[0] if before else None, "after": kind, "note": note}
    v = changes.record(conn, "calendar", day, change, account, action_id)
    return {**change, "version": v}


def for_settings(conn: psycopg.Connection, settings: Any) -> WorkCalendar:
    """The calendar the server counts on (settings and database overrides), for the CLI."""
    return apply(WorkCalendar.from_settings(settings), conn)
