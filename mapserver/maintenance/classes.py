"""The class tables (部件 / 事件 classes) with their filing standards, responsible
departments and handling limits, and the stage limits: changed by signed actions, each a
new version; a change of a limit opens a new limits version (mapserver.maintenance.limits).

A class's texts are shown and edited in the install's language (mapserver.class_text): a
zh-CN install edits the class table itself, another locale its own row of `class_label`,
so an administrator's name wins over the shipped translation in the locale it was edited in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from mapserver import class_text, locales
from mapserver.cases import calendar
from mapserver.errors import InvalidInput, NotFound
from mapserver.maintenance import changes, limits

KINDS = {"event": "event_class", "component": "component_class"}
TEXTS = {
    "event": ("name", "department", "filing_condition", "closing_condition"),
    "component": ("name", "department", "filing_condition"),
}
STAGES = ("accept", "file", "dispatch", "handle", "forward", "check", "order_reply")
MAX_TEXT = 2000

LIMIT_RANGE = (0.1, 1000)  # of the limit's unit (working hours, working days...)
LIMIT_FIELDS = frozenset({"kind", "major", "minor", "amount", "unit", "remove"})


def _table(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidInput("kind must be event or component")
    return KINDS[kind]


def listing(
    conn: psycopg.Connection, kind: str, locale: str = class_text.BASE
) -> list[dict[str, Any]]:
    """The classes of `kind` with their texts in `locale`."""
    table = _table(kind)
    rows = conn.execute(
        sql.SQL(
            "SELECT b.major, b.minor, t.major_name, t.name, b.department, t.filing_condition, "
            "t.closing_condition, b.time_limit, b.time_unit FROM {} b "
            "JOIN class_text(%s) t ON (t.kind, t.major, t.minor) = (%s, b.major, b.minor) "
            "ORDER BY b.major, b.minor"
        ).format(sql.Identifier(table)),
        (locales.get(locale).code, kind),
    ).fetchall()
    return [
        {
            "kind": kind,
            "major": a,
            "minor": b,
            "major_name": mn,
            "name": n,
            "department": d,
            "filing_condition": f,
            "closing_condition": c,
            "time_limit": float(t),
            "time_unit": u,
        }
        for a, b, mn, n, d, f, c, t, u in rows
    ]


def _limit(params: Mapping[str, Any]) -> tuple[float, str]:
    amount, unit = (
        params.get("time_limit", params.get("amount")),
        params.get("time_unit", params.get("unit")),
    )
    if unit not in calendar.UNITS:
        raise InvalidInput("the unit must be one of " + ", ".join(calendar.UNITS))
    return checked_amount(amount), str(unit)


def checked_amount(amount: Any) -> float:
    """A time limit's amount: at least a tenth of its unit (a limit of 1e-300 hours was taken,
    and made every case of the class late at once), at most 1000."""
    low, high = LIMIT_RANGE
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not low <= amount <= high:
        raise InvalidInput(f"the time limit must be a number from {low:g} to {high:g}")
    return float(amount)


def update_class(
    conn: psycopg.Connection,
    kind: str,
    major: str,
    minor: str,
    params: Mapping[str, Any],
    account: str,
    action_id: int,
    locale: str = class_text.BASE,
) -> dict[str, Any]:
    """Change a class's texts (as written in `locale`) and/or handling limit (signed
    `class.update`)."""
    table = _table(kind)
    now = {c["minor"]: c for c in listing(conn, kind, locale) if c["major"] == major}.get(minor)
    if now is None:
        raise NotFound(f"no {kind} class {major}/{minor}")
    sets: dict[str, Any] = {}
    for field in TEXTS[kind]:
        if field in params:
            value = params[field]
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise InvalidInput(f"{field} must be text of at most {MAX_TEXT} characters")
            if field == "name" and not value.strip():
                raise InvalidInput("name may not be empty")
            sets[field] = value.strip()
    if "time_limit" in params or "time_unit" in params:
        sets["time_limit"], sets["time_unit"] = _limit(
            {"time_limit": params.get("time_limit", now["time_limit"]),
             "time_unit": params.get("time_unit", now["time_unit"])}
        )  # fmt: skip
    unknown = set(params) - set(TEXTS[kind]) - {"time_limit", "time_unit"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r}")
    if not sets:
        raise InvalidInput("nothing to change")
    limit_changed = ("time_limit" in sets and sets["time_limit"] != now["time_limit"]) or (
        "time_unit" in sets and sets["time_unit"] != now["time_unit"]
    )
    next_version = limits.supersede(conn) if limit_changed else None
    labelled = {} if class_text.in_class_table(locale) else {
        k: v for k, v in sets.items() if k in class_text.TEXTS
    }  # fmt: skip
    if labelled:
        _label(conn, kind, major, minor, locales.get(locale).code, labelled)
    own = {k: v for k, v in sets.items() if k not in labelled}
    if own:
        conn.execute(
            sql.SQL("UPDATE {} SET {} WHERE major = %s AND minor = %s").format(
                sql.Identifier(table),
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v))
                    for k, v in own.items()
                ),
            ),
            (major, minor),
        )
    change = {"before": {k: now[k] for k in sets}, "after": sets}
    version = changes.record(
        conn, "limit" if limit_changed else "class", f"{kind}/{major}/{minor}", change, account,
        action_id,
    )  # fmt: skip
    if next_version is not None:
        limits.open_version(conn, next_version, version)
    return {"kind": kind, "major": major, "minor": minor, **sets, "version": version,
            "limits_version": next_version}  # fmt: skip


def _label(
    conn: psycopg.Connection,
    kind: str,
    major: str,
    minor: str,
    locale: str,
    texts: Mapping[str, str],
) -> None:
    """Write a class's texts in `locale` (not zh-CN) to its `class_label` row."""
    names = [sql.Identifier(k) for k in texts]
    conn.execute(
        sql.SQL(
            "INSERT INTO class_label (kind, major, minor, locale, {}) VALUES (%s, %s, %s, %s, {})"
            " ON CONFLICT (kind, major, minor, locale) DO UPDATE SET {}"
        ).format(
            sql.SQL(", ").join(names),
            sql.SQL(", ").join(sql.Placeholder() * len(texts)),
            sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(n) for n in names),
        ),
        (kind, major, minor, locale, *texts.values()),
    )


