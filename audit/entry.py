"""The canonical bytes of an audit entry (RFC 8785 JSON) and its Merkle leaf hash. Pure.

Every stored column takes part, so changing any value of a stored entry changes its leaf.
Values are data: a newline or control character in them is escaped by the JSON encoding
and can never forge a line in an export.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from audit import jcs
from audit.merkle import leaf_hash

FIELDS = (
    "at",
    "request_id",
    "account",
    "role",
    "cert_serial",
    "cert_sha256",
    "client_addr",
    "method",
    "resource",
    "action",
    "outcome",
    "status",
    "bytes",
    "latency_ms",
    "detail",
)


def time_text(at: dt.datetime) -> str:
    """`at` in UTC as YYYY-MM-DDTHH:MM:SS.ffffffZ, always with its microseconds."""
    if at.tzinfo is dt.UTC and at.year >= 1000:  # isoformat writes what strftime does
        return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(values: dict[str, Any]) -> bytes:
    doc = {}
    for name in FIELDS:
        value = values.get(name)
        if isinstance(value, dt.datetime):
            value = time_text(value)
        doc[name] = value
    return jcs.dumps(doc)


def leaf(values: dict[str, Any]) -> bytes:
    return leaf_hash(canonical(values))
