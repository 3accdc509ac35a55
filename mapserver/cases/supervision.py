"""Street supervision (街道监督): reminders and orders from a street office to the bureau
handling a case, the bureau's answers, and escalation of late answers to the command centre.

The steps themselves are transitions of the workflow table (`remind`, `order`, `answer`,
which leave the case in its state), signed and stored as case events by `store.act`; this
module keeps what the events alone do not say (whom it went to, when the answer is due).

Escalation is computed on read: an order is escalated once its due time has passed without
an answer, or was answered after it. Nothing has to run for that to be true at the right
moment, a stopped timer cannot miss one, and no unsigned row is written into a history made
of signed steps: the due time is fixed when the signed order is stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from mapserver.errors import Conflict, InvalidInput

STEPS = frozenset({"remind", "order", "answer"})
MAX_TEXT = 2000

# An order counts as escalated (SQL over case_order o): due, and not answered (nor ended by
# its case leaving the bureau) in time.
ESCALATED = "(o.kind = 'order' AND coalesce(o.answered_at, o.ended_at, now()) > o.due_at)"
# An order still waiting for the bureau's answer.
OPEN = "o.kind = 'order' AND o.answer_event IS NULL AND o.ended_event IS NULL"
# Cases with an order waiting for the answer of the bureau the case is with.
ORDER_WAITING = f"EXISTS (SELECT 1 FROM case_order o WHERE o.case_id = c.id AND {OPEN})"
# Cases with an escalated order still unanswered: waiting for the command centre.
OPEN_ESCALATION = (
    f"EXISTS (SELECT 1 FROM case_order o WHERE o.case_id = c.id AND {OPEN} AND o.due_at < now())"
)
# Transitions after which the bureau can answer no more (the case left it, or its handling
# was fed back to the centres): they end its open orders.
ENDS_ORDERS = frozenset({"recall", "return", "forward"})


def _message(params: dict[str, Any] | Any, name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"the field {name!r} is required")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{name} may be at most {MAX_TEXT} characters")
    return value.strip()


def record(
    conn: psycopg.Connection,
    *,
    name: str,
    case_id: int,
    event_id: int,
    params: Any,
    account: str,
    street: str,
    bureau: str | None,
    now: dt.datetime,
    due: dt.datetime | None,
) -> None:
    """Store what a supervision step adds to its event (in the caller's transaction)."""
    if name in ("remind", "order"):
        if bureau is None:
            raise Conflict("the case has no bureau to supervise yet")
        conn.execute(
            """INSERT INTO case_order (case_id, event_id, kind, street_code, bureau, actor, at,
                   message, due_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                case_id,
                event_id,
                "order" if name == "order" else "reminder",
                street,
                bureau,
                account,
                now,
                _message(params, "message"),
                due if name == "order" else None,
            ),
        )
    elif name == "answer":
        reply = _message(params, "reply")
        done = conn.execute(
            f"""UPDATE case_order o SET answer_event = %s, answered_at = %s, answer = %s
               WHERE o.case_id = %s AND {OPEN} AND o.bureau = %s""",
            (event_id, now, reply, case_id, bureau),
        ).rowcount
        if not done:
            raise Conflict("the case has no supervision order waiting for an answer")


def end_open(conn: psycopg.Connection, *, case_id: int, event_id: int, now: dt.datetime) -> None:
    """The bureau can answer no more (a transition of ENDS_ORDERS, history entry `event_id`):
    the case's open orders end, since another bureau must not answer them either."""
    conn.execute(
        f"UPDATE case_order o SET ended_event = %s, ended_at = %s WHERE o.case_id = %s AND {OPEN}",
        (event_id, now, case_id),
    )


def of_case(conn: psycopg.Connection, case_id: int, now: dt.datetime) -> list[dict[str, Any]]:
    """The reminders and orders of a case, oldest first, with each order's standing."""
    rows = conn.execute(
        f"""SELECT o.kind, o.actor, o.at, o.message, o.bureau, o.due_at, o.answered_at,
                   o.answer, e.version, a.version, {ESCALATED}, o.ended_at, x.transition
            FROM case_order o JOIN case_event e ON e.id = o.event_id
            LEFT JOIN case_event a ON a.id = o.answer_event
            LEFT JOIN case_event x ON x.id = o.ended_event
            WHERE o.case_id = %s ORDER BY o.id""",  # noqa: S608 - fixed SQL
        (case_id,),
    ).fetchall()
    out = []
    for row in rows:
        kind, actor, at, message, bureau, due, answered, answer, version, answer_v, late = row[:11]
        ended, ended_by = row[11:]
        standing = "sent"
        if kind == "order":
            if answered:
                standing = "answered_late" if late else "answered"
            elif ended:
                standing = "ended_late" if late else "ended"
            else:
                standing = "escalated" if late else "waiting"
        out.append(
            {
                "kind": kind,
                "actor": actor,
                "at": at.isoformat(),
                "message": message,
                "bureau": bureau,
                "due_at": due.isoformat() if due else None,
                "answered_at": answered.isoformat() if answered else None,
                "answer": answer,
                "ended_at": ended.isoformat() if ended else None,
                "ended_by": ended_by,  # the transition that took the case from the bureau
                "version": version,
                "answer_version": answer_v,
                "escalated": bool(late),
                "escalated_at": due.isoformat() if late else None,
                "standing": standing,
            }
        )
    return out
