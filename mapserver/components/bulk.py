"""Bulk component updates from a CSV file or a GeoPackage: every row checked first (the
report names each row's problems), then applied as one signed action, all or nothing.

Columns (CSV header or GeoPackage attributes): `op` (edit, move, retire, add; default edit
with a code, add without), `code`, `version` (default: the version seen when checked),
`name`, `state`, `responsible_dept`, `owner_dept`, `maintainer_dept`, `data_source`,
`major` and `minor` (add), `reason` (retire), and the place of a move or an addition: `grid`
(a unit grid code), or the point of a GeoPackage feature, or `x`/`y` in the install's CRS.
Points stay inside: the report speaks of rows, codes and grids only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
from shapely import wkb

from mapserver import codes
from mapserver.components import store
from mapserver.errors import CityGridError, InvalidInput, NotFound
from mapserver.settings import Settings
from tiles.tile_grid import TileGrid

MAX_ROWS = 5000
MAX_BYTES = 16 << 20
COLUMNS = frozenset(
    {"op", "code", "version", "major", "minor", "reason", "grid", "x", "y", *store.EDITABLE}
)
_ENVELOPE = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def read(data: bytes, fmt: str, srid: int) -> list[dict[str, Any]]:
    """The rows of a CSV (UTF-8, with a header) or a GeoPackage's one feature table."""
    if len(data) > MAX_BYTES:
        raise InvalidInput(f"the file is larger than {MAX_BYTES >> 20} MiB")
    rows = _csv(data) if fmt == "csv" else _gpkg(data, srid) if fmt == "gpkg" else None
    if rows is None:
        raise InvalidInput("format must be csv or gpkg")
    if not rows:
        raise InvalidInput("the file holds no rows")
    if len(rows) > MAX_ROWS:
        raise InvalidInput(f"at most {MAX_ROWS} rows per file")
    unknown = set().union(*(set(r) for r in rows)) - COLUMNS - {"point"}
    if unknown:
        raise InvalidInput(f"unknown column {sorted(unknown)[0]!r}")
    return rows


