"""Accounts for administrators in the browser: list and search, and the signed acts the
serving role may only make through the database's signed-change functions (migration
0026): enable again, grant a role, take a role. Disabling, adding and revoking a
certificate are auth.accounts / auth.certs acts (mapserver.admin_views)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from auth import accounts
from auth.policy import Forbidden
from mapserver.errors import Conflict, InvalidInput

MAX_RESULTS = 200


def search(conn: psycopg.Connection, args: Mapping[str, str]) -> dict[str, Any]:
    """Accounts whose name, display name or organisation contains `q`; `role` and
    `active` (true/false) narrow it. At most MAX_RESULTS, by name."""
    unknown = set(args) - {"q", "role", "active"}
    if unknown:
        raise InvalidInput(f"unknown filter {sorted(unknown)[0]!r}")
    q = args.get("q", "")
    if len(q) > 64:
        raise InvalidInput("q is at most 64 characters")
    role = args.get("role") or None
    if role is not None and role not in accounts.ROLES:
        raise InvalidInput(f"unknown role {role!r}")
    active = args.get("active")
    if active not in (None, "", "true", "false"):
        raise InvalidInput("active must be true or false")
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute(
        """SELECT a.name, a.display_name, a.org_code, o.name, a.active, a.created_at,
                  a.disabled_at,
                  coalesce(array_agg(r.role ORDER BY r.role) FILTER (WHERE r.role IS NOT NULL),
                           '{}'),
                  (SELECT count(*) FROM certificate c
                   WHERE c.account_id = a.id AND c.revoked_at IS NULL AND c.not_after > now())
           FROM account a LEFT JOIN account_role r ON r.account_id = a.id
           LEFT JOIN organisation o ON o.code = a.org_code
           WHERE (a.name ILIKE %(p)s OR a.display_name ILIKE %(p)s OR a.org_code ILIKE %(p)s
                  OR o.name ILIKE %(p)s)
             AND (%(active)s::boolean IS NULL OR a.active = %(active)s::boolean)
           GROUP BY a.id, o.name
           HAVING %(role)s::text IS NULL OR %(role)s = ANY(array_agg(r.role))
           ORDER BY a.name LIMIT %(limit)s""",
        {
            "p": pattern,
            "active": None if not active else active == "true",
            "role": role,
            "limit": MAX_RESULTS + 1,
        },
    ).fetchall()
    return {
        "accounts": [
            {
                "name": n,
                "display_name": d,
                "org": org,
                "org_name": org_name,
                "active": act,
                "created_at": made.isoformat(),
                "disabled_at": off.isoformat() if off else None,
                "roles": list(roles),
                "valid_certificates": int(certs),
            }
            for n, d, org, org_name, act, made, off, roles, certs in rows[:MAX_RESULTS]
        ],
        "truncated": len(rows) > MAX_RESULTS,
        "roles": list(accounts.ROLES),
    }


def detail(conn: psycopg.Connection, name: str) -> dict[str, Any]:
    account = accounts.get(conn, name)
    certs = conn.execute(
        """SELECT serial, kind, subject, not_before, not_after, issued_at, revoked_at,
                  revocation_reason
           FROM certificate WHERE account_id = %s ORDER BY issued_at DESC""",
        (account.id,),
    ).fetchall()
    return {
        "name": account.name,
        "display_name": account.display_name,
        "org": account.org_code,
        "active": account.active,
        "roles": list(account.roles),
        "certificates": [
            {
                "serial": s,
                "kind": k,
                "subject": subj,
                "not_before": nb.isoformat(),
                "not_after": na.isoformat(),
                "issued_at": at.isoformat(),
                "revoked_at": r.isoformat() if r else None,
                "revocation_reason": why,
            }
            for s, k, subj, nb, na, at, r, why in certs
        ],
    }


def _signed_call(conn: psycopg.Connection, query: str, args: tuple[Any, ...]) -> bool:
    try:
        with conn.transaction():
            row = conn.execute(query, args).fetchone()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise Forbidden(str(exc.diag.message_primary)) from None
    except psycopg.errors.CheckViolation as exc:
        accounts.raise_refusal(exc)
        raise
    return bool(row and row[0])


def enrol_code(conn: psycopg.Connection, name: str, hours: int, action_id: int) -> str:
    """A one-time code for NAME to enrol a browser signing key (only its hash is kept)."""
    from auth import enrol

    if not 1 <= hours <= 14 * 24:
        raise InvalidInput("hours must be a whole number from 1 to 336")
    account = accounts.get(conn, name)
    if not account.active:
        raise InvalidInput(f"account {name!r} is disabled")
    code = enrol.new_code()
    query = "SELECT enrolment_code_issue_signed(%s, %s, %s, make_interval(hours => %s))"
    _signed_call(conn, query, (action_id, name, enrol.code_hash(code), hours))
    return code


def enable(conn: psycopg.Connection, name: str, action_id: int) -> accounts.Account:
    if accounts.get(conn, name).active:  # 404 first; an act that changes nothing is none
        raise Conflict(f"account {name!r} is already active")
    _signed_call(conn, "SELECT account_enable_signed(%s, %s)", (action_id, name))
    return accounts.get(conn, name)


def grant(conn: psycopg.Connection, name: str, role: str, action_id: int) -> accounts.Account:
    if role not in accounts.ROLES:
        raise InvalidInput(f"unknown role {role!r}; roles: {', '.join(accounts.ROLES)}")
    account = accounts.get(conn, name)
    pair = accounts.incompatible_pair([*account.roles, role])
    if pair:
        raise accounts.SeparationOfDuties(
            f"separation of duties: roles {pair[0]} and {pair[1]} may not be held by one account"
        )
    _signed_call(conn, "SELECT account_role_grant_signed(%s, %s, %s)", (action_id, name, role))
    return accounts.get(conn, name)


def revoke_role(conn: psycopg.Connection, name: str, role: str, action_id: int) -> accounts.Account:
    account = accounts.get(conn, name)
    if role not in account.roles:
        raise InvalidInput(f"account {name!r} does not have role {role!r}")
    _signed_call(conn, "SELECT account_role_revoke_signed(%s, %s, %s)", (action_id, name, role))
    return accounts.get(conn, name)
