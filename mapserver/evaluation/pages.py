"""The evaluation's pages: the dashboard of charts (leaders) and the big screen (the
command centre's wall, the read-only `screen` account). Their data come from the JSON routes
(mapserver.evaluation.views, .screen); the charts are Apache ECharts served from
webclient/static/vendor (no CDN)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

from auth.access import requires

bp = Blueprint("evaluation_pages", __name__)


def _page(template: str) -> Response:
    response = current_app.make_response(render_template(template))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/evaluation")
@requires("eval.read")
def dashboard() -> Response:
    """Trends, rankings, the per-class breakdown, each indicator with its formula, numerator
    and denominator, and the cases behind a figure; XLSX and PDF reports."""
    return _page("evaluation.html")


@bp.get("/screen")
@requires("screen.read")
def big_screen() -> Response:
    """The full-screen page for a 1920×1080 wall display: it updates by itself."""
    return _page("screen.html")
