"""GET /health for operators: how long the CRL, the server certificates, the CA and the
token key have left, with warnings before anything runs out (auth.renewal)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from auth import renewal
from auth.access import requires
from mapserver.services import services

bp = Blueprint("health", __name__)


@bp.get("/health")
@requires("system.health")
def health() -> Response:
    """What runs out (auth.renewal), and the work behind requests (mapserver.pipeline_health):
    the audit sequencer, the witnesses, the exchange's outbox."""
    from auth import pki
    from mapserver import pipeline_health

    found = services()
    now = pki.now()
    shown = renewal.health(found.settings, now)
    with found.pool.connection() as conn:
        figures, problems = pipeline_health.report(conn, found.settings)
    shown |= figures
    shown["warnings"] += [f"{p.level}: {p.what}: {p.message}" for p in problems]
    levels = {w.split(":", 1)[0] for w in shown["warnings"]}
    shown["status"] = "error" if "error" in levels else ("warning" if levels else "ok")
    return jsonify(shown)
