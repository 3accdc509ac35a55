"""Idempotency-Key (IETF httpapi idempotency-key-header draft) for device changes: the first
answer to a (account, key) is kept with the request's fingerprint for KEEP; a retry of the
same request (body, and the headers that define it) gets that answer again, the same key
with another request 422.

The key is claimed, the change made and its answer kept in one transaction: a change is
committed exactly when its key is, and a refused request leaves neither (a retry is then
processed afresh). A concurrent retry waits on the claim's row lock, then replays.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from mapserver.errors import CityGridError, Conflict, InvalidInput

HEADER = "Idempotency-Key"
KEEP = dt.timedelta(hours=24)  # documented in the README ("Devices")
_KEY = re.compile(r'^"?([\x21\x23-\x7e]{1,255})"?\Z')  # the draft's sf-string, quotes optional


class KeyReused(CityGridError):
    """The same key with a different request: refused, never applied (the draft's 422)."""

    status = 422
    code = "idempotency_key_reused"


class Kept(NamedTuple):
    status: int
    media_type: str
    body: bytes
    headers: Mapping[str, str] = {}


def key_of(headers: Mapping[str, str]) -> str:
    """The request's Idempotency-Key (400 when missing or malformed)."""
    value = headers.get(HEADER)
    if value is None:
        raise InvalidInput(f"a state-changing device request needs an {HEADER} header")
    match = _KEY.match(value.strip())
    if match is None:
        raise InvalidInput(f"{HEADER} must be 1 to 255 visible ASCII characters")
    return match[1]


def fingerprint(
    method: str, path: str, body: bytes, defining: Sequence[tuple[str, str]] = ()
) -> str:
    """What makes two requests the same: method, path, the exact body bytes and the headers
    that define the request where the body does not (a tus creation has no body: its
    Upload-Length and Upload-Metadata are what it asks for), each as `name: value`. Without
    such headers the fingerprint is what it always was, so kept keys still replay."""
    h = hashlib.sha256()
    parts = [method.encode(), path.encode(), body]
    parts += [f"{name.lower()}: {value}".encode() for name, value in defining]
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def claim(conn: psycopg.Connection, account: str, key: str, print_: str) -> Kept | None:
    """Claim `key` for this request (None: go ahead) or the answer kept for it."""
    purge(conn)
    conn.execute(
        "DELETE FROM device_idempotency WHERE account = %s AND key = %s AND expires_at <= now()",
        (account, key),
    )
    mine = conn.execute(
        """INSERT INTO device_idempotency (account, key, fingerprint, status, media_type, body,
               expires_at)
           VALUES (%s, %s, %s, 0, '', '', now() + %s) ON CONFLICT DO NOTHING RETURNING 1""",
        (account, key, print_, KEEP),
    ).fetchone()
    if mine is not None:
        return None
    row = conn.execute(
        "SELECT fingerprint, status, media_type, body, headers FROM device_idempotency"
        " WHERE account = %s AND key = %s",
        (account, key),
    ).fetchone()
    if row is None or row[1] == 0:  # a claim commits only with its answer: never seen
        raise Conflict(f"the first request with this {HEADER} is not answered yet; retry")
    if row[0] != print_:
        raise KeyReused(f"this {HEADER} was used for another request; use a new key")
    return Kept(int(row[1]), str(row[2]), bytes(row[3]), dict(row[4]))


def keep(conn: psycopg.Connection, account: str, key: str, answer: Kept) -> None:
    """Keep the answer of a claimed key (in the claim's transaction)."""
    conn.execute(
        "UPDATE device_idempotency SET status = %s, media_type = %s, body = %s, headers = %s"
        " WHERE account = %s AND key = %s",
        (answer.status, answer.media_type, answer.body, Jsonb(dict(answer.headers)), account, key),
    )


PURGE_BATCH = 100


def purge(conn: psycopg.Connection, limit: int = PURGE_BATCH) -> int:
    """Remove up to `limit` expired keys (any account); how many. Every claim calls it, so
    the table holds about a day of keys and no request pays for more than one small batch."""
    return conn.execute(
        "DELETE FROM device_idempotency WHERE (account, key) IN (SELECT account, key"
        " FROM device_idempotency WHERE expires_at <= now() ORDER BY expires_at LIMIT %s)",
        (limit,),
    ).rowcount
