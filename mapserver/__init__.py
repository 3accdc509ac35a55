"""CityGrid's web application: assembled in `create_app`, nothing built at import time."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from mapserver.errors import CityGridError
from mapserver.json_limits import LimitedJSONProvider
from mapserver.settings import Settings


def create_app(settings: Settings | None = None, *, open_access: bool = False) -> Flask:
    """Build the Flask app for `settings` (default: read from file and environment).

    `open_access` leaves out the gateway (client certificates, policy, audit). It exists
    for the tile tests and the benchmark baseline only; no setting can turn it on.
    """
    import tiles.views
    import webclient
    from mapserver import identify
    from mapserver import settings as settings_mod

    settings = settings or settings_mod.load()
    app = Flask(__name__, static_folder=None)
    app.json = LimitedJSONProvider(app)
    app.config["CITYGRID"] = settings
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    _register_errors(app)
    if open_access:
        app.extensions["citygrid.guard"] = lambda *args, **kwargs: None
        app.extensions["citygrid.note"] = lambda **fields: None
    else:
        _wire_gateway(app, settings)
    tiles.views.init_app(app)
    identify.init_app(app)
    webclient.init_app(app)
    return app


def _wire_gateway(app: Flask, settings: Settings) -> None:
    """Client certificate → account → policy → audit, in front of every view."""
    from auth.wiring import init_app

    init_app(app, settings)


def _register_errors(app: Flask) -> None:
    """One place maps errors to JSON problems; clients never see a traceback."""

    @app.errorhandler(CityGridError)
    def citygrid_error(exc: CityGridError):  # type: ignore[no-untyped-def]
        return jsonify(error=exc.code, message=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        name = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=name, message=exc.description or name), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        app.logger.exception("unhandled error")
        return jsonify(error="internal", message="internal error"), 500