def _csv(data: bytes) -> list[dict[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("a CSV file must be UTF-8") from None
    if "\x00" in text:
        raise InvalidInput("a CSV file holds no NUL bytes")
    extra = "\x00extra"  # where DictReader puts fields past the header (no NUL in the text)
    try:
        reader = csv.DictReader(io.StringIO(text), restkey=extra)
        named = [k.strip() for k in reader.fieldnames or ()]
        twice = sorted({k for k in named if k and named.count(k) > 1})
        if twice:  # the later would silently win
            raise InvalidInput(f"column {twice[0]!r:.70} is named twice in the header")
        rows = []
        for n, row in enumerate(reader, start=1):
            if extra in row:  # silently dropped before
                raise InvalidInput(f"row {n}: more fields than the header names")
            rows.append(
                {k.strip(): (v or "").strip() for k, v in row.items() if k and v not in (None, "")}
            )
        return rows
    except csv.Error as exc:
        raise InvalidInput(f"unreadable CSV: {exc}") from None


def _gpkg(data: bytes, srid: int) -> list[dict[str, Any]]:
    if not data.startswith(b"SQLite format 3\x00"):
        raise InvalidInput("not a GeoPackage (an SQLite file)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.gpkg"
        path.write_bytes(data)
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
                return list(_features(con, srid))
        except sqlite3.Error:
            raise InvalidInput("unreadable GeoPackage") from None


def _features(con: sqlite3.Connection, srid: int) -> Iterator[dict[str, Any]]:
    found = con.execute(
        "SELECT g.table_name, g.column_name, g.srs_id FROM gpkg_contents c"
        " JOIN gpkg_geometry_columns g ON g.table_name = c.table_name"
        " WHERE c.data_type = 'features'"
    ).fetchall()
    if len(found) != 1:
        raise InvalidInput("a GeoPackage of components holds exactly one feature table")
    table, column, srs = found[0]
    if type(srs) is not int:  # sqlite3 hands over what the cell holds: text, a REAL, NULL
        raise InvalidInput("the GeoPackage's feature table names no SRS (an integer srs_id)")
    if srs != srid:
        raise InvalidInput(f"the GeoPackage's points are in SRS {srs}, not the install's {srid}")
    cur = con.execute(f'SELECT * FROM "{table.replace(chr(34), "")}"')  # noqa: S608 - its own name
    names = [d[0] for d in cur.description]
    for values in cur:
        row: dict[str, Any] = {}
        for name, value in zip(names, values, strict=True):
            if name == column:
                if isinstance(value, bytes):
                    row["point"] = _point(value)
                elif value is not None:  # bytes(10**12) would allocate that many
                    raise InvalidInput("a feature's geometry is not a GeoPackage geometry")
            elif name != "fid" and value not in (None, ""):
                row[name] = str(value).strip()
        yield row


def _point(blob: bytes) -> tuple[float, float] | None:
    """A GeoPackage geometry blob (header + WKB) → its point."""
    if len(blob) < 8 or blob[:2] != b"GP":
        raise InvalidInput("a feature's geometry is not a GeoPackage geometry")
    flags = blob[3]
    if flags & 0x10:
        return None  # empty geometry
    size = _ENVELOPE.get((flags >> 1) & 7)
    if size is None:
        raise InvalidInput("a feature's geometry has a bad envelope")
    try:
        geom = wkb.loads(blob[8 + size :])
    except Exception:  # shapely raises its own GEOS errors for bad WKB
        raise InvalidInput("a feature's geometry is unreadable") from None
    if geom.geom_type != "Point" or geom.is_empty:
        raise InvalidInput("component features are points")
    return float(geom.x), float(geom.y)


def _place(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row.get("point"):
        return {"point": list(row["point"])}
    if "x" in row or "y" in row:
        try:
            return {"point": [float(row["x"]), float(row["y"])]}
        except (KeyError, ValueError):
            raise InvalidInput("x and y must both be numbers") from None
    if row.get("grid"):
        return {"grid": row["grid"]}
    return None


def check(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid,
    rows: list[dict[str, Any]],
    own: frozenset[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(changes, report): each row as the change it makes, and per row its problems. Checks
    run in a savepoint that is rolled back, so the check itself changes nothing."""
    changes: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    seen: set[str] = set()
    for n, row in enumerate(rows, start=1):
        op = row.get("op") or ("edit" if row.get("code") else "add")
        code = row.get("code", "")
        entry: dict[str, Any] = {"row": n, "op": op, "code": code or None, "problems": []}
        change: dict[str, Any] = {"op": op, "code": code}
        try:
            if op not in (*store.OPS, "add"):
                raise InvalidInput(f"op must be one of edit, move, retire, add, not {op!r}")
            if op != "add":
                if code in seen:
                    raise InvalidInput(f"component {code} is named twice in the file")
                seen.add(code)
                change["version"] = _version(conn, code, row, own)
            sets = {k: row[k] for k in store.EDITABLE if k in row}
            if op == "edit":
                change["set"] = store.attributes({"set": sets}, own)
                if not change["set"]:
                    raise InvalidInput("the row changes no attribute")
                _keeps_it(conn, code, change["set"], own)
            elif op == "retire":
                if not row.get("reason"):
                    raise InvalidInput("a retirement needs a reason")
                change["reason"] = store.retire_reason(row)
            else:
                spec = _place(row)
                if spec is None:
                    raise InvalidInput("a move or an addition needs grid, x/y or a point")
                _, change["grid"] = store.where_to(conn, settings, grid, spec, allow_point=True)
                change["place"] = spec
                if op == "add":
                    change.update(sets, major=row.get("major", ""), minor=row.get("minor", ""))
                    _check_add(conn, settings, change, own)
        except CityGridError as exc:
            entry["problems"].append(exc.message)
        entry["grid"] = change.get("grid")
        report.append(entry)
        changes.append(change)
    return changes, report


def _version(
    conn: psycopg.Connection, code: str, row: Mapping[str, Any], own: frozenset[str]
) -> int:
    try:
        codes.parse_component_code(code, len(code) - 14 if len(code) in (16, 17) else 2)
    except InvalidInput as exc:
        raise InvalidInput(exc.message) from None
    found = conn.execute(
        "SELECT version, in_use FROM component WHERE code = %s"
        " AND (owner_dept = ANY(%s) OR maintainer_dept = ANY(%s))",
        (code, list(own), list(own)),
    ).fetchone()
    if found is None:
        raise InvalidInput(f"no component {code} of your departments")
    if not found[1]:
        raise InvalidInput(f"component {code} is retired")
    if "version" in row:
        try:
            given = int(row["version"])
        except ValueError:
            raise InvalidInput("version must be a number") from None
        if given != found[0]:
            raise InvalidInput(f"component {code} is at version {found[0]}, not {given}")
    return int(found[0])


def _keeps_it(
    conn: psycopg.Connection, code: str, sets: Mapping[str, str], own: frozenset[str]
) -> None:
    """A bureau cannot give a component away (as `store.change` refuses at apply time)."""
    row = conn.execute(
        "SELECT owner_dept, maintainer_dept FROM component WHERE code = %s", (code,)
    ).fetchone()
    assert row is not None, "checked by _version"
    owner, maintainer = sets.get("owner_dept", row[0]), sets.get("maintainer_dept", row[1])
    if owner not in own and maintainer not in own:
        raise InvalidInput("owner_dept or maintainer_dept must stay one of your departments")


def _check_add(
    conn: psycopg.Connection, settings: Settings, change: Mapping[str, Any], own: frozenset[str]
) -> None:
    known = conn.execute(
        "SELECT 1 FROM component_class WHERE major = %s AND minor = %s",
        (change["major"], change["minor"]),
    ).fetchone()
    if known is None or len(change["minor"]) != settings.component_minor_digits:
        raise InvalidInput(f"no component class {change['major']}/{change['minor']}")
    if not change.get("name"):
        raise InvalidInput("a new component needs a name")
    store.attributes({"set": {k: change[k] for k in store.EDITABLE if k in change}}, own)
    owner, maintainer = change.get("owner_dept"), change.get("maintainer_dept")
    if owner and maintainer and owner not in own and maintainer not in own:
        raise InvalidInput("owner_dept or maintainer_dept must be one of your departments")


def save(
    conn: psycopg.Connection,
    *,
    import_id: str,
    account: str,
    data: bytes,
    filename: str,
    fmt: str,
    changes: list[dict[str, Any]],
    report: list[dict[str, Any]],
) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    ok = all(not r["problems"] for r in report)
    sha = hashlib.sha256(data).hexdigest()
    conn.execute(
        """INSERT INTO component_import (id, account, sha256, filename, format, rows, report, ok)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (import_id, account, sha, filename[:200], fmt, Jsonb(changes), Jsonb(report), ok),
    )
    return shown(import_id, sha, filename, ok, report, None)


def shown(
    import_id: str, sha: str, filename: str, ok: bool, report: list[dict[str, Any]], applied: Any
) -> dict[str, Any]:
    bad = [r for r in report if r["problems"]]
    return {
        "id": import_id,
        "sha256": sha,
        "filename": filename,
        "ok": ok,
        "rows": len(report),
        "problems": len(bad),
        "counts": {op: sum(1 for r in report if r["op"] == op) for op in (*store.OPS, "add")},
        "report": report,
        "applied_at": applied.isoformat() if applied else None,
    }


def load(
    conn: psycopg.Connection, import_id: str, account: str, lock: bool = False
) -> tuple[Any, ...]:
    try:
        row = conn.execute(
            "SELECT id::text, sha256, filename, ok, report, applied_at, rows FROM component_import"
            " WHERE id = %s::uuid AND account = %s" + (" FOR UPDATE" if lock else ""),
            (import_id, account),
        ).fetchone()
    except psycopg.errors.InvalidTextRepresentation:
        raise NotFound(f"no import {import_id}") from None
    if row is None:
        raise NotFound(f"no import {import_id}")
    return tuple(row)


def apply(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid,
    *,
    import_id: str,
    account: str,
    own: frozenset[str],
    home: str,
    signed_action: int | None,
) -> tuple[list[str], list[store.Point]]:
    """Apply a checked import, all or nothing (the caller's transaction); returns the codes
    changed and the points whose pictures changed. A row whose component moved on since
    the check makes the whole import 409."""
    _, _, _, ok, _, applied, changes = load(conn, import_id, account, lock=True)
    if applied is not None:
        raise store.Conflict(f"import {import_id} was applied at {applied.isoformat()}")
    if not ok:
        raise InvalidInput(f"import {import_id} has problems; fix the file and send it again")
    done: list[str] = []
    points: list[store.Point] = []
    for change in changes:
        op = change["op"]
        if op == "add":
            code, at = store.add(
                conn, settings, grid, params=change, own=own, home=home, account=account,
                signed_action=signed_action, kind="import", allow_point=True,
            )  # fmt: skip
            done.append(code)
            points.append(at)
            continue
        points += store.change(
            conn, settings, grid, code=change["code"], op=op, params=change, own=own,
            account=account, signed_action=signed_action, kind="import", allow_point=True,
        )  # fmt: skip
        done.append(change["code"])
    conn.execute(
        "UPDATE component_import SET applied_at = now(), signed_action = %s WHERE id = %s::uuid",
        (signed_action, import_id),
    )
    return done, points
