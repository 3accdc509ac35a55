"""Reading the audit log: filtered pages of entries, checkpoints, proofs, exports.

Shared by the HTTP review API and the `citygrid audit` commands. Proofs are computed from
the stored tiles (audit.tiles: a few per level of the tree) against a signed checkpoint, so
a reviewer can check them anywhere; the tiles themselves are served in the C2SP tlog-tiles
layout for verifiers that trust none of CityGrid's code.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import psycopg

from audit import entry, tiles
from audit.entry import FIELDS
from mapserver import text_limits
from mapserver.errors import InvalidInput, NotFound

MAX_PAGE = 500
# An entry that records many answers, the renderer's run of tiles (tiles.tile_runs.ACTION),
# holds each answer's path in detail.tiles[*][2]: a resource filter finds the runs holding a
# matching path as well as the entries whose own resource matches.
RUN_ACTION = "renderer.tiles"
_RUN_PATHS = "$.tiles[*][2] ? (@ starts with $p)"
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
    if not re.fullmatch(r"[0-9]{1,4}", limit) or not 0 < int(limit) <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1..{MAX_PAGE}")
    before = args.get("before")
    if before is not None and not re.fullmatch(r"[0-9]{1,18}", before):
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
        where.append(
            "(starts_with(resource, %s) OR (action = %s AND"
            " jsonb_path_exists(detail, %s::jsonpath, jsonb_build_object('p', %s::text))))"
        )
        params += [f.resource, RUN_ACTION, _RUN_PATHS, f.resource]
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


def tile_hashes(conn: psycopg.Connection, level: int, index: int, width: int) -> list[bytes]:
    """The first `width` hashes of a tile, in one query: a full tile as stored, a partial
    one from the leaf hashes (level 0) or the roots of the full tiles one level down."""
    if width == tiles.WIDTH:
        row = conn.execute(
            "SELECT hashes FROM audit_tile WHERE level = %s AND idx = %s", (level, index)
        ).fetchone()
        if row is None:
            raise NotFound("no such tile in the log")
        return tiles.split(bytes(row[0]))
    lo, hi = index * tiles.WIDTH, index * tiles.WIDTH + width
    if level == 0:
        rows = conn.execute(
            "SELECT leaf_hash FROM audit_entry WHERE leaf_index >= %s AND leaf_index < %s"
            " ORDER BY leaf_index",
            (lo, hi),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT root FROM audit_tile WHERE level = %s AND idx >= %s AND idx < %s ORDER BY idx",
            (level - 1, lo, hi),
        ).fetchall()
    if len(rows) != width:
        raise NotFound("no such tile in the log")
    return [bytes(h) for (h,) in rows]


def _prefetch(conn: psycopg.Connection, ids: list[tiles.TileId]) -> dict[tiles.TileId, list[bytes]]:
    """Many tiles in two queries: the full ones, then every partial one."""
    out: dict[tiles.TileId, list[bytes]] = {}
    full = [t for t in ids if t.width == tiles.WIDTH]
    if full:
        rows = conn.execute(
            "SELECT level, idx, hashes FROM audit_tile WHERE (level, idx) IN"
            " (SELECT * FROM unnest(%s::smallint[], %s::bigint[]))",
            ([t.level for t in full], [t.n for t in full]),
        ).fetchall()
        for level, idx, hashes in rows:
            out[tiles.TileId(level, idx)] = tiles.split(bytes(hashes))
    partial = [t for t in ids if t.width < tiles.WIDTH]
    if partial:
        parts, params = [], []
        for i, t in enumerate(partial):
            lo = t.n * tiles.WIDTH
            if t.level == 0:
                parts.append(
                    "SELECT %s::int, leaf_index, leaf_hash FROM audit_entry"
                    " WHERE leaf_index >= %s AND leaf_index < %s"
                )
                params += [i, lo, lo + t.width]
            else:
                parts.append(
                    "SELECT %s::int, idx, root FROM audit_tile"
                    " WHERE level = %s AND idx >= %s AND idx < %s"
                )
                params += [i, t.level - 1, lo, lo + t.width]
        grouped: dict[int, list[bytes]] = {}
        for i, _, h in conn.execute(" UNION ALL ".join(parts) + " ORDER BY 1, 2", params):
            grouped.setdefault(i, []).append(bytes(h))
        for i, t in enumerate(partial):
            if len(grouped.get(i, [])) == t.width:
                out[t] = grouped[i]
    return out


def tile_reader(
    conn: psycopg.Connection, prefetch: list[tiles.TileId] | None = None
) -> tiles.ReadTile:
    """`read_tile` over the database, each tile read once however many proofs use it;
    the tiles in `prefetch` (tiles.needed) are fetched up front in two queries."""
    cache = _prefetch(conn, prefetch) if prefetch else {}

    def read(level: int, index: int, width: int) -> list[bytes]:
        key = tiles.TileId(level, index, width)
        if key not in cache:
            cache[key] = tile_hashes(conn, level, index, width)
        return cache[key]

    return read


def tile(conn: psycopg.Connection, path: str) -> bytes:
    """A tile or entry bundle by its tlog-tiles path, as a standard client fetches it."""
    try:
        wanted = tiles.parse(path)
    except tiles.TileError as exc:
        raise NotFound(str(exc)) from None
    if wanted.level != tiles.ENTRIES:
        return b"".join(tile_hashes(conn, wanted.level, wanted.n, wanted.width))
    lo = wanted.n * tiles.WIDTH
    rows = conn.execute(
        f"SELECT {', '.join(FIELDS)} FROM audit_entry WHERE leaf_index >= %s"
        " AND leaf_index < %s ORDER BY leaf_index",
        (lo, lo + wanted.width),
    ).fetchall()
    if len(rows) != wanted.width:
        raise NotFound("no such entry bundle in the log")
    out = []
    for row in rows:
        values = dict(zip(FIELDS, row, strict=True))
        if isinstance(values["detail"], str):
            values["detail"] = json.loads(values["detail"])
        out.append(entry.canonical(values))
    return tiles.bundle(out)


def latest_note(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT note FROM audit_checkpoint ORDER BY size DESC LIMIT 1").fetchone()
    if row is None:
        raise NotFound("the log has no checkpoint yet")
    return str(row[0])


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
    plan = tiles.needed(
        lambda r: (tiles.inclusion_proof(index, size, r), tiles.leaf(index, size, r))
    )
    read = tile_reader(conn, plan)
    proof = tiles.inclusion_proof(index, size, read)
    return {
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": base64.b64encode(tiles.leaf(index, size, read)).decode(),
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
    proof = []
    if old < new:
        plan = tiles.needed(lambda r: tiles.consistency_proof(old, new, r))
        proof = tiles.consistency_proof(old, new, tile_reader(conn, plan))
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


def every_page(
    conn: psycopg.Connection, f: Filters, most: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Every entry matching `f` (at most `most`, before `f.before`), newest first, a page of
    MAX_PAGE at a time: keyset paging by leaf index, so entries the log takes in meanwhile
    neither shift nor repeat a page."""
    taken, before = 0, f.before
    while most is None or taken < most:
        size = MAX_PAGE if most is None else min(MAX_PAGE, most - taken)
        page = entries(conn, f._replace(before=before, limit=size))
        if page:
            yield page
        if len(page) < size:
            return
        taken += len(page)
        before = int(page[-1]["leaf_index"])


