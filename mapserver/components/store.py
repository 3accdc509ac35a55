"""Components in PostgreSQL as their bureaus edit them: only their own departments'
components, every change under a row lock against the version the person saw (409 for the
second of two concurrent edits), new codes by the standard's rules, and the history trigger
(migration 0027) recording who changed what, when, under which signed action.

Every function works in the caller's transaction, so a change, its signed action, its
history row and the request's audit entry commit together. Clients get codes, names, states
and pixels of the finest level's pictures; never a coordinate.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import psycopg

from mapserver import class_text, codes, locales, text_limits
from mapserver.cases import place
from mapserver.errors import Conflict, InvalidInput, NotFound
from mapserver.settings import Settings
from mapserver.text_limits import MAX_PAGE
from tiles.tile_grid import TileGrid

EDITABLE = ("name", "state", "responsible_dept", "owner_dept", "maintainer_dept", "data_source")
DATA_SOURCES = ("surveyed", "topographic_map", "field_annotated", "other")
OPS = ("edit", "move", "retire")
MAX_TEXT = 200
PER_PAGE = 50

_SELECT = """SELECT c.code, c.major, c.minor, k.name, c.name, c.state, c.in_use, c.grid_code,
       c.responsible_dept, c.owner_dept, c.maintainer_dept, c.data_source, c.version,
       c.changed_at, c.retired_at, ST_X(c.geom), ST_Y(c.geom)
FROM component c JOIN class_text(%(locale)s) k
    ON k.kind = 'component' AND (k.major, k.minor) = (c.major, c.minor)"""
_OWN = "(c.owner_dept = ANY(%(own)s) OR c.maintainer_dept = ANY(%(own)s))"


class Point(NamedTuple):
    x: float
    y: float


class VersionConflict(Conflict):
    """Someone changed the component since the person looked at it (409, current version)."""

    def __init__(self, code: str, version: int):
        super().__init__(f"component {code} is now at version {version}; reload it")
        self.version = version

    @property
    def details(self) -> dict[str, object]:
        return {"version": self.version}


def departments(conn: psycopg.Connection, account: str) -> frozenset[str]:
    """The names and codes of the account's organisation and its departments (children)."""
    rows = conn.execute(
        """SELECT o.code, o.name FROM account a JOIN organisation o
               ON o.code = a.org_code OR o.parent_code = a.org_code
           WHERE a.name = %s AND o.active""",
        (account,),
    ).fetchall()
    return frozenset(v for row in rows for v in row if v)


def _shown(row: tuple[Any, ...], grid: TileGrid) -> dict[str, Any]:
    (code, major, minor, class_name, name, state, in_use, grid_code, responsible, owner,
     maintainer, source, version, changed_at, retired_at, x, y) = row  # fmt: skip
    return {
        "code": code,
        "class": {"major": major, "minor": minor, "name": class_name},
        "name": name,
        "state": state,
        "state_name": codes.STATE_NAMES[state],
        "in_use": in_use,
        "grid": grid_code,
        "responsible_dept": responsible,
        "owner_dept": owner,
        "maintainer_dept": maintainer,
        "data_source": source,
        "version": version,
        "changed_at": changed_at.isoformat() if changed_at else None,
        "retired_at": retired_at.isoformat() if retired_at else None,
        "pixel": place.pixel_of(grid, float(x), float(y))._asdict(),
    }


def listing(
    conn: psycopg.Connection,
    grid: TileGrid,
    own: frozenset[str],
    args: Mapping[str, str],
    locale: str = class_text.BASE,
) -> dict[str, Any]:
    """The asker's departments' components, filtered by state, class, grid or code prefix;
    class names in `locale`."""
    where: list[str] = [_OWN]
    values: dict[str, Any] = {"own": list(own)}
    state = args.get("state")
    if state:
        if state not in codes.COMPONENT_STATES:
            raise InvalidInput("state must be one of " + ", ".join(codes.COMPONENT_STATES))
        where.append("c.state = %(state)s")
        values["state"] = state
    for name, column in (("grid", "c.grid_code"), ("major", "c.major"), ("minor", "c.minor")):
        given = args.get(name)
        if given:
            if not given.isascii() or not given.isdigit() or len(given) > 17:
                raise InvalidInput(f"{name} must be digits")
            where.append(f"{column} = %({name})s")
            values[name] = given
    code = args.get("code")
    if code:
        if not code.isascii() or not code.isdigit() or len(code) > 17:
            raise InvalidInput("code must be digits (a prefix of a component code)")
        where.append("c.code LIKE %(code)s")
        values["code"] = code + "%"
    if args.get("retired") != "1":
        where.append("c.in_use")
    try:
        page = max(1, int(args.get("page", "1")))
    except ValueError:
        raise InvalidInput("page must be a number") from None
    if page > MAX_PAGE:
        raise InvalidInput(f"page must be at most {MAX_PAGE}")
    cond = " AND ".join(where)
    total = conn.execute(f"SELECT count(*) FROM component c WHERE {cond}", values).fetchone()  # noqa: S608
    rows = conn.execute(
        f"{_SELECT} WHERE {cond} ORDER BY c.code LIMIT {PER_PAGE} OFFSET {(page - 1) * PER_PAGE}",  # noqa: S608
        {**values, "locale": locales.get(locale).code},
    ).fetchall()
    return {
        "components": [_shown(r, grid) for r in rows],
        "total": int(total[0]) if total else 0,
        "page": page,
        "per_page": PER_PAGE,
    }


