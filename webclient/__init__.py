"""The browser client: the map viewer, review and manage pages, and their static files
(no CDN)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

from auth.access import requires

bp = Blueprint(
    "webclient",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
STATIC_ENDPOINT = "webclient.static"  # made by Flask; declared in create_app


def _page(template: str) -> Response:
    response = current_app.make_response(render_template(template))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
@requires("map.view")
def index() -> Response:
    """The map viewer."""
    return _page("index.html")


@bp.get("/review")
@requires("audit.read")
def review() -> Response:
    """The security officers' audit review page."""
    return _page("review.html")


@bp.get("/manage")
@requires("account.admin")
def manage() -> Response:
    """The administrators' page: enrol a signing key, sign administrative actions."""
    return _page("manage.html")
