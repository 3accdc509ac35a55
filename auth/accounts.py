"""Organisations, accounts and their roles (the gateway attaches certificates to accounts)."""

from __future__ import annotations

from typing import NamedTuple

import psycopg

from mapserver.errors import Conflict, InvalidInput, NotFound

ROLES = (
    "viewer",
    "inspector",
    "operator",
    "shift_leader",
    "dispatcher",
    "bureau_handler",
    "street_supervisor",
    "leader",
    "security_officer",
    "admin",
)


class Account(NamedTuple):
    id: int
    name: str
    display_name: str
    org_code: str | None
    active: bool
    roles: tuple[str, ...]


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def get(conn: psycopg.Connection, name: str) -> Account:
    row = conn.execute(
        """SELECT a.id, a.name, a.display_name, a.org_code, a.active,
                  coalesce(array_agg(r.role ORDER BY r.role) FILTER (WHERE r.role IS NOT NULL),
                           '{}')
           FROM account a LEFT JOIN account_role r ON r.account_id = a.id
           WHERE a.name = %s GROUP BY a.id""",
        (name,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no account {name!r}")
    return Account(row[0], row[1], row[2], row[3], row[4], tuple(row[5]))


def add(
    conn: psycopg.Connection,
    name: str,
    roles: list[str],
    org_code: str | None = None,
    display_name: str = "",
) -> Account:
    for role in roles:
        _check_role(role)
    if org_code is not None:
        org = conn.execute("SELECT 1 FROM organisation WHERE code = %s", (org_code,)).fetchone()
        if org is None:
            raise InvalidInput(f"no organisation {org_code!r}")
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO account (name, display_name, org_code) VALUES (%s, %s, %s) "
                "RETURNING id",
                (name, display_name, org_code),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"account {name!r} exists") from None
    except psycopg.errors.CheckViolation:
        raise InvalidInput(
            f"bad account name {name!r}: lower-case letters, digits, '.', '_', '-'"
        ) from None
    assert row is not None
    for role in roles:
        conn.execute(
            "INSERT INTO account_role (account_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (row[0], role),
        )
    return get(conn, name)


def set_active(conn: psycopg.Connection, name: str, active: bool) -> Account:
    done = conn.execute(
        "UPDATE account SET active = %s, disabled_at = CASE WHEN %s THEN NULL ELSE now() END "
        "WHERE name = %s",
        (active, active, name),
    )
    if done.rowcount == 0:
        raise NotFound(f"no account {name!r}")
    return get(conn, name)


def grant(conn: psycopg.Connection, name: str, role: str) -> Account:
    _check_role(role)
    account = get(conn, name)
    conn.execute(
        "INSERT INTO account_role (account_id, role) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (account.id, role),
    )
    return get(conn, name)


def revoke_role(conn: psycopg.Connection, name: str, role: str) -> Account:
    _check_role(role)
    account = get(conn, name)
    if role not in account.roles:
        raise InvalidInput(f"account {name!r} does not have role {role!r}")
    conn.execute("DELETE FROM account_role WHERE account_id = %s AND role = %s", (account.id, role))
    return get(conn, name)
