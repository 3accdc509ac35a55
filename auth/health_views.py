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
    return jsonify(renewal.health(services().settings))
