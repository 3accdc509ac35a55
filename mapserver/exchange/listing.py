"""What was sent to the peer and received from it, newest first, for the exchange page
(every message) and a case's page (the messages about that case)."""

from __future__ import annotations

from typing import Any

import psycopg

from mapserver.exchange import outbox


def messages(
    conn: psycopg.Connection,
    number: str | None,
    limit: int,
    sent_before: int,
    received_before: int,
) -> dict[str, Any]:
    """`limit` of each list before the given sequence numbers, for case `number` or all;
    `older_sent` / `older_received`: the cursor of the next older page (None: none left)."""
    sent = conn.execute(
        """SELECT seq, source_id, kind, case_number, in_reply_to, content, created_at,
                  attempts, last_error, acked_at, withdrawn_at, ack FROM exchange_outbox
           WHERE (%s::text IS NULL OR case_number = %s) AND seq < %s
           ORDER BY seq DESC LIMIT %s""",
        (number, number, sent_before, limit + 1),
    ).fetchall()
    got = conn.execute(
        """SELECT seq, source_id, kind, case_number, in_reply_to, content, received_at,
                  signer, answered_by, bundle -> 'actions' -> -1 FROM exchange_inbox
           WHERE (%s::text IS NULL OR case_number = %s) AND seq < %s
           ORDER BY seq DESC LIMIT %s""",
        (number, number, received_before, limit + 1),
    ).fetchall()
    return {
        "older_sent": sent[limit - 1][0] if len(sent) > limit else None,
        "older_received": got[limit - 1][0] if len(got) > limit else None,
        "sent": [
            {
                "seq": r[0], "source_id": r[1], "kind": r[2], "case": r[3], "in_reply_to": r[4],
                "content": r[5], "created_at": r[6].isoformat(), "attempts": r[7],
                "last_error": r[8], "acked_at": r[9].isoformat() if r[9] else None,
                "withdrawn_at": r[10].isoformat() if r[10] else None,
                # The peer had taken the withdrawn message in before its withdrawal came.
                "too_late": bool(r[10]) and outbox.too_late(r[11]),
            }
            for r in sent[:limit]
        ],
        "received": [
            {
                "seq": r[0], "source_id": r[1], "kind": r[2], "case": r[3], "in_reply_to": r[4],
                "content": r[5], "received_at": r[6].isoformat(), "signer": r[7],
                "answered_by": r[8],
                # The act that made the message, with its entry in the peer's log: the page
                # checks both, as the inbox did (mapserver.exchange.bundle.verify).
                "made_by": r[9],
            }
            for r in got[:limit]
        ],
    }  # fmt: skip
