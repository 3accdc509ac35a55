"""CityGrid's web application: assembled in `create_app`, nothing built at import time."""

from __future__ import annotations

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from mapserver.errors import CityGridError, foreign_statuses
from mapserver.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app for `settings` (default: read from file and environment).

    The one assembly point: every blueprint, the gateway (identity, rate limits, policy
    decision, audit) and the services are wired here. Tests run this same app with a test
    configuration. It refuses to start while any route has no declared policy action.
    """
    import tiles.views
    import webclient
    from auth import health_views, identity
    from auth import views as auth_views
    from auth.access import Declarations, UndeclaredRoutes
    from auth.ca_store import CaStore, PkiError
    from auth.gateway import Gateway
    from auth.security_headers import SecurityHeaders
    from mapserver import admin_views, audit_views, identify, rate_limits
    from mapserver import settings as settings_mod
    from mapserver.audit_writer import audit_writer
    from mapserver.cases import on_map, open311, street_views
    from mapserver.cases import views as case_views
    from mapserver.components import views as component_views
    from mapserver.db import open_pool
    from mapserver.device import upload_views
    from mapserver.device import views as device_views
    from mapserver.evaluation import hotspot, screen
    from mapserver.evaluation import pages as evaluation_pages
    from mapserver.evaluation import views as evaluation_views
    from mapserver.exchange import views as exchange_views
    from mapserver.json_limits import LimitedJSONProvider
    from mapserver.maintenance import views as maintenance_views
    from mapserver.services import Services, attach
    from tiles import hot_path

    settings = settings or settings_mod.load()
    app = Flask(__name__, static_folder=None)
    app.config["CITYGRID"] = settings
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    app.config["TRUSTED_HOSTS"] = settings.host_names
    app.url_map.merge_slashes = False  # `//tiles/...` is not redirected to anywhere
    app.json = LimitedJSONProvider(app)
    _register_errors(app)

    store = CaStore(settings.pki_dir)
    if not store.exists():
        raise PkiError("no CA yet: run `citygrid pki init` before serving")
    pool = open_pool(settings)

    def holder(sha256: str) -> identity.Holder | None:
        with pool.connection() as conn:
            return identity.lookup(conn, sha256)

    writer = audit_writer(settings)
    declarations = Declarations()
    declarations.declare(webclient.STATIC_ENDPOINT, "static.read")
    gateway = Gateway(
        app,
        store.cert_path,
        settings.pki_dir / "jwt",
        writer.write,
        holder,
        declarations,
        scope=lambda: found,
    )
    found = Services(settings, pool, writer, gateway, declarations)
    attach(app, found)
    if settings.renderer_url:  # two zones: each new CRL reaches the renderer, pushed
        from tiles import crl_push

        crl_push.watch(settings)

    for blueprint in (
        webclient.bp,
        tiles.views.bp,
        identify.bp,
        on_map.bp,
        auth_views.bp,
        admin_views.bp,
        audit_views.bp,
        health_views.bp,
        case_views.bp,
        open311.bp,
        evaluation_views.bp,
        evaluation_pages.bp,
        hotspot.bp,
        screen.bp,
        device_views.bp,
        street_views.bp,
        maintenance_views.bp,
        component_views.bp,
        exchange_views.bp,
    ):
        app.register_blueprint(blueprint)
    gateway.init_identity(app)
    webclient.init_app(app)  # after the identity hook: the audit records its refusal pages
    limiter = rate_limits.init_app(
        app, settings, tiles.views.bp, webclient.UNCOUNTED, upload_views.CHUNK_ENDPOINTS
    )
    gateway.init_decision(app)

    missing = declarations.undeclared(app)
    if missing:
        raise UndeclaredRoutes(missing)
    hot = hot_path.for_app(app, gateway, limiter, declarations, found)
    app.wsgi_app = SecurityHeaders(hot)  # type: ignore[method-assign]
    return app


def _register_errors(app: Flask) -> None:
    """One place maps errors to JSON problems; clients never see a traceback."""

    @app.errorhandler(CityGridError)
    def citygrid_error(exc: CityGridError):  # type: ignore[no-untyped-def]
        return jsonify(**exc.details, error=exc.code, message=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):  # type: ignore[no-untyped-def]
        name = (exc.name or "error").lower().replace(" ", "_")
        # The exception's own headers (416's Content-Range, 405's Allow), not its HTML type.
        kept = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return jsonify(error=name, message=exc.description or name), exc.code or 500, kept

    for kind, status, code, message in foreign_statuses():

        def foreign(exc: Exception, status=status, code=code, message=message):  # type: ignore[no-untyped-def]
            app.logger.warning("%s: %s", code, type(exc).__name__)
            g.audit = {**(g.get("audit") or {}), "reason": code}
            return jsonify(error=code, message=message), status

        app.register_error_handler(kind, foreign)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):  # type: ignore[no-untyped-def]
        app.logger.exception("unhandled error")
        return jsonify(error="internal", message="internal error"), 500
