"""Administration over HTTP: accounts (administrators only)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from auth import accounts
from auth.gateway import audit_note, authorize
from auth.policy import Request
from mapserver.errors import InvalidInput

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.post("/accounts")
def add_account() -> Response:
    authorize(Request("account.admin"))
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput("send a JSON object {name, roles, org}")
    name, roles, org = body.get("name"), body.get("roles"), body.get("org")
    if (
        not isinstance(name, str)
        or not isinstance(roles, list)
        or not roles
        or not all(isinstance(r, str) for r in roles)
    ):
        raise InvalidInput("name (text) and roles (a non-empty list) are required")
    if org is not None and not isinstance(org, str):
        raise InvalidInput("org must be an organisation code")
    audit_note(action="account.add", resource=f"account {name}")
    with current_app.extensions["citygrid.pool"].connection() as conn:
        account = accounts.add(conn, name, roles, org, str(body.get("display_name", "")))
    return jsonify(name=account.name, roles=list(account.roles), org=account.org_code), 201


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
