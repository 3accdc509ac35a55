"""Offline verification in tests: every stored signed act in the log and under a signed
checkpoint, and what a verifier pins for an install (its CA, its audit log key)."""

from __future__ import annotations

import time

from audit.keys import signer
from audit.record import checkpoint_now
from auth.ca_store import CaStore
from auth.signed_action import Trust
from mapserver import db
from mapserver.settings import Settings

UNLOGGED = """SELECT count(*) FROM signed_action s WHERE NOT EXISTS (
    SELECT 1 FROM audit_entry e WHERE e.detail ? 'signature_sha256'
    AND e.detail ->> 'signature_sha256' = s.signature_sha256 AND e.leaf_index IS NOT NULL)"""


def checkpoint(settings: Settings, timeout: float = 30.0) -> None:
    """Wait until every stored act has its entry in the tree, then sign a checkpoint (what
    `citygrid audit checkpoint` does), so that each can be exported with its proof."""
    deadline = time.monotonic() + timeout
    with db.connect(settings) as conn:
        conn.autocommit = True
        while (unlogged := conn.execute(UNLOGGED).fetchone()[0]) > 0:  # type: ignore[index]
            assert time.monotonic() < deadline, f"{unlogged} signed acts never reached the log"
            time.sleep(0.05)
    with db.transaction(settings) as conn:
        checkpoint_now(conn, signer(settings.pki_dir))


def head_logged(
    settings: Settings, number: str, version: int | None = None, timeout: float = 30.0
) -> None:
    """Wait until an export of case `number` (at `version`, or any), whose request's or
    command's audit entry states the version it read, is in the tree, then sign a checkpoint:
    the next export of that version carries that entry as its bundle's head."""
    deadline = time.monotonic() + timeout
    with db.connect(settings) as conn:
        conn.autocommit = True
        while not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM audit_entry WHERE resource = %s"
            " AND detail ? 'case_head' AND leaf_index IS NOT NULL"
            " AND (%s::int IS NULL OR (detail -> 'case_head' ->> 'version')::int = %s))",
            (f"case {number} bundle", version, version),
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, f"no export of case {number} reached the log"
            time.sleep(0.05)
    with db.transaction(settings) as conn:
        checkpoint_now(conn, signer(settings.pki_dir))


def trust(settings: Settings) -> Trust:
    return Trust(CaStore(settings.pki_dir).certificate(), signer(settings.pki_dir).public_key())
