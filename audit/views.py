"""Reading the audit log over HTTP: security officers only; their reads are audited too."""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from auth.gateway import authorize
from auth.policy import Request
from mapserver.errors import InvalidInput

bp = Blueprint("audit", __name__, url_prefix="/audit")
FILTERS = ("account", "action", "outcome", "cert_serial", "resource")
MAX_PAGE = 500


@bp.get("/entries")
def entries() -> Response:
    authorize(Request("audit.read"))
    where, params = [], []
    for name in FILTERS:
        value = request.args.get(name)
        if value:
            where.append(f"{name} = %s")
            params.append(value)
    before = request.args.get("before", "")
    if before:
        if not re.fullmatch(r"\d{1,18}", before):
            raise InvalidInput("before must be an entry id")
        where.append("id < %s")
        params.append(int(before))
    limit_raw = request.args.get("limit", "100")
    if not re.fullmatch(r"\d{1,4}", limit_raw) or not 0 < int(limit_raw) <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1..{MAX_PAGE}")
    sql = (
        "SELECT id, at, request_id, account, role, cert_serial, client_addr, method, resource,"
        " action, outcome, status, bytes, latency_ms, detail FROM audit_entry"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY id DESC LIMIT %s"
    )
    with current_app.extensions["citygrid.pool"].connection() as conn:
        rows = conn.execute(sql, [*params, int(limit_raw)]).fetchall()
    keys = (
        "id",
        "at",
        "request_id",
        "account",
        "role",
        "cert_serial",
        "client_addr",
        "method",
        "resource",
        "action",
        "outcome",
        "status",
        "bytes",
        "latency_ms",
        "detail",
    )
    items = [dict(zip(keys, row, strict=True)) for row in rows]
    for item in items:
        item["at"] = item["at"].isoformat()
    return jsonify(entries=items)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
