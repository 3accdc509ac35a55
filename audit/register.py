"""The change register: every insert, update and delete of accounts, roles, certificates,
organisations and the separation-of-duties table, whoever made it, recorded by a database
trigger (migration 0007) as a hash chain. Checked by `citygrid audit verify`; read by
security officers.

Each change's body is JSON kept as jsonb; its hash is SHA-256(previous hash || the body's
jsonb text in UTF-8), starting from 32 zero bytes, and register_head holds the last hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg

GENESIS = bytes(32)


def chain_hash(prev: bytes, body_text: str) -> bytes:
    return hashlib.sha256(prev + body_text.encode("utf-8")).digest()


def verify(conn: psycopg.Connection) -> tuple[int, str | None]:
    """(number of changes, the first problem found or None)."""
    prev, n = GENESIS, 0
    with conn.cursor(name="register_verify") as cur:
        cur.itersize = 5000
        cur.execute("SELECT id, body::text, prev_hash, hash FROM register_change ORDER BY id")
        for change_id, body_text, prev_hash, stored in cur:
            n += 1
            if change_id != n:
                return n - 1, f"register change {n} is missing (next stored is {change_id})"
            if bytes(prev_hash) != prev or json.loads(body_text).get("seq") != change_id:
                return n, f"register change {change_id} does not follow its predecessor"
            if chain_hash(prev, body_text) != bytes(stored):
                return n, f"register change {change_id} was altered after it was written"
            prev = bytes(stored)
    head = conn.execute("SELECT size, head FROM register_head").fetchone()
    if head is None or int(head[0]) != n or bytes(head[1]) != prev:
        size = "missing" if head is None else f"size {head[0]}"
        return n, f"the register head ({size}) differs from the {n} recorded changes"
    return n, None


def changes(
    conn: psycopg.Connection, account: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The newest changes first (optionally those about one account), for review."""
    rows = conn.execute(
        "SELECT id, body, encode(hash, 'hex') FROM register_change"
        " WHERE %(account)s::text IS NULL OR body ->> 'account' = %(account)s"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"account": account, "limit": limit},
    ).fetchall()
    return [{"id": i, **body, "hash": h} for i, body, h in rows]
