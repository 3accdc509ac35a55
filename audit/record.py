"""Writing audit entries: one small interface every part of CityGrid records through.

`append` adds entries to the Merkle tree in the caller's transaction: each gets the next
leaf index, the tree's right edge advances, and a signed checkpoint is added every
`every` entries or `seconds` seconds. The row lock on audit_tree orders writers across
processes, so leaf indexes are gapless and follow commit order. The full tiles of interior
nodes (audit.tiles) that the new entries complete are written in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NamedTuple

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint, entry, storable, tiles, tree

OUTCOMES = ("ok", "refused", "error")
CHECKPOINT_EVERY = 1000
CHECKPOINT_SECONDS = 10.0  # the default of CITYGRID_AUDIT_CHECKPOINT_SECONDS


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
_TEXTS = (
    "request_id",
    "account",
    "role",
    "cert_serial",
    "cert_sha256",
    "client_addr",
    "method",
    "action",
)


def prepare(e: Entry, now: dt.datetime) -> dict[str, object]:
    """The values stored for `e`: whatever a client put in them, they are escaped and
    capped here, before the leaf hash is computed over them (audit.storable)."""
    if e.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    values: dict[str, object] = e._asdict()
    for name in _TEXTS:
        values[name] = storable.text(str(values[name]))
    values["resource"] = storable.text(e.resource, storable.RESOURCE_MAX)
    values["at"] = e.at or now
    values["detail"] = storable.detail(e.detail)
    return values


def append(
    conn: psycopg.Connection,
    entries: list[Entry],
    signer: Ed25519PrivateKey,
    every: int = CHECKPOINT_EVERY,
    seconds: float = CHECKPOINT_SECONDS,
) -> list[int]:
    """Add entries to the log in the caller's transaction; returns their leaf indexes.

    Leaf hashes are computed before the tree row is locked, and the statements made under
    the lock are pipelined, so the lock (which orders all writers) is held briefly.
    """
    now = dt.datetime.now(dt.UTC)
    prepared = []
    for e in entries:
        values = prepare(e, now)
        prepared.append((values, entry.leaf(values)))
    n = len(prepared)
    with conn.pipeline():
        row = conn.execute(
            "UPDATE audit_tree SET size = size + %s"
            " RETURNING size - %s, frontier, checkpoint_size, checkpoint_at",
            (n, n),
        ).fetchone()
        assert row is not None, "audit_tree has its one row from migration 0004"
        size, frontier = int(row[0]), [bytes(h) for h in row[1]]
        last_size, last_at = int(row[2]), row[3]
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO audit_entry ({', '.join(_COLUMNS)})"
                f" VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                [
                    [
                        *(
                            json.dumps(v[f], ensure_ascii=False) if f == "detail" else v[f]
                            for f in entry.FIELDS
                        ),
                        size + i,
                        leaf,
                    ]
                    for i, (v, leaf) in enumerate(prepared)
                ],
            )
        new_size, frontier = tree.extend(size, frontier, [leaf for _, leaf in prepared])
        write_tiles(conn, size, [leaf for _, leaf in prepared])
        due = new_size > 0 and (
            new_size // every > last_size // every
            or last_at is None
            or (now - last_at).total_seconds() >= seconds
        )
        if due:
            note = checkpoint.sign(
                checkpoint.Checkpoint(checkpoint.ORIGIN, new_size, tree.root(frontier)), signer
            )
            conn.execute(
                "INSERT INTO audit_checkpoint (size, root, at, note) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (size) DO NOTHING",
                (new_size, tree.root(frontier), now, note),
            )
            conn.execute(
                "UPDATE audit_tree SET frontier = %s, checkpoint_size = %s, checkpoint_at = %s",
                (frontier, new_size, now),
            )
        else:
            conn.execute("UPDATE audit_tree SET frontier = %s", (frontier,))
    return list(range(size, new_size))


def write_tiles(conn: psycopg.Connection, size: int, leaves: list[bytes]) -> None:
    """Insert the full tiles that `leaves`, appended at `size`, complete (one in 256
    appends reads the rest of its tile: up to 255 leaf hashes or tile roots)."""

    def earlier(level: int, start: int, stop: int) -> list[bytes]:
        if level == 0:
            sql = (
                "SELECT leaf_hash FROM audit_entry WHERE leaf_index >= %s AND leaf_index < %s"
                " ORDER BY leaf_index"
            )
            rows = conn.execute(sql, (start, stop)).fetchall()
        else:
            sql = (
                "SELECT root FROM audit_tile WHERE level = %s AND idx >= %s AND idx < %s"
                " ORDER BY idx"
            )
            rows = conn.execute(sql, (level - 1, start, stop)).fetchall()
        return [bytes(h) for (h,) in rows]

    done = tiles.advance(size, leaves, earlier)
    if done:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit_tile (level, idx, hashes, root) VALUES (%s, %s, %s, %s)",
                [(t.level, t.n, t.hashes, t.root) for t in done],
            )


def add_checkpoint(
    conn: psycopg.Connection, size: int, root: bytes, signer: Ed25519PrivateKey
) -> str:
    note = checkpoint.sign(checkpoint.Checkpoint(checkpoint.ORIGIN, size, root), signer)
    conn.execute(
        "INSERT INTO audit_checkpoint (size, root, note) VALUES (%s, %s, %s)"
        " ON CONFLICT (size) DO NOTHING",
        (size, root, note),
    )
    conn.execute("UPDATE audit_tree SET checkpoint_size = %s, checkpoint_at = now()", (size,))
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
