"""Reading the audit log: filtered pages of entries, checkpoints, proofs, exports.

Shared by the HTTP review API and the `citygrid audit` commands. Proofs are computed from
the stored leaf hashes against a signed checkpoint, so a reviewer can check them anywhere.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import psycopg

from audit import merkle
from audit.entry import FIELDS
from mapserver import text_limits
from mapserver.errors import InvalidInput, NotFound

MAX_PAGE = 500
COLUMNS = ("leaf_index", *FIELDS)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


class Filters(NamedTuple):
    account: str | None = None
    cert_serial: str | None = None
    action: str | None = None
    outcome: str | None = None
    resource: str | None = None  # prefix
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before: int | None = None  # leaf index, for paging backwards
    limit: int = 100


def _time(value: str, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def filters_from(args: Mapping[str, str]) -> Filters:
    """Filters from query parameters or CLI options (strings), validated."""
    known = {
        "account",
        "certificate",
        "action",
        "outcome",
        "resource",
        "from",
        "to",
        "before",
        "limit",
        "format",
    }
    unknown = set(args) - known
    if unknown:
        raise InvalidInput(
            f"unknown filter {sorted(unknown)[0]!r:.60}; filters: {', '.join(sorted(known))}"
        )
    for value in args.values():
        text_limits.AUDIT_FILTER.check(value)
    limit = args.get("limit", "100")
    if not re.fullmatch(r"\d{1,4}", limit) or not 0 < int(limit) <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1..{MAX_PAGE}")
    before = args.get("before")
    if before is not None and not re.fullmatch(r"\d{1,18}", before):
        raise InvalidInput("before must be a leaf index")
    outcome = args.get("outcome")
    if outcome is not None and outcome not in ("ok", "refused", "error"):
        raise InvalidInput("outcome must be ok, refused or error")
    return Filters(
        account=args.get("account") or None,
        cert_serial=(args.get("certificate") or "").lower() or None,
        action=args.get("action") or None,
        outcome=outcome,
        resource=args.get("resource") or None,
        since=_time(args["from"], "from") if args.get("from") else None,
        until=_time(args["to"], "to") if args.get("to") else None,
        before=int(before) if before is not None else None,
        limit=int(limit),
    )


def entries(conn: psycopg.Connection, f: Filters) -> list[dict[str, Any]]:
    where: list[str] = ["leaf_index IS NOT NULL"]
    params: list[Any] = []
    for column, value in (
        ("account", f.account),
        ("cert_serial", f.cert_serial),
        ("action", f.action),
        ("outcome", f.outcome),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if f.resource:
        where.append("starts_with(resource, %s)")
        params.append(f.resource)
    if f.since:
        where.append("at >= %s")
        params.append(f.since)
    if f.until:
        where.append("at < %s")
        params.append(f.until)
    if f.before is not None:
        where.append("leaf_index < %s")
        params.append(f.before)
    rows = conn.execute(
        f"SELECT {', '.join(COLUMNS)}, leaf_hash FROM audit_entry WHERE {' AND '.join(where)}"
        " ORDER BY leaf_index DESC LIMIT %s",
        [*params, f.limit],
    ).fetchall()
    out = []
    for row in rows:
        item = dict(zip(COLUMNS, row[:-1], strict=True))
        item["at"] = item["at"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        item["leaf_hash"] = base64.b64encode(bytes(row[-1])).decode()
        out.append(item)
    return out


def checkpoints(conn: psycopg.Connection, limit: int = 50) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT size, root, at, note FROM audit_checkpoint ORDER BY size DESC LIMIT %s", (limit,)
    ).fetchall()
    return [
        {
            "size": size,
            "root": base64.b64encode(bytes(root)).decode(),
            "at": at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "note": note,
        }
        for size, root, at, note in rows
    ]


def _leaves(conn: psycopg.Connection, size: int) -> list[bytes]:
    rows = conn.execute(
        "SELECT leaf_hash FROM audit_entry WHERE leaf_index < %s ORDER BY leaf_index", (size,)
    ).fetchall()
    return [bytes(h) for (h,) in rows]


def _checkpoint_covering(conn: psycopg.Connection, index: int) -> tuple[int, bytes, str]:
    row = conn.execute(
        "SELECT size, root, note FROM audit_checkpoint WHERE size > %s ORDER BY size DESC LIMIT 1",
        (index,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no checkpoint covers leaf {index} yet")
    return int(row[0]), bytes(row[1]), row[2]


def inclusion(conn: psycopg.Connection, index: int) -> dict[str, Any]:
    """Inclusion proof of leaf `index` in the latest checkpoint that covers it."""
    size, root, note = _checkpoint_covering(conn, index)
    leaves = _leaves(conn, size)
    if len(leaves) != size:
        raise NotFound("the log is shorter than its checkpoint; run `citygrid audit verify`")
    proof = merkle.inclusion_proof(leaves, index)
    return {
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": base64.b64encode(leaves[index]).decode(),
        "proof": [base64.b64encode(p).decode() for p in proof],
        "root": base64.b64encode(root).decode(),
        "checkpoint": note,
    }


def consistency(conn: psycopg.Connection, old: int, new: int) -> dict[str, Any]:
    sizes: dict[int, Any] = dict(
        conn.execute(
            "SELECT size, root FROM audit_checkpoint WHERE size IN (%s, %s)", (old, new)
        ).fetchall()
    )
    if old not in sizes or new not in sizes:
        raise NotFound("both sizes must be checkpoints")
    if not 0 < old <= new:
        raise InvalidInput("from must be at most to")
    leaves = _leaves(conn, new)
    proof = merkle.consistency_proof(leaves, old) if old < new else []
    return {
        "from": old,
        "to": new,
        "from_root": base64.b64encode(bytes(sizes[old])).decode(),
        "to_root": base64.b64encode(bytes(sizes[new])).decode(),
        "proof": [base64.b64encode(p).decode() for p in proof],
    }


def _cell(value: Any) -> str:
    """A CSV cell that cannot break a line or carry a control character."""
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    return _CONTROL.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def export_csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*COLUMNS, "leaf_hash"])
    for item in items:
        writer.writerow([_cell(item.get(c)) for c in (*COLUMNS, "leaf_hash")])
    return buf.getvalue()


def export_json(conn: psycopg.Connection, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Entries with an inclusion proof each against the latest checkpoint (entries newer
    than it carry none yet)."""
    latest = checkpoints(conn, 1)
    size = latest[0]["size"] if latest else 0
    leaves = _leaves(conn, size) if size else []
    root = base64.b64decode(latest[0]["root"]) if latest else b""
    out = []
    for item in items:
        index = int(item["leaf_index"])
        proof = None
        if index < size == len(leaves):
            proof = {
                "leaf_index": index,
                "tree_size": size,
                "proof": [
                    base64.b64encode(p).decode() for p in merkle.inclusion_proof(leaves, index)
                ],
                "root": base64.b64encode(root).decode(),
            }
        out.append({"entry": item, "inclusion": proof})
    return {"checkpoint": latest[0] if latest else None, "entries": out}
