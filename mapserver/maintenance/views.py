"""HTTP for application maintenance. Reading needs the administrator's action; every
change is a signed action (the body is the envelope of auth.signed_action) naming the act
and the thing it changes, stored with the change in one transaction, and versioned."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, jsonify, request

from audit.notes import note
from auth import accounts, actions, enrol, person_issue
from auth.access import requires
from auth.ca_store import CaStore
from auth.gateway import identity
from mapserver import text_limits
from mapserver.errors import InvalidInput
from mapserver.evaluation import config as eval_config
from mapserver.maintenance import (
    accounts_admin,
    calendar_overrides,
    changes,
    classes,
    limits,
    organisations,
)
from mapserver.services import services

bp = Blueprint("maintenance", __name__, url_prefix="/maintenance")


def _signed(conn: Any, action: str, resource: str) -> tuple[dict[str, Any], int, str]:
    """Verify and store the signed action of this request; (parameters, id, signer)."""
    who = identity()
    verified, action_id = actions.accept(
        conn,
        who,
        request.get_json(silent=True),
        action,
        resource,
        CaStore(services().settings.pki_dir).certificate(),
    )
    text_limits.check_parameters(verified.parameters)
    accounts.act_as(conn, who.account)  # the change register names the signer
    note(action=action, resource=resource, signature_sha256=verified.signature_sha256)
    return dict(verified.parameters), action_id, who.account


def _change(
    action: str, resource: str, apply: Callable[[Any, dict[str, Any], int, str], dict[str, Any]]
) -> Response:
    with services().pool.connection() as conn, conn.transaction():
        params, action_id, account = _signed(conn, action, resource)
        shown = apply(conn, params, action_id, account)
    note(signed_action=action_id)  # committed
    return jsonify({**shown, "signed_action": action_id})


def _read(fn: Callable[[Any], Any]) -> Any:
    with services().pool.connection() as conn:
        return fn(conn)


# ---------------------------------------------------------------- what is in force


@bp.get("/summary")
@requires("config.admin")
def summary() -> Response:
    """The version of each maintained area, and where the evaluation weights are changed."""

    def read(conn: Any) -> dict[str, Any]:
        return {
            "organisation": changes.current(conn, "organisation"),
            "class": changes.current(conn, "class"),
            "limits": limits.current_version(conn),
            "calendar": calendar_overrides.version(conn),
            "evaluation": {
                "version": eval_config.current(conn).version,
                "changed_by": "leader (POST /evaluation/config, signed eval.configure)",
            },
        }

    note(resource="maintenance summary")
    return jsonify(_read(read))


@bp.get("/history")
@requires("config.admin")
def history() -> Response:
    """The change log, newest first, a page at a time: `limit` (1–200), `before` a version
    (the answer's `older`), `area`."""
    args = request.args
    unknown = set(args) - {"area", "limit", "before"}
    if unknown:
        raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r:.60}; area, limit, before")
    area = args.get("area") or None
    if area is not None and area not in changes.AREAS:
        raise InvalidInput("area must be one of " + ", ".join(changes.AREAS))
    limit = _whole(args.get("limit", str(changes.MAX_LISTED)), "limit", 1, changes.MAX_LISTED)
    before = _whole(args["before"], "before", 1, 2**62) if "before" in args else None
    note(resource="maintenance history")
    shown, older = _read(lambda conn: changes.history(conn, area, limit, before))
    return jsonify(changes=shown, older=older)


