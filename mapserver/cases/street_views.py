"""HTTP for street statistics (街道统计): JSON for the page, CSV and XLSX downloads.

A street office sees its own streets only: the policy decides from the `street` argument
before the view runs, and the view narrows an unscoped request to the asker's streets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request

from audit.notes import note
from auth import policy
from auth.access import ScopeContext, requires
from auth.gateway import identity
from mapserver.cases import street_stats
from mapserver.cases.calendar import parse_timezone
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import services

bp = Blueprint("street", __name__, url_prefix="/street")
MAX_STREETS = 100
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _asked(args: Mapping[str, str]) -> frozenset[str] | None:
    text = args.get("street")
    if not text:
        return None
    codes = frozenset(c for c in text.split(",") if c)
    if len(codes) > MAX_STREETS or not all(
        len(c) == 9 and c.isascii() and c.isdigit() for c in codes
    ):
        raise InvalidInput(f"street: up to {MAX_STREETS} nine-digit street codes")
    return codes


def _stats_scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    """The streets asked for take part in the decision: a street office, only its own."""
    return policy.Request("street.stats", streets=_asked(args))


@bp.get("/stats")
@requires("street.stats", _stats_scope)
def stats() -> Response:
    """Statistics of a period (`from`, `to`; `street` optional; `format` json|csv|xlsx)."""
    found = services()
    who = identity()
    fmt = request.args.get("format", "json")
    if fmt not in ("json", *FORMATS):
        raise InvalidInput("format must be json, csv or xlsx")
    first, last = street_stats.period(request.args)
    asked = _asked(request.args)
    with found.pool.connection() as conn:
        if policy.street_scoped(who.roles):
            streets: frozenset[str] = frozenset(who.streets) & (asked or frozenset(who.streets))
        else:
            known = frozenset(r[0] for r in conn.execute("SELECT code FROM street").fetchall())
            missing = (asked or frozenset()) - known
            if missing:  # as the command line says it: not an empty report
                raise NotFound(f"no street {min(missing)}")
            streets = asked or known
        shown = street_stats.report(
            conn, streets, first, last, parse_timezone(found.settings.work_timezone),
            found.settings.locale,
        )  # fmt: skip
    note(resource="street stats", streets=sorted(streets)[:20], format=fmt,
         period=f"{first}..{last}")  # fmt: skip
    if fmt == "json":
        return jsonify(shown)
    if fmt == "csv":
        body = street_stats.as_csv(shown)
    else:
        from webclient.messages import catalogue

        body = street_stats.as_xlsx(shown, catalogue(found.settings.locale))
    response = Response(body, mimetype=FORMATS[fmt])
    response.headers["Content-Disposition"] = (
        f'attachment; filename="street-stats-{first}-{last}.{fmt}"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response