def stage_limits(conn: psycopg.Connection) -> dict[str, Any]:
    return {
        "stages": [
            {"stage": s, "amount": float(a), "unit": u}
            for s, a, u in conn.execute(
                "SELECT stage, amount, unit FROM case_stage_limit ORDER BY stage"
            ).fetchall()
        ],
        "overrides": [
            {"kind": k, "major": a, "minor": b, "stage": s, "amount": float(n), "unit": u}
            for k, a, b, s, n, u in conn.execute(
                "SELECT kind, major, minor, stage, amount, unit FROM case_stage_class_limit"
                " ORDER BY kind, major, minor, stage"
            ).fetchall()
        ],
        "version": limits.current_version(conn),
        "versions": limits.history(conn),
    }


def set_limit(
    conn: psycopg.Connection, stage: str, params: Mapping[str, Any], account: str, action_id: int
) -> dict[str, Any]:
    """A stage's default limit, or a class's override of it (`kind`, `major`, `minor`), or
    `remove: true` to drop an override (signed `limit.set` on `limit STAGE`)."""
    if stage not in STAGES:
        raise InvalidInput("stage must be one of " + ", ".join(STAGES))
    unknown = set(params) - LIMIT_FIELDS
    if unknown:  # what is signed is kept: nothing rides along that is not stored
        raise InvalidInput(f"unknown field {sorted(unknown)[0]!r:.70}")
    kind = params.get("kind")
    remove = params.get("remove") is True
    if kind is not None:
        major, minor = params.get("major"), params.get("minor")
        if not isinstance(major, str) or not isinstance(minor, str):
            raise InvalidInput("a class override names major and minor")
        if not any(c["minor"] == minor and c["major"] == major for c in listing(conn, kind)):
            raise NotFound(f"no {kind} class {major}/{minor}")
    elif remove:
        raise InvalidInput("only a class override can be removed")
    amount, unit = (0.0, "") if remove else _limit(params)
    next_version = limits.supersede(conn)
    if kind is None:
        conn.execute(
            "UPDATE case_stage_limit SET amount = %s, unit = %s WHERE stage = %s",
            (amount, unit, stage),
        )
        subject = f"stage {stage}"
    elif remove:
        done = conn.execute(
            "DELETE FROM case_stage_class_limit WHERE (kind, major, minor, stage) = (%s,%s,%s,%s)",
            (kind, params["major"], params["minor"], stage),
        ).rowcount
        if not done:
            raise NotFound("no such override")
        subject = f"{kind}/{params['major']}/{params['minor']} {stage}"
    else:
        conn.execute(
            """INSERT INTO case_stage_class_limit (kind, major, minor, stage, amount, unit)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (kind, major, minor, stage)
               DO UPDATE SET amount = excluded.amount, unit = excluded.unit""",
            (kind, params["major"], params["minor"], stage, amount, unit),
        )
        subject = f"{kind}/{params['major']}/{params['minor']} {stage}"
    change = {"stage": stage, "remove": remove} if remove else {
        "stage": stage, "amount": amount, "unit": unit
    }  # fmt: skip
    if kind is not None:
        change.update(kind=kind, major=params["major"], minor=params["minor"])
    change_id = changes.record(conn, "limit", subject, change, account, action_id)
    limits.open_version(conn, next_version, change_id)
    return {**change, "limits_version": next_version, "version": change_id}
