"""The organisation tree: district, streets (offices), communities, the two centres,
bureaus and their departments. Changed only through the signed `organisation_save`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import psycopg

from mapserver.cases import flow
from mapserver.errors import Conflict, InvalidInput
from mapserver.maintenance import changes

KINDS = {
    "district": "区",
    "street_office": "街道办事处",
    "community": "社区",
    "supervision_centre": "监督中心",
    "command_centre": "指挥中心",
    "bureau": "专业部门",
    "department": "科室",
    "other": "其他",
}
# What a kind may hang under (None: the root).
PARENTS: dict[str, frozenset[str | None]] = {
    "district": frozenset({None}),
    "street_office": frozenset({"district"}),
    "community": frozenset({"street_office"}),
    "supervision_centre": frozenset({"district"}),
    "command_centre": frozenset({"district"}),
    "bureau": frozenset({"district"}),
    "department": frozenset({"bureau"}),
    "other": frozenset({None, "district", "bureau", "street_office"}),
}
CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
FIELDS = frozenset({"name", "kind", "parent", "street", "active"})
_LOCK = 0x4F726773  # "Orgs": one change of the tree at a time (two moves made a cycle)


def listing(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        """SELECT o.code, o.name, o.kind, o.street_code, o.parent_code, o.active,
                  (SELECT count(*) FROM account a WHERE a.org_code = o.code)
           FROM organisation o ORDER BY o.parent_code NULLS FIRST, o.kind, o.code"""
    ).fetchall()
    return [
        {
            "code": code,
            "name": name,
            "kind": kind,
            "street": street,
            "parent": parent,
            "active": active,
            "accounts": int(n),
        }
        for code, name, kind, street, parent, active, n in rows
    ]


def tree(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The organisations nested under their parents (roots first)."""
    nodes = {o["code"]: {**o, "children": []} for o in listing(conn)}
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node["parent"]) if node["parent"] else None
        (parent["children"] if parent else roots).append(node)
    return roots


def _checked(conn: psycopg.Connection, code: str, p: Mapping[str, Any]) -> tuple[Any, ...]:
    if not CODE.match(code):
        raise InvalidInput("code: 1 to 64 letters, digits, '.', '_', '-'")
    unknown = set(p) - FIELDS
    if unknown:  # what is signed is kept: nothing rides along that is not stored
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r:.70}")
    name, kind = p.get("name"), p.get("kind")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidInput("name must be text of 1 to 200 characters")
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidInput("kind must be one of " + ", ".join(KINDS))
    held = conn.execute("SELECT active FROM organisation WHERE code = %s", (code,)).fetchone()
    # An omitted `active` keeps what stands (a retired organisation is not revived by a rename).
    parent, street = p.get("parent"), p.get("street")
    active = p.get("active", held[0] if held else True)
    if not isinstance(active, bool):
        raise InvalidInput("active must be true or false")
    if held and held[0] and not active:
        _refuse_retiring_with_open_cases(conn, code)
    parent_kind = None
    if parent is not None:
        if not isinstance(parent, str) or parent == code:
            raise InvalidInput("parent must be another organisation's code")
        row = conn.execute("SELECT kind FROM organisation WHERE code = %s", (parent,)).fetchone()
        if row is None:
            raise InvalidInput(f"parent: no organisation {parent!r}")
        parent_kind = row[0]
        seen: str | None = parent  # no cycles: the new parent may not lie below this one
        while seen is not None:
            if seen == code:
                raise InvalidInput("parent: that would put the organisation below itself")
            up = conn.execute(
                "SELECT parent_code FROM organisation WHERE code = %s", (seen,)
            ).fetchone()
            seen = up[0] if up else None
    if parent_kind not in PARENTS[kind]:
        allowed = ", ".join(sorted(k or "(none)" for k in PARENTS[kind]))
        raise InvalidInput(f"a {kind} hangs under: {allowed}")
    for child, child_kind in conn.execute(
        "SELECT code, kind FROM organisation WHERE parent_code = %s ORDER BY code", (code,)
    ).fetchall():  # a new kind keeps what hangs under it where its kind may hang
        if kind not in PARENTS[child_kind]:
            raise InvalidInput(
                f"kind: {child!r}, a {child_kind}, hangs under this organisation and may not"
                f" hang under a {kind}"
            )
    if street is not None:
        if not isinstance(street, str):
            raise InvalidInput("street must be a street code")
        if conn.execute("SELECT 1 FROM street WHERE code = %s", (street,)).fetchone() is None:
            raise InvalidInput(f"street: no street {street!r}")
    if kind in ("street_office", "community") and street is None:
        raise InvalidInput(f"a {kind} names its street")
    return name.strip(), kind, street, parent, active


def _refuse_retiring_with_open_cases(conn: psycopg.Connection, code: str) -> None:
    """A bureau retired while cases are with it would leave them with no one to dispatch
    them on: they are recalled (or finished) first."""
    row = conn.execute(
        "SELECT count(*), min(number) FROM city_case WHERE bureau = %s AND state <> ALL(%s)",
        (code, sorted(flow.FINAL)),
    ).fetchone()
    if row is not None and row[0]:
        raise Conflict(
            f"active: {row[0]} open case(s) are with this organisation (first {row[1]}):"
            " recall them before retiring it"
        )


def save(
    conn: psycopg.Connection, code: str, params: Mapping[str, Any], account: str, action_id: int
) -> dict[str, Any]:
    """Add or change an organisation (signed `org.save` on `organisation CODE`)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
    name, kind, street, parent, active = _checked(conn, code, params)
    before = conn.execute(
        "SELECT name, kind, street_code, parent_code, active FROM organisation WHERE code = %s",
        (code,),
    ).fetchone()
    try:
        conn.execute(
            "SELECT organisation_save(%s, %s, %s, %s, %s, %s, %s)",
            (action_id, code, name, kind, street, parent, active),
        )
    except psycopg.errors.InsufficientPrivilege as exc:
        from auth.policy import Forbidden

        raise Forbidden(str(exc.diag.message_primary)) from None
    after = {"name": name, "kind": kind, "street": street, "parent": parent, "active": active}
    version = changes.record(
        conn,
        "organisation",
        code,
        {
            "before": dict(zip(("name", "kind", "street", "parent", "active"), before, strict=True))
            if before
            else None,
            "after": after,
        },
        account,
        action_id,
    )
    return {"code": code, **after, "version": version}
