"""Acts of the command line, the signer and the exchange append their entries to the tree in
their own transactions (audit.record.append), not through the queue. One that follows a
checkpoint within the checkpoint interval is left without one by its own append; the
sequencer must still sign a checkpoint over it once the log is idle, as it does for queued
entries: else `citygrid case export --wait 30` right after `case act` waits in vain on an
install whose sequencer runs, and `audit bundle` of such an act stays "try again shortly"
until some request happens to arrive."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import sequencer
from audit.record import Entry, append
from mapserver import db
from mapserver.settings import Settings

from .conftest import audit_log_fixtures

log, key = audit_log_fixtures("citygrid_seq_appends")


def _sizes(settings: Settings) -> tuple[int, int]:
    """(the tree's size, the largest signed checkpoint's)."""
    with db.connect(settings) as conn:
        row = conn.execute(
            "SELECT (SELECT size FROM audit_tree),"
            " (SELECT coalesce(max(size), 0) FROM audit_checkpoint)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _append(settings: Settings, key: Ed25519PrivateKey, resource: str) -> None:
    """An act's entry as the command line appends it, with a checkpoint interval of an hour."""
    with db.transaction(settings) as conn:
        append(conn, [Entry(action="case.create", resource=resource)], key, 1000, 3600)


def _wait_signed(settings: Settings, size: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _sizes(settings)[1] < size:
        assert time.monotonic() < deadline, f"no checkpoint over the tail: {_sizes(settings)}"
        time.sleep(0.05)


def test_an_act_appended_after_a_checkpoint_gets_one_when_the_log_is_idle(
    log: Settings, key: Ed25519PrivateKey
) -> None:
    _append(log, key, "act 0")  # signs the log's first checkpoint itself
    _append(log, key, "act 1")  # within the hour: none
    candidate = sequencer.Sequencer(log.database_url, key, 1000, 3600, poll=0.05, idle=0.2)
    candidate.start()
    try:
        # A new leader checkpoints the tail it finds, and then waits for arrivals.
        _wait_signed(log, _sizes(log)[0])
        _append(log, key, "act 2")
        size, signed = _sizes(log)
        assert signed < size, (size, signed)
        _wait_signed(log, size)
    finally:
        candidate.stop()
