"""The serving processes' audit writer, as the settings choose where an entry is durable, and
the entry of a change queued in the change's own transaction.

A request's entry is normally written by the gateway once its answer is made (spool or queue).
A change (a case's step, signed and kept) cannot wait for that: committed first, it would
stay done without an entry if the writer then failed (the client answered 503) or the worker
died before its spool was flushed. So its view queues the entry in the change's transaction
(`queue_with_change`), and the gateway's writer then leaves out that same entry.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from flask import Response, g, has_app_context, request

from audit.keys import signer
from audit.record import Entry
from audit.spool import SpoolWriter
from audit.writer import QUEUE_INSERT, AuditWriter, GroupCommitWriter, queued_row
from mapserver.errors import AuditUnavailable
from mapserver.settings import Settings

_QUEUED = "audit_queued_with_change"  # flask.g: (request id, status, queue id)


def audit_writer(settings: Settings) -> AuditWriter:
    """The host's spool (`audit_durability = "spool"`, the default) or the database queue."""
    key = signer(settings.pki_dir)
    every, seconds = settings.audit_checkpoint_entries, settings.audit_checkpoint_seconds
    if settings.audit_durability == "spool":
        return ServingSpoolWriter(
            settings.serving_database_url, key, every, seconds, settings.audit_spool_path
        )
    return ServingQueueWriter(settings.serving_database_url, key, every, seconds)


def queue_with_change(conn: psycopg.Connection, answer: Response) -> None:
    """Queue this request's audit entry, as answering `answer` now, in `conn`'s transaction
    (the change's): it commits with the change or not at all. The view notes all its facts
    before, and answers `answer` itself."""
    from auth.gateway import entry_of  # the gateway's own description of a request

    entry = entry_of(
        g.get("identity"),
        g.get("audit") or {},
        request.endpoint,
        request,
        answer.status_code,
        answer.calculate_content_length(),
        g.get("started"),
        g.get("request_id", ""),
    )
    try:
        with conn.transaction():
            row = conn.execute(QUEUE_INSERT, queued_row(entry, dt.datetime.now(dt.UTC))).fetchone()
    except psycopg.OperationalError:
        raise  # the database is gone: 503 database_unavailable, the change with it
    except psycopg.Error:
        raise AuditUnavailable() from None
    assert row is not None
    setattr(g, _QUEUED, (entry.request_id, entry.status, int(row[0])))


def _queued(entry: Entry) -> int | None:
    """The queue id of `entry` when its view queued it with its change (same request, same
    answer): the gateway's writer leaves it out. Another answer (the commit failed after
    all) is written as usual."""
    if not has_app_context():  # the cached tiles' path, before Flask
        return None
    held = g.get(_QUEUED)
    if held is None or held[:2] != (entry.request_id, entry.status):
        return None
    return int(held[2])


class ServingSpoolWriter(SpoolWriter):
    def write(self, entry: Entry) -> int:
        queued = _queued(entry)
        return super().write(entry) if queued is None else queued


class ServingQueueWriter(GroupCommitWriter):
    def write(self, entry: Entry) -> int:
        queued = _queued(entry)
        return super().write(entry) if queued is None else queued
