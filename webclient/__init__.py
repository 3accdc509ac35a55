"""The browser client: the map viewer page and its static files (no CDN)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, render_template

bp = Blueprint(
    "webclient",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


@bp.get("/")
def index() -> Response:
    current_app.extensions["citygrid.guard"]("map.view")
    response = current_app.make_response(render_template("index.html"))
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(template: str, action: str) -> Response:
    current_app.extensions["citygrid.guard"](action)
    response = current_app.make_response(render_template(template))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/review")
def review() -> Response:
    """The security officers' audit review page."""
    return _page("review.html", "audit.read")


@bp.get("/manage")
def manage() -> Response:
    """The administrators' page: enrol a signing key, sign administrative actions."""
    return _page("manage.html", "account.admin")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
