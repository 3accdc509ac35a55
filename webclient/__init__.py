"""The browser client: the map viewer, review and manage pages, and their static files
(no CDN)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, render_template

from auth.access import requires

bp = Blueprint(
    "webclient",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
STATIC_ENDPOINT = "webclient.static"  # made by Flask; declared in create_app
# The pages' files, not counted against the API rate limit (mapserver.rate_limits).
UNCOUNTED = frozenset({STATIC_ENDPOINT, "webclient.favicon"})


def _locale_code() -> str:
    from mapserver import locales
    from mapserver.services import services

    return locales.get(services().settings.locale).code


@bp.app_context_processor
def _words() -> dict[str, object]:
    """Every page's language (webclient.messages): `t(key)` in templates, the catalogue
    for the page's scripts, and <html lang>; the install's work calendar zone, in which the
    pages show times (static/i18n.js); the pages the account may open (_nav.html)."""
    from mapserver.services import services
    from webclient import navigation
    from webclient.messages import catalogue

    code = _locale_code()
    messages = catalogue(code)
    return {
        "lang": code,
        "messages": messages,
        "t": lambda key: messages.get(key, key),
        "timezone": services().settings.work_timezone,
        "pages": navigation.pages(),
    }


def init_app(app: Flask) -> None:
    """What the pages add to the app beyond their blueprint: a browser refused a page is
    answered with a page (webclient.navigation)."""
    from webclient import navigation

    navigation.init_app(app)


def _page(template: str, **context: object) -> Response:
    response = current_app.make_response(render_template(template, **context))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
@requires("map.view")
def index() -> Response:
    """The map viewer."""
    return _page("index.html")


@bp.get("/favicon.ico")
@requires("static.read")
def favicon() -> Response:
    """The icon (an SVG) where a browser looks for it unasked: on an answer that is not one of
    the pages, which name it themselves. Otherwise each such answer would be followed by a
    404 in the audit log."""
    return bp.send_static_file("favicon.svg")


@bp.get("/review")
@requires("audit.read")
def review() -> Response:
    """The security officers' audit review page."""
    return _page("review.html")


@bp.get("/manage")
@requires("account.admin")
def manage() -> Response:
    """The administrators' page: enrol a signing key; accounts, roles and certificates;
    the organisation tree, class tables, time limits and work calendar (each change a
    signed action, versioned: mapserver.maintenance)."""
    return _page("manage.html")


@bp.get("/street")
@requires("street.stats")
def street() -> Response:
    """Per-street statistics for a period, with CSV / XLSX downloads and a printable form."""
    return _page("street.html")


def _ca_pem() -> str:
    """The CA certificate the case pages check every signature against, in the browser."""
    from auth.ca_store import CaStore
    from mapserver.services import services

    return CaStore(services().settings.pki_dir).cert_path.read_text("ascii")


def peer_ca_pem() -> str:
    """The exchange peer's CA certificate (on a district, the city platform's), against which
    the pages check the signatures of the peer's messages; empty where no exchange is
    configured or its file cannot be read."""
    from mapserver.services import services

    return _pem(services().settings.exchange_peer_ca)


def peer_log_key_pem() -> str:
    """The exchange peer's audit log key, against which the exchange page checks that the
    peer's log holds each message it received; empty as for peer_ca_pem."""
    from mapserver.services import services

    return _pem(services().settings.exchange_peer_log_key)


def log_key_pem() -> str:
    """This install's audit log key, against which the case page checks a bundle's head."""
    from audit.keys import PUBLIC_FILE
    from mapserver.services import services

    return _pem(str(services().settings.pki_dir / PUBLIC_FILE))


def _pem(name: str) -> str:
    try:
        return Path(name).read_text("ascii") if name else ""
    except (OSError, ValueError):
        return ""


@bp.get("/inbox")
@requires("case.read")
def case_inbox() -> Response:
    """The case workflow: the role's inbox and the forms to record or report a case."""
    return _page("cases.html", ca_pem=_ca_pem())


@bp.get("/inbox/<number>")
@requires("case.read")
def case_page(number: str) -> Response:
    """One case: fields, history with each signature verified in the browser, actions."""
    return _page(
        "case.html",
        ca_pem=_ca_pem(),
        peer_ca_pem=peer_ca_pem(),
        log_key_pem=log_key_pem(),
        peer_log_key_pem=peer_log_key_pem(),
    )
