"""The work that runs behind requests, as operators see it on GET /health and in `citygrid
config check`: the audit sequencer (entries waiting to enter the tree, the newest signed
checkpoint), the witnesses' cosignatures, the city–district exchange's outbox (messages
the peer has not acknowledged), and the newest backup (a nightly timer that stopped says
nothing until a restore is needed).

A stopped sequencer does not stop the serving: entries wait in the queue, durable, and the
tree and its checkpoints stop growing, so that a security officer finds entries "not yet in
a checkpoint" and nothing else says why. A peer that stopped answering leaves forwarded
cases unsent. Both are findings here, with how long they have lasted.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from auth.renewal import Finding
from mapserver.settings import Settings

WAITING_LATE = dt.timedelta(seconds=60)  # an entry waits under a second while a sequencer runs
CHECKPOINT_LATE = dt.timedelta(minutes=5)  # one is signed seconds after the tree grows
COSIGNATURE_LATE = dt.timedelta(hours=2)  # witnesses poll every few minutes (their timer)
OUTBOX_LATE = dt.timedelta(minutes=15)  # the sender tries every few seconds
BACKUP_LATE = dt.timedelta(days=2)  # the timer backs up nightly (citygrid-backup.timer)


def _age(now: dt.datetime, then: dt.datetime | None) -> int | None:
    return None if then is None else max(0, int((now - then).total_seconds()))


def report(
    conn: psycopg.Connection, settings: Settings, later: dt.timedelta = dt.timedelta(0)
) -> tuple[dict[str, Any], list[Finding]]:
    """The figures, and what is wrong with them, `later` than now. "Now" is the database's
    clock, and so is the time an entry was queued (migration 0044: a serving host whose
    clock is off cannot hide its entries' wait); a checkpoint's time is its sequencer's, so
    a sequencer's clock that is off by minutes moves the checkpoint's age by as much."""
    found: list[Finding] = []
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    now = row[0] + later
    waiting, oldest = conn.execute(
        "SELECT count(*), min(q.queued_at) FROM audit_queue q, audit_tree t"
        " WHERE q.txid >= t.queue_xmax OR q.txid = ANY(t.queue_xip)"
    ).fetchone() or (0, None)
    size, signed_size, signed_at = conn.execute(
        "SELECT t.size, c.size, c.at FROM audit_tree t"
        " LEFT JOIN LATERAL (SELECT size, at FROM audit_checkpoint ORDER BY size DESC LIMIT 1) c"
        " ON true"
    ).fetchone() or (0, None, None)
    audit = {
        "waiting": int(waiting),
        "oldest_waiting_seconds": _age(now, oldest),
        "tree_size": int(size),
        "checkpoint_size": signed_size,
        "checkpoint_age_seconds": _age(now, signed_at),
    }
    if oldest is not None and now - oldest > WAITING_LATE:
        found.append(Finding("error", "audit", (
            f"{waiting} entries have waited {_age(now, oldest)} s to enter the log: is the"
            " audit sequencer running (`citygrid audit sequencer`)?"
        )))  # fmt: skip
    if size > (signed_size or 0) and (signed_at is None or now - signed_at > CHECKPOINT_LATE):
        since = (
            "no checkpoint yet"
            if signed_at is None
            else f"the newest {audit['checkpoint_age_seconds']} s old"
        )
        found.append(Finding("warning", "audit", (
            f"the log has {size - (signed_size or 0)} entries past its newest signed checkpoint"
            f" ({since}): is the audit sequencer running?"
        )))  # fmt: skip

    figures: dict[str, Any] = {"audit": audit}
    if settings.audit_witnesses:
        cosigned, first_signed = conn.execute(
            "SELECT (SELECT received_at FROM audit_cosignature ORDER BY id DESC LIMIT 1),"
            " (SELECT at FROM audit_checkpoint ORDER BY size LIMIT 1)"  # by their keys
        ).fetchone() or (None, None)
        figures["witnesses"] = {"last_cosignature_age_seconds": _age(now, cosigned)}
        late = cosigned is None or now - cosigned > COSIGNATURE_LATE
        if late and first_signed is not None and now - first_signed > COSIGNATURE_LATE:
            said = "none yet" if cosigned is None else f"the last {_age(now, cosigned)} s ago"
            found.append(Finding("warning", "witnesses", (
                f"no witness has cosigned a checkpoint for a while ({said}): the log's"
                " evidence against a compromised server rests on them"
            )))  # fmt: skip

    unacked, first, error = conn.execute(
        "SELECT count(*), min(created_at), (SELECT last_error FROM exchange_outbox"
        " WHERE acked_at IS NULL ORDER BY seq LIMIT 1)"
        " FROM exchange_outbox WHERE acked_at IS NULL"
    ).fetchone() or (0, None, None)
    figures["exchange"] = {"unacknowledged": int(unacked), "oldest_seconds": _age(now, first)}
    if first is not None and now - first > OUTBOX_LATE:
        why = f"; the last attempt: {error}" if error else "; none was attempted"
        found.append(Finding("warning", "exchange", (
            f"{unacked} messages to the peer are unacknowledged, the oldest for"
            f" {_age(now, first)} s (is `citygrid exchange send` running?){why}"
        )))  # fmt: skip

    backed_up, began = conn.execute(
        "SELECT (SELECT max(at) FROM audit_entry"
        " WHERE action = 'backup.create' AND outcome = 'ok'),"  # migration 0045's index
        " (SELECT min(at) FROM audit_entry)"
    ).fetchone() or (None, None)
    figures["backup"] = {"last_age_seconds": _age(now, backed_up)}
    if backed_up is not None and now - backed_up > BACKUP_LATE:
        found.append(Finding("warning", "backup", (
            f"the newest backup is {_age(now, backed_up)} s old: is citygrid-backup.timer"
            " running (`citygrid backup create --under ROOT`)?"
        )))  # fmt: skip
    elif backed_up is None and began is not None and now - began > BACKUP_LATE:
        found.append(Finding("warning", "backup", (
            "no backup of this install in the log, which began"
            f" {_age(now, began)} s ago: enable citygrid-backup.timer"
        )))  # fmt: skip
    return figures, found
