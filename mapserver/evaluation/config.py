"""Versioned scoring configuration: each signed change is a new row, never an update; the
newest row is in force (version 0, the built-in default, until the first change)."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from mapserver.errors import Conflict, InvalidInput, NotFound
from mapserver.evaluation import scoring


class Version(NamedTuple):
    version: int
    config: scoring.Config
    account: str | None
    signed_action: int | None
    created_at: dt.datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "config": self.config.as_json(),
            "account": self.account,
            "signed_action": self.signed_action,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


DEFAULT = Version(0, scoring.parse(scoring.DEFAULT), None, None, None)


def current(conn: psycopg.Connection, version: int | None = None) -> Version:
    """The configuration in force, or a given version of it."""
    if version == 0:
        return DEFAULT
    where = "WHERE version = %s" if version is not None else "ORDER BY version DESC LIMIT 1"
    row = conn.execute(
        "SELECT version, config, account, signed_action, created_at FROM eval_config "  # noqa: S608
        + where,
        (version,) if version is not None else (),
    ).fetchone()
    if row is None:
        if version is not None:
            raise NotFound(f"no evaluation configuration version {version}")
        return DEFAULT
    # as stored: a version kept before a check was added is still read
    return Version(int(row[0]), scoring.parse(row[1], ranges=False), row[2], row[3], row[4])


def history(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT version, account, signed_action, created_at FROM eval_config ORDER BY version"
    ).fetchall()
    return [
        {"version": v, "account": a, "signed_action": s, "created_at": t.isoformat()}
        for v, a, s, t in rows
    ]


def save(
    conn: psycopg.Connection,
    raw: Any,
    based_on: Any,
    account: str,
    signed_action: int | None,
) -> Version:
    """Store a new version. `based_on` is the version the person changed (and signed): if
    another change came first, 409 with the version now in force."""
    parsed = scoring.parse(raw)
    if isinstance(based_on, bool) or not isinstance(based_on, int) or based_on < 0:
        raise InvalidInput("based_on must be the version number the change starts from")
    now = current(conn)
    if now.version != based_on:
        raise Conflict(
            f"the configuration is now at version {now.version}, not {based_on}; reload it"
        )
    try:  # two changes from one version: the version's primary key lets one win
        row = conn.execute(
            """INSERT INTO eval_config (version, config, account, signed_action)
               VALUES (%s, %s, %s, %s) RETURNING created_at""",
            (based_on + 1, Jsonb(parsed.as_json()), account, signed_action),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"the configuration moved past version {based_on}; reload it") from None
    assert row is not None
    return Version(based_on + 1, parsed, account, signed_action, row[0])