def csv_header() -> list[str]:
    return [*COLUMNS, "leaf_hash"]


def csv_row(item: dict[str, Any]) -> list[str]:
    return [_cell(item.get(c)) for c in (*COLUMNS, "leaf_hash")]


def export_csv(items: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header())
    writer.writerows(csv_row(item) for item in items)
    return buf.getvalue()


def latest_checkpoint(conn: psycopg.Connection) -> dict[str, Any] | None:
    latest = checkpoints(conn, 1)
    return latest[0] if latest else None


def proven(
    conn: psycopg.Connection, items: list[dict[str, Any]], checkpoint: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """`items`, each with its inclusion proof against `checkpoint` (entries newer than it
    carry none yet)."""
    size = checkpoint["size"] if checkpoint else 0
    indexes = [int(item["leaf_index"]) for item in items if int(item["leaf_index"]) < size]
    plan = tiles.needed(lambda r: [tiles.inclusion_proof(i, size, r) for i in indexes])
    read = tile_reader(conn, plan)
    root = base64.b64decode(checkpoint["root"]) if checkpoint else b""
    out = []
    for item in items:
        index = int(item["leaf_index"])
        proof = None
        try:
            path = tiles.inclusion_proof(index, size, read) if index < size else None
        except NotFound:  # the log is shorter than its checkpoint: `audit verify` says so
            path = None
        if path is not None:
            proof = {
                "leaf_index": index,
                "tree_size": size,
                "proof": [base64.b64encode(p).decode() for p in path],
                "root": base64.b64encode(root).decode(),
            }
        out.append({"entry": item, "inclusion": proof})
    return out


def export_json(conn: psycopg.Connection, items: list[dict[str, Any]]) -> dict[str, Any]:
    """Entries with an inclusion proof each against the latest checkpoint."""
    checkpoint = latest_checkpoint(conn)
    return {"checkpoint": checkpoint, "entries": proven(conn, items, checkpoint)}