def _own_row(
    conn: psycopg.Connection,
    code: str,
    own: frozenset[str],
    lock: bool = False,
    locale: str = class_text.BASE,
) -> tuple[Any, ...]:
    if not isinstance(code, str) or not code.isascii() or not code.isdigit() or len(code) > 17:
        raise NotFound("no such component of your departments")
    row = conn.execute(
        f"{_SELECT} WHERE c.code = %(code)s AND {_OWN}" + (" FOR UPDATE OF c" if lock else ""),  # noqa: S608
        {"code": code, "own": list(own), "locale": locales.get(locale).code},
    ).fetchone()
    if row is None:  # the same answer for another bureau's component and a missing one
        raise NotFound(f"no component {code} of your departments")
    return tuple(row)


def detail(
    conn: psycopg.Connection,
    grid: TileGrid,
    code: str,
    own: frozenset[str],
    locale: str = class_text.BASE,
) -> dict[str, Any]:
    """One component with its history (its class's name in `locale`)."""
    shown = _shown(_own_row(conn, code, own, locale=locale), grid)
    shown["history"] = history(conn, grid, code)
    return shown


def cases_of(conn: psycopg.Connection, code: str, bureau: str | None) -> list[dict[str, Any]]:
    """The cases about a component that `bureau` handles (every bureau's: None), newest
    first; the cases are the workflow's, kept where the gateway keeps them."""
    cases = conn.execute(
        """SELECT number, state, created_at FROM city_case WHERE component_code = %s
           AND (%s::text IS NULL OR bureau = %s) ORDER BY created_at DESC LIMIT 50""",
        (code, bureau, bureau),
    ).fetchall()
    return [
        {"number": n, "state": s, "created_at": at.isoformat(), "href": f"/inbox/{n}"}
        for n, s, at in cases
    ]


