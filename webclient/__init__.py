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


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
