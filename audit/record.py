"""Writing audit entries: one small interface every part of CityGrid records through."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import psycopg

OUTCOMES = ("ok", "refused", "error")


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


_COLUMNS = Entry._fields


def record(conn: psycopg.Connection, entry: Entry) -> int:
    """Insert the entry in the caller's transaction; returns its id."""
    if entry.outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}")
    values = [
        json.dumps(v, ensure_ascii=False) if k == "detail" else v
        for k, v in zip(_COLUMNS, entry, strict=True)
    ]
    row = conn.execute(
        f"INSERT INTO audit_entry ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) RETURNING id",
        values,
    ).fetchone()
    assert row is not None
    return int(row[0])