def _whole(text: str, name: str, least: int, most: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not least <= int(text) <= most:
        raise InvalidInput(f"{name} must be a whole number from {least} to {most}")
    return int(text)


# ---------------------------------------------------------------- organisations


@bp.get("/organisations")
@requires("config.admin")
def organisation_tree() -> Response:
    note(resource="organisations")
    return jsonify(
        kinds=organisations.KINDS,
        tree=_read(organisations.tree),
        streets=_read(
            lambda conn: [
                {"code": c, "name": n}
                for c, n in conn.execute("SELECT code, name FROM street ORDER BY code").fetchall()
            ]
        ),
    )


@bp.post("/organisations/<code>")
@requires("config.admin")
def organisation_save(code: str) -> Response:
    """Add or change an organisation: signed `org.save` on `organisation CODE`."""
    return _change(
        "org.save",
        f"organisation {code}",
        lambda conn, p, a, who: organisations.save(conn, code, p, who, a),
    )


# ---------------------------------------------------------------- classes and limits


@bp.get("/classes/<kind>")
@requires("config.admin")
def class_table(kind: str) -> Response:
    note(resource=f"classes {kind[:20]}")
    return jsonify(
        classes=_read(lambda conn: classes.listing(conn, kind, services().settings.locale))
    )


@bp.post("/classes/<kind>/<major>/<minor>")
@requires("config.admin")
def class_update(kind: str, major: str, minor: str) -> Response:
    """Change a class: signed `class.update` on `class KIND/MAJOR/MINOR`."""
    return _change(
        "class.update",
        f"class {kind}/{major}/{minor}",
        lambda conn, p, a, who: classes.update_class(
            conn, kind, major, minor, p, who, a, services().settings.locale
        ),
    )


@bp.get("/limits")
@requires("config.admin")
def limit_table() -> Response:
    note(resource="limits")
    return jsonify(_read(classes.stage_limits))


@bp.post("/limits/<stage>")
@requires("config.admin")
def limit_set(stage: str) -> Response:
    """A stage's limit or a class's override: signed `limit.set` on `limit STAGE`."""
    return _change(
        "limit.set",
        f"limit {stage}",
        lambda conn, p, a, who: classes.set_limit(conn, stage, p, who, a),
    )


# ---------------------------------------------------------------- work calendar


@bp.get("/calendar")
@requires("config.admin")
def calendar_table() -> Response:
    found = services()
    cal = found.calendar()
    note(resource="calendar")
    return jsonify(
        overrides=_read(calendar_overrides.listing),
        version=_read(calendar_overrides.version),
        work_hours=found.settings.work_hours,
        timezone=found.settings.work_timezone,
        settings_holidays=sorted(d.isoformat() for d in cal.local_holidays),
        settings_workdays=sorted(d.isoformat() for d in cal.local_workdays),
    )


@bp.post("/calendar/<day>")
@requires("config.admin")
def calendar_set(day: str) -> Response:
    """Declare a day a holiday or working day: signed `calendar.set` on `calendar DAY`."""
    reply = _change(
        "calendar.set",
        f"calendar {day}",
        lambda conn, p, a, who: calendar_overrides.set_day(conn, day, p, who, a),
    )
    services().calendar_changed()
    return reply


# ---------------------------------------------------------------- accounts


@bp.get("/accounts")
@requires("account.admin")
def account_list() -> Response:
    note(resource="accounts", query=request.query_string.decode("utf-8", "replace")[:256])
    return jsonify(_read(lambda conn: accounts_admin.search(conn, request.args)))


@bp.get("/accounts/<name>")
@requires("account.admin")
def account_detail(name: str) -> Response:
    note(resource=f"account {name[:64]}")
    return jsonify(_read(lambda conn: accounts_admin.detail(conn, name)))


def _account_shown(account: accounts.Account) -> dict[str, Any]:
    return {"name": account.name, "active": account.active, "roles": list(account.roles)}


def _role(params: dict[str, Any]) -> str:
    role = params.get("role")
    if not isinstance(role, str):
        raise InvalidInput("parameter role must be a role name")
    return role


@bp.post("/accounts/<name>/enable")
@requires("account.admin")
def account_enable(name: str) -> Response:
    return _change(
        "account.enable",
        f"account {name}",
        lambda conn, p, a, who: _account_shown(accounts_admin.enable(conn, name, a)),
    )


@bp.post("/accounts/<name>/grant")
@requires("account.admin")
def account_grant(name: str) -> Response:
    return _change(
        "account.grant",
        f"account {name}",
        lambda conn, p, a, who: _account_shown(accounts_admin.grant(conn, name, _role(p), a)),
    )


@bp.post("/accounts/<name>/revoke-role")
@requires("account.admin")
def account_revoke_role(name: str) -> Response:
    return _change(
        "account.revoke_role",
        f"account {name}",
        lambda conn, p, a, who: _account_shown(accounts_admin.revoke_role(conn, name, _role(p), a)),
    )


@bp.post("/accounts/<name>/certificates")
@requires("pki.admin")
def account_issue_certificate(name: str) -> tuple[Response, int]:
    """Issue a person's TLS client certificate for the CSR sent beside a signed `pki.issue`
    on `account NAME` whose parameters name the CSR's SHA-256 (`csr_sha256`, `kind:
    person`, optional `days`). The signer verifies the stored signed action itself."""
    from auth import signer

    body = request.get_json(silent=True)
    csr_pem = body.get("csr") if isinstance(body, dict) else None
    csr = person_issue.load_csr(csr_pem)
    found = services()
    with found.pool.connection() as conn, conn.transaction():
        params, action_id, _ = _signed(conn, "pki.issue", f"account {name}")
        if params.get("csr_sha256") != person_issue.csr_sha256(csr):
            raise InvalidInput("the signed csr_sha256 is not the SHA-256 of the CSR sent")
        if params.get("kind") != "person":
            raise InvalidInput("kind must be person")
        person_issue.days_of(params)  # refused here, not by the signer once the act is kept
        if not accounts.get(conn, name).active:  # 404 for an unknown account
            raise InvalidInput(f"account {name!r} is disabled")  # as the signer would, too late
    note(signed_action=action_id)  # committed: the signer reads it from the register
    cert = signer.issue_person(found.settings, name, str(csr_pem), action_id)
    chain = cert.public_bytes(Encoding.PEM) + CaStore(found.settings.pki_dir).cert_path.read_bytes()
    note(certificate=format(cert.serial_number, "x"))
    return jsonify(
        account=name,
        serial=format(cert.serial_number, "x"),
        not_after=cert.not_valid_after_utc.isoformat(),
        certificate=chain.decode("ascii"),
        signed_action=action_id,
    ), 201


@bp.post("/accounts/<name>/enrol-code")
@requires("pki.admin")
def account_enrol_code(name: str) -> Response:
    """Issue the one-time code with which NAME enrols a browser signing key, for which the
    signing service then issues a signing certificate: signed `pki.enrol_code`."""

    def issue(conn: Any, p: dict[str, Any], a: int, who: str) -> dict[str, Any]:
        hours = p.get("hours", 24)
        if isinstance(hours, bool) or not isinstance(hours, int):
            raise InvalidInput("hours must be a whole number from 1 to 336")
        code = accounts_admin.enrol_code(conn, name, hours, a)
        note(code_sha256=enrol.code_hash(code))
        return {"account": name, "code": code, "hours": hours}

    response = _change("pki.enrol_code", f"account {name}", issue)
    response.headers["Cache-Control"] = "no-store"
    return response
