"""Writing audit entries: one small interface every part of CityGrid records through.

`append` adds entries to the Merkle tree in the caller's transaction: each gets the next
leaf index, the tree's right edge advances, and a signed checkpoint is added every
`every` entries or `seconds` seconds. The row lock on audit_tree orders writers across
processes, so leaf indexes are gapless and follow commit order.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NamedTuple

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint, entry, tree

OUTCOMES = ("ok", "refused", "error")
CHECKPOINT_EVERY = 1000
CHECKPOINT_SECONDS = 60.0


class Entry(NamedTuple):
    """One access or act. `detail` holds anything else, as JSON data."""

    action: str
    outcome: str = "ok"
    account: str = ""
    role: str = ""
    cert_serial: str = ""
    cert_sha256: str = ""
    client_addr: str = ""
    method: str = ""
    resource: str = ""
    request_id: str = ""
    status: int | None = None
    bytes: int | None = None
    latency_ms: float | None = None
    detail: dict[str, Any] = {}
    at: dt.datetime | None = None


_COLUMNS = (*entry.FIELDS, "leaf_index", "leaf_hash")


def append(
    conn: psycopg.Connection,
    entries: list[Entry],
    signer: Ed25519PrivateKey,
    every: int = CHECKPOINT_EVERY,
    seconds: float = CHECKPOINT_SECONDS,
) -> list[int]:
    """Add entries to the log in the caller's transaction; returns their leaf indexes."""
    now = dt.datetime.now(dt.UTC)
    row = conn.execute("SELECT size, frontier FROM audit_tree FOR UPDATE").fetchone()
    assert row is not None, "audit_tree has its one row from migration 0004"
    size, frontier = int(row[0]), [bytes(h) for h in row[1]]
    rows, leaves = [], []
    for i, e in enumerate(entries):
        if e.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        values = e._asdict()
        values["at"] = e.at or now
        values["detail"] = json.loads(json.dumps(e.detail, ensure_ascii=False, default=str))
        leaf = entry.leaf(values)
        leaves.append(leaf)
        rows.append(
            [
                *(
                    values[f] if f != "detail" else json.dumps(values[f], ensure_ascii=False)
                    for f in entry.FIELDS
                ),
                size + i,
                leaf,
            ]
        )
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY audit_entry ({', '.join(_COLUMNS)}) FROM STDIN") as copy,
    ):
        for r in rows:
            copy.write_row(r)
    new_size, frontier = tree.extend(size, frontier, leaves)
    conn.execute("UPDATE audit_tree SET size = %s, frontier = %s", (new_size, frontier))
    last = conn.execute("SELECT max(size), max(at) FROM audit_checkpoint").fetchone()
    last_at = last[1] if last else None
    due = (
        new_size // every > size // every
        or last_at is None
        or ((now - last_at).total_seconds() >= seconds)
    )
    if due and new_size > 0:
        add_checkpoint(conn, new_size, tree.root(frontier), signer)
    return list(range(size, new_size))


def add_checkpoint(
    conn: psycopg.Connection, size: int, root: bytes, signer: Ed25519PrivateKey
) -> str:
    note = checkpoint.sign(checkpoint.Checkpoint(checkpoint.ORIGIN, size, root), signer)
    conn.execute(
        "INSERT INTO audit_checkpoint (size, root, note) VALUES (%s, %s, %s)"
        " ON CONFLICT (size) DO NOTHING",
        (size, root, note),
    )
    return note


def checkpoint_now(conn: psycopg.Connection, signer: Ed25519PrivateKey) -> str | None:
    """Sign a checkpoint of the tree as it stands (none for an empty log)."""
    size, frontier = conn.execute("SELECT size, frontier FROM audit_tree FOR UPDATE").fetchone()  # type: ignore[misc]
    if size == 0:
        return None
    return add_checkpoint(conn, int(size), tree.root([bytes(h) for h in frontier]), signer)


def record(conn: psycopg.Connection, e: Entry, signer: Ed25519PrivateKey) -> int:
    """Append one entry in the caller's transaction; returns its leaf index."""
    return append(conn, [e], signer)[0]
