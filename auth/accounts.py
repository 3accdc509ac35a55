"""Organisations, accounts and their roles (the gateway attaches certificates to accounts).

The serving role adds and disables accounts only through the database functions
account_create / account_disable (migration 0007); granting, taking and re-enabling are
the owner's acts (command line). Whoever changes an account or its roles, the database
records it in the hash-chained change register, and refuses incompatible roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import psycopg

from auth.policy import INCOMPATIBLE_ROLES
from mapserver import text_limits
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
    "partner",
    "screen",
    "exchange_peer",
)


class Account(NamedTuple):
    id: int
    name: str
    display_name: str
    org_code: str | None
    active: bool
    roles: tuple[str, ...]


class SeparationOfDuties(Conflict):
    """Two roles that one account may never hold together (auth.policy.INCOMPATIBLE_ROLES)."""

    code = "separation_of_duties"


class LastAdministrator(Conflict):
    """The change would leave the install no active account holding `admin` (migration 0047)."""

    code = "last_administrator"


def incompatible_pair(roles: Iterable[str]) -> tuple[str, str] | None:
    """The first pair of `roles` that INCOMPATIBLE_ROLES forbids together, sorted; or None."""
    held = set(roles)
    for pair in sorted(sorted(p) for p in INCOMPATIBLE_ROLES):
        if set(pair) <= held:
            return pair[0], pair[1]
    return None


def _check_separation(roles: Iterable[str]) -> None:
    pair = incompatible_pair(roles)
    if pair:
        raise SeparationOfDuties(
            f"separation of duties: roles {pair[0]} and {pair[1]} may not be held by one account"
        )


def raise_refusal(exc: psycopg.errors.CheckViolation) -> None:
    """Re-raise the database's refusals of a change of roles as what they are: separation of
    duties, or the install's last administrator."""
    refusal = {
        "separation_of_duties": SeparationOfDuties,
        "last_administrator": LastAdministrator,
    }.get(exc.diag.constraint_name or "")
    if refusal is not None:
        raise refusal(str(exc.diag.message_primary)) from None


def act_as(conn: psycopg.Connection, actor: str) -> None:
    """Name who acts in this transaction; the change register records it beside the role."""
    conn.execute("SELECT set_config('citygrid.actor', %s, true)", (actor,))


def _check_role(role: str) -> None:
    text_limits.ROLE.check(role)
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
    text_limits.ACCOUNT_NAME.check(name)
    text_limits.DISPLAY_NAME.check(display_name)
    if org_code is not None:
        text_limits.ORG_CODE.check(org_code)
    for role in roles:
        _check_role(role)
    _check_separation(roles)
    if org_code is not None:
        org = conn.execute("SELECT 1 FROM organisation WHERE code = %s", (org_code,)).fetchone()
        if org is None:
            raise InvalidInput(f"no organisation {org_code!r}")
    try:
        with conn.transaction():
            conn.execute(
                "SELECT account_create(%s, %s, %s, %s)", (name, display_name, org_code, roles)
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"account {name!r} exists") from None
    except psycopg.errors.CheckViolation as exc:
        raise_refusal(exc)
        raise InvalidInput(
            f"bad account name {name!r}: lower-case letters, digits, '.', '_', '-'"
        ) from None
    return get(conn, name)


def set_active(conn: psycopg.Connection, name: str, active: bool) -> Account:
    """Disabling goes through account_disable (the serving role may); enabling again is an
    UPDATE that only the owner may make. An account already so is 409: a second signed act
    would record a change that was none."""
    if get(conn, name).active == active:
        raise Conflict(f"account {name!r} is already {'active' if active else 'disabled'}")
    if active:
        done = conn.execute(
            "UPDATE account SET active = true, disabled_at = NULL WHERE name = %s", (name,)
        ).rowcount
    else:
        try:
            with conn.transaction():
                row = conn.execute("SELECT account_disable(%s)", (name,)).fetchone()
        except psycopg.errors.CheckViolation as exc:
            raise_refusal(exc)
            raise
        done = 1 if row and row[0] else 0
    if done == 0:
        raise NotFound(f"no account {name!r}")
    return get(conn, name)


def grant(conn: psycopg.Connection, name: str, role: str) -> Account:
    _check_role(role)
    account = get(conn, name)
    _check_separation([*account.roles, role])
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO account_role (account_id, role) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                (account.id, role),
            )
    except psycopg.errors.CheckViolation as exc:
        raise_refusal(exc)
        raise
    return get(conn, name)


def revoke_role(conn: psycopg.Connection, name: str, role: str) -> Account:
    _check_role(role)
    account = get(conn, name)
    if role not in account.roles:
        raise InvalidInput(f"account {name!r} does not have role {role!r}")
    try:
        with conn.transaction():
            conn.execute(
                "DELETE FROM account_role WHERE account_id = %s AND role = %s", (account.id, role)
            )
    except psycopg.errors.CheckViolation as exc:
        raise_refusal(exc)
        raise
    return get(conn, name)