def history(conn: psycopg.Connection, grid: TileGrid, code: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT version, change, valid_from, valid_to, name, state, in_use, grid_code,
                  responsible_dept, owner_dept, maintainer_dept, actor, signed_action,
                  ST_X(geom), ST_Y(geom)
           FROM component_history WHERE code = %s ORDER BY valid_from, id""",
        (code,),
    ).fetchall()
    return [_version(r, grid) for r in rows]


def _version(r: tuple[Any, ...], grid: TileGrid) -> dict[str, Any]:
    return {
        "version": r[0],
        "change": r[1],
        "valid_from": r[2].isoformat(),
        "valid_to": r[3].isoformat() if r[3] else None,
        "name": r[4],
        "state": r[5],
        "state_name": codes.STATE_NAMES.get(r[5], r[5]),
        "in_use": r[6],
        "grid": r[7],
        "responsible_dept": r[8],
        "owner_dept": r[9],
        "maintainer_dept": r[10],
        "actor": r[11],
        "signed_action": r[12],
        "pixel": place.pixel_of(grid, float(r[13]), float(r[14]))._asdict(),
    }


def as_of_time(text: str) -> dt.datetime:
    """A person's `as_of`: an ISO 8601 date or time, UTC where it names no zone."""
    try:
        when = dt.datetime.fromisoformat(text[:40])
    except ValueError:
        raise InvalidInput("as_of must be an ISO 8601 date or time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def as_of(
    conn: psycopg.Connection, grid: TileGrid, code: str, own: frozenset[str], when: dt.datetime
) -> dict[str, Any]:
    """The component as it stood at `when` (404 before it existed)."""
    _own_row(conn, code, own)
    row = conn.execute(
        """SELECT version, change, valid_from, valid_to, name, state, in_use, grid_code,
                  responsible_dept, owner_dept, maintainer_dept, actor, signed_action,
                  ST_X(geom), ST_Y(geom)
           FROM component_history WHERE code = %s AND valid_from <= %s
             AND (valid_to IS NULL OR valid_to > %s)""",
        (code, when, when),
    ).fetchone()
    if row is None:
        raise NotFound(f"component {code} did not exist at {when.isoformat()}")
    return {"code": code, "as_of": when.isoformat(), **_version(tuple(row), grid)}


def _mark(conn: psycopg.Connection, account: str, action_id: int | None, change: str) -> None:
    """Name the actor, signed action and kind of change for the history trigger (this
    transaction only)."""
    conn.execute(
        "SELECT set_config('citygrid.actor', %s, true),"
        " set_config('citygrid.signed_action', %s, true),"
        " set_config('citygrid.component_change', %s, true)",
        (account, "" if action_id is None else str(action_id), change),
    )


def attributes(params: Mapping[str, Any], own: frozenset[str]) -> dict[str, str]:
    """The attribute changes a person signed (`set`), checked."""
    given = params.get("set", {})
    if not isinstance(given, Mapping):
        raise InvalidInput("set must be an object of attribute changes")
    unknown = set(given) - set(EDITABLE)
    if unknown:
        raise InvalidInput(f"set: unknown attribute {sorted(unknown)[0]!r}")
    out: dict[str, str] = {}
    for name, value in given.items():
        if not isinstance(value, str):
            raise InvalidInput(f"set.{name} must be text")
        value = value.strip()
        text_limits.Limit(f"set.{name}", MAX_TEXT).check(value)
        if name == "state" and value not in codes.COMPONENT_STATES:
            raise InvalidInput("set.state must be one of " + ", ".join(codes.COMPONENT_STATES))
        if name == "data_source" and value not in DATA_SOURCES:
            raise InvalidInput("set.data_source must be one of " + ", ".join(DATA_SOURCES))
        if not value:  # a name or a department left blank
            raise InvalidInput(f"set.{name} must not be empty")
        out[name] = value
    return out


def where_to(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid,
    spec: Any,
    allow_point: bool = False,
) -> tuple[Point, str]:
    """A new place from a pixel of the pictures or a unit grid code (never a coordinate
    from outside; a point only from a bulk file inside): the point and its unit grid."""
    kinds = {"pixel", "grid"} | ({"point"} if allow_point else set())
    if not isinstance(spec, Mapping) or set(spec) - kinds or len(spec) != 1:
        raise InvalidInput("place must be {pixel: {level, x, y, col, row}} or {grid: CODE}")
    try:
        found = place.resolve(conn, settings, grid, spec, allow_point=allow_point)
    except NotFound as exc:
        raise InvalidInput(f"place: {exc.message}") from None
    assert found.x is not None and found.y is not None  # resolved where the map is
    return Point(found.x, found.y), found.where.grid_code


def retire_reason(params: Mapping[str, Any]) -> str:
    """A retirement's reason, checked (a bulk file's check and its apply refuse the same)."""
    reason = params.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("the field 'reason' is required")
    text_limits.Limit("reason", MAX_TEXT).check(reason)
    return reason


def _check_version(code: str, params: Mapping[str, Any], current: int) -> None:
    seen = params.get("version")
    if isinstance(seen, bool) or not isinstance(seen, int):
        raise InvalidInput("version (the version the change was made from) must be a number")
    if seen != current:
        raise VersionConflict(code, current)


def change(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid,
    *,
    code: str,
    op: str,
    params: Mapping[str, Any],
    own: frozenset[str],
    account: str,
    signed_action: int | None,
    kind: str | None = None,
    allow_point: bool = False,
) -> list[Point]:
    """Apply `op` (edit, move or retire) to one of the bureau's components; returns the
    points whose pictures changed (before and after)."""
    if op not in OPS:
        raise NotFound(f"no component operation {op!r}")
    row = _own_row(conn, code, own, lock=True)
    version, in_use, before = int(row[12]), bool(row[6]), Point(float(row[15]), float(row[16]))
    _check_version(code, params, version)
    if not in_use:
        raise Conflict(f"component {code} is retired")
    sets: dict[str, Any] = {}
    after = before
    if op == "edit":
        sets = attributes(params, own)
        if not sets:
            raise InvalidInput("set names no attribute to change")
        owner = sets.get("owner_dept", row[9])
        maintainer = sets.get("maintainer_dept", row[10])
        if owner not in own and maintainer not in own:
            raise InvalidInput("owner_dept or maintainer_dept must stay one of your departments")
    elif op == "move":
        after, grid_code = where_to(conn, settings, grid, params.get("place"), allow_point)
        sets["grid_code"] = grid_code
    else:
        retire_reason(params)
        sets["in_use"] = False
    _mark(conn, account, signed_action, kind or op)
    assignments = [f"{name} = %({name})s" for name in sets]
    values: dict[str, Any] = {**sets, "code": code, "x": after.x, "y": after.y}
    extra = ", retired_at = now()" if op == "retire" else ""
    if op == "move":
        extra += f", geom = ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {int(settings.srid)})"
    conn.execute(
        f"UPDATE component SET {', '.join(assignments)}{extra}, version = version + 1,"  # noqa: S608 - fixed names
        " changed_at = now(), changed_on = current_date WHERE code = %(code)s",
        values,
    )
    return [before] if after == before else [before, after]


def add(
    conn: psycopg.Connection,
    settings: Settings,
    grid: TileGrid,
    *,
    params: Mapping[str, Any],
    own: frozenset[str],
    home: str,
    account: str,
    signed_action: int | None,
    kind: str = "add",
    allow_point: bool = False,
) -> tuple[str, Point]:
    """A new component: its code is the district's, its class's, and the class's next
    serial; owner and maintainer default to the bureau (`home`). Returns code and point."""
    major, minor = params.get("major"), params.get("minor")
    if not isinstance(major, str) or not isinstance(minor, str):
        raise InvalidInput("a new component names its class: major and minor")
    known = conn.execute(
        "SELECT 1 FROM component_class WHERE major = %s AND minor = %s", (major, minor)
    ).fetchone()
    if known is None or len(minor) != settings.component_minor_digits:
        raise InvalidInput(f"no component class {major}/{minor}")
    attrs = attributes({"set": {k: params[k] for k in EDITABLE if k in params}}, own)
    if not attrs.get("name"):
        raise InvalidInput("the field 'name' is required")
    attrs.setdefault("owner_dept", home)
    attrs.setdefault("maintainer_dept", home)
    attrs.setdefault("responsible_dept", home)
    if attrs["owner_dept"] not in own and attrs["maintainer_dept"] not in own:
        raise InvalidInput("owner_dept or maintainer_dept must be one of your departments")
    at, grid_code = where_to(conn, settings, grid, params.get("place"), allow_point)
    prefix = settings.district_code + major + minor
    serial = conn.execute(  # past the counter and past any code imported since
        """WITH m AS (SELECT coalesce(max(right(code, 6)::integer), 0) AS top FROM component
                      WHERE left(code, %(n)s) = %(prefix)s AND length(code) = %(n)s + 6)
           INSERT INTO component_counter (district, major, minor, last)
           SELECT %(district)s, %(major)s, %(minor)s, top + 1 FROM m
           ON CONFLICT (district, major, minor) DO UPDATE
               SET last = GREATEST(component_counter.last, EXCLUDED.last - 1) + 1
           RETURNING last""",
        {
            "n": len(prefix),
            "prefix": prefix,
            "district": settings.district_code,
            "major": major,
            "minor": minor,
        },
    ).fetchone()
    assert serial is not None
    code = codes.component_code(settings.district_code, codes.ClassCode(major, minor), serial[0])
    _mark(conn, account, signed_action, kind)
    conn.execute(
        f"""INSERT INTO component (code, name, state, responsible_dept, owner_dept,
               maintainer_dept, grid_code, data_source, geom, origin)
           VALUES (%(code)s, %(name)s, %(state)s, %(responsible_dept)s, %(owner_dept)s,
               %(maintainer_dept)s, %(grid)s, %(data_source)s,
               ST_SetSRID(ST_MakePoint(%(x)s, %(y)s), {int(settings.srid)}), 'online')""",  # noqa: S608
        {
            "state": "intact",
            "data_source": "field_annotated",
            **attrs,
            "code": code,
            "grid": grid_code,
            "x": at.x,
            "y": at.y,
        },
    )
    return code, at


def points_of(conn: psycopg.Connection, codes_: Iterable[str]) -> list[Point]:
    rows = conn.execute(
        "SELECT ST_X(geom), ST_Y(geom) FROM component WHERE code = ANY(%s)", (list(codes_),)
    ).fetchall()
    return [Point(float(x), float(y)) for x, y in rows]
