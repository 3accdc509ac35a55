"""Messages to the peer, written in the transaction of the signed act that makes them.

Numbers run without gaps (the counter row stays locked until commit, so a rolled-back act
gives its number back), which lets the peer refuse a reordered or missing message. The act's
audit entry names the message (`exchange` in its detail), which is how the bundle proves
its content later (mapserver.exchange.bundle).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from mapserver.errors import InvalidInput
from mapserver.exchange import bundle
from mapserver.settings import Settings

PEER = {"district": "city", "city": "district"}
WITHDRAWN = "exchange.withdrawn"


def me(settings: Settings) -> str:
    """This install's name in the exchange: its side (one peer each)."""
    if settings.exchange_role not in PEER or not settings.exchange_peer_url:
        raise InvalidInput(
            "this install takes part in no exchange (exchange_role, exchange_peer_url)"
        )
    return settings.exchange_role


def peer(settings: Settings) -> str:
    return PEER[me(settings)]


def enqueue(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    kind: str,
    content: dict[str, Any],
    signed_action: int,
    case_number: str | None = None,
    in_reply_to: str | None = None,
) -> dict[str, Any]:
    """Queue a message; returns what the act's audit entry must say of it (`exchange`)."""
    to = peer(settings)
    row = conn.execute("UPDATE exchange_counter SET last = last + 1 RETURNING last").fetchone()
    assert row is not None, "migration 0028 made the counter row"
    seq = int(row[0])
    source_id = f"{me(settings)}-{settings.district_code}-{seq}"
    conn.execute(
        """INSERT INTO exchange_outbox (seq, source_id, kind, case_number, in_reply_to, content,
               signed_action) VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (seq, source_id, kind, case_number, in_reply_to, Jsonb(content), signed_action),
    )
    return bundle.note(source_id, seq, kind, to, content)


def withdraw(
    conn: psycopg.Connection,
    settings: Settings,
    *,
    seq: int,
    source_id: str,
    kind: str,
    content: dict[str, Any],
    reason: str,
    signed_action: int,
) -> dict[str, Any]:
    """Put a withdrawal in the place of unacknowledged message `seq` (the caller holds its
    row locked and checked it is neither acknowledged nor withdrawn): same number and source
    id, so the sequence stays without gaps. Returns what the withdrawing act's audit entry
    must say of it (`exchange`), as `enqueue` does. The withdrawn act and its entry stay."""
    to = peer(settings)
    new = {"withdrawn": kind, "reason": reason, "content_sha256": bundle.content_sha256(content)}
    conn.execute(
        "UPDATE exchange_outbox SET kind = %s, content = %s, signed_action = %s,"
        " withdrawn_at = now() WHERE seq = %s AND acked_at IS NULL AND withdrawn_at IS NULL",
        (WITHDRAWN, Jsonb(new), signed_action, seq),
    )
    # A withdrawn result no longer answers the forwarded case: it may be answered again.
    conn.execute(
        "UPDATE exchange_inbox SET answered_by = NULL WHERE answered_by = %s", (source_id,)
    )
    return bundle.note(source_id, seq, WITHDRAWN, to, new)


def too_late(ack: dict[str, Any] | None) -> bool:
    """A withdrawal's acknowledgement saying the peer had taken the withdrawn message in
    before the withdrawal came (its `replayed` answer names the original's kind)."""
    return bool(ack and ack.get("error") == "replayed" and ack.get("kind") not in (None, WITHDRAWN))


def forward_standing(conn: psycopg.Connection, number: str) -> str | None:
    """Why case `number`, forwarded to the peer, cannot be taken back here; None when it can:
    never forwarded, or its last forwarding withdrawn and the withdrawal taken in by the peer
    (until then the peer may hold the case, and both sides would handle it)."""
    row = conn.execute(
        "SELECT source_id, kind, acked_at, ack FROM exchange_outbox WHERE case_number = %s"
        " AND (kind = 'case.forward' OR (kind = %s AND content ->> 'withdrawn' = 'case.forward'))"
        " ORDER BY seq DESC LIMIT 1",
        (number, WITHDRAWN),
    ).fetchone()
    if row is None:
        return None
    source_id, kind, acked_at, ack = row
    city = "the city platform"
    if kind != WITHDRAWN:
        if acked_at is not None:
            return f"{city} took case {number} in ({source_id}): it answers it by the exchange"
        return f"case {number} is forwarded to {city} ({source_id}): withdraw that message first"
    if acked_at is None:
        return f"{city} has not yet acknowledged the withdrawal of {source_id}: try again later"
    if too_late(ack):
        return f"{city} took case {number} in ({source_id}) before its withdrawal came"
    return None


def pending(conn: psycopg.Connection, limit: int = 100) -> list[tuple[Any, ...]]:
    """Unacknowledged messages, oldest first: (seq, source_id, kind, content, signed_action)."""
    return conn.execute(
        "SELECT seq, source_id, kind, content, signed_action FROM exchange_outbox"
        " WHERE acked_at IS NULL ORDER BY seq LIMIT %s",
        (limit,),
    ).fetchall()


def case_actions(conn: psycopg.Connection, number: str | None, last: int) -> list[int]:
    """The signed actions of a forwarded case's history up to the forwarding act (`last`)."""
    if number is None:
        return [last]
    rows = conn.execute(
        "SELECT e.signed_action FROM case_event e JOIN city_case c ON c.id = e.case_id"
        " WHERE c.number = %s AND e.signed_action IS NOT NULL AND e.signed_action <= %s"
        " ORDER BY e.id",
        (number, last),
    ).fetchall()
    found = [int(r[0]) for r in rows]
    return found if found and found[-1] == last else [*found, last]
