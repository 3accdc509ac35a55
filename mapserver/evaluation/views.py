"""HTTP for the comprehensive evaluation: indicators with scores and ranks for a period
beside the previous one, the cases behind a figure, and the versioned scoring configuration
(changed only by a signed action `eval.configure`)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from audit.notes import note
from auth import actions
from auth.access import requires
from auth.ca_store import CaStore
from auth.gateway import identity
from mapserver import text_limits
from mapserver.errors import InvalidInput, NotFound
from mapserver.evaluation import aggregates, config, exports, indicators, report
from mapserver.evaluation.reading import load_report
from mapserver.services import services
from webclient.messages import catalogue

bp = Blueprint("evaluation", __name__, url_prefix="/evaluation")
DRILL_LIMIT = 10_000
CONFIG_RESOURCE = "evaluation config"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@bp.get("/indicators")
@requires("eval.read")
def indicators_view() -> Response:
    """?subject=bureau|inspector|centre|street|community|grid&from=YYYY-MM-DD&to=YYYY-MM-DD"""
    kind = report.subject_kind(request.args)
    when = report.period(request.args)
    note(resource=f"evaluation {kind}", **when.as_json())
    return jsonify(load_report(kind, when))


@bp.get("/trend")
@requires("eval.read")
def trend() -> Response:
    """?indicator=KEY&from=&to=: the indicator of every subject by month (or week)."""
    key = request.args.get("indicator", "")
    found_indicator = indicators.INDICATORS.get(key)
    if found_indicator is None:
        raise InvalidInput("indicator must be one of " + ", ".join(indicators.INDICATORS))
    when = report.period(request.args)
    pieces = report.buckets(when)
    kind = found_indicator.subject_kind
    found = services()
    note(resource=f"evaluation trend {key}", **when.as_json())
    with found.pool.connection() as conn:
        aggregates.require_zone(conn, found.settings.work_timezone)
        streets = aggregates.inspector_streets(conn) if kind == "inspector" else None
        counts = [aggregates.subject_counts(conn, kind, p.first, p.last, streets) for p in pieces]
        areas = aggregates.areas(conn, kind) if found_indicator.per_area else {}
        names = aggregates.subjects(conn, kind)
    return jsonify(
        period=when.as_json(), **report.trend(found_indicator, names, counts, areas, pieces)
    )


@bp.get("/classes")
@requires("eval.read")
def classes() -> Response:
    """?from=&to=: the district's filed and closed cases per kind and major class."""
    when = report.period(request.args)
    found = services()
    note(resource="evaluation classes", **when.as_json())
    with found.pool.connection() as conn:
        aggregates.require_zone(conn, found.settings.work_timezone)
        rows = aggregates.class_counts(conn, when.first, when.last, found.settings.locale)
    return jsonify(period=when.as_json(), classes=report.classes(rows))


@bp.get("/report.<fmt>")
@requires("eval.read")
def export(fmt: str) -> Response:
    """?subject=&from=&to=: the report the API answers, as XLSX or PDF."""
    if fmt not in ("xlsx", "pdf"):
        raise NotFound("reports are report.xlsx or report.pdf")
    kind = report.subject_kind(request.args)
    when = report.period(request.args)
    note(resource=f"evaluation {kind} report.{fmt}", **when.as_json())
    data = load_report(kind, when)
    words = catalogue(services().settings.locale)  # the install's language
    body, mimetype = (
        (exports.xlsx(data, words), XLSX)
        if fmt == "xlsx"
        else (exports.pdf(data, words), "application/pdf")
    )
    name = f"evaluation-{kind}-{when.first.isoformat()}-{when.last.isoformat()}.{fmt}"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/drill")
@requires("eval.read")
def drill() -> Response:
    """?indicator=KEY&subject=CODE&from=&to=: the case numbers behind both sides."""
    key = request.args.get("indicator", "")
    found_indicator = indicators.INDICATORS.get(key)
    if found_indicator is None:
        raise InvalidInput("indicator must be one of " + ", ".join(indicators.INDICATORS))
    subject = request.args.get("subject", "")
    if not subject:
        raise InvalidInput("the parameter 'subject' is required (the code or account evaluated)")
    text_limits.Limit("subject", 64).check(subject)
    when = report.period(request.args)
    kind = found_indicator.subject_kind
    found = services()
    note(resource=f"evaluation {key} {subject}", **when.as_json())
    with found.pool.connection() as conn:
        aggregates.require_zone(conn, found.settings.work_timezone)
        units = aggregates.drill(
            conn, kind, [subject], found_indicator.measures, when.first, when.last
        )
        if kind == "inspector" and found_indicator.measures & set(
            aggregates.INSPECTOR_STREET_MEASURES
        ):
            street = aggregates.inspector_streets(conn).get(subject)
            units.update(
                aggregates.drill(
                    conn,
                    "street",
                    [street or ""],
                    aggregates.INSPECTOR_STREET_MEASURES,
                    when.first,
                    when.last,
                )
            )
    return jsonify(
        indicator=indicators.describe(found_indicator),
        subject=subject,
        period=when.as_json(),
        **report.drilled(found_indicator, units, DRILL_LIMIT),
    )


@bp.get("/config")
@requires("eval.read")
def show_config() -> Response:
    """The configuration in force (or ?version=N) and the list of versions."""
    raw = request.args.get("version")
    version = None
    if raw is not None:
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:  # "²" is a digit to isdigit
            raise InvalidInput("version must be a whole number")
        version = int(raw)
    with services().pool.connection() as conn:
        shown = config.current(conn, version)
        versions = config.history(conn)
    return jsonify(**shown.as_json(), versions=versions)


@bp.post("/config")
@requires("eval.configure")
def change_config() -> tuple[Response, int]:
    """A new version: the body is a signed action `eval.configure` on `evaluation config`
    whose parameters are {based_on: the version changed, config: {...}}."""
    who = identity()
    found = services()
    with found.pool.connection() as conn, conn.transaction():
        verified, action_id = actions.accept(
            conn,
            who,
            request.get_json(silent=True),
            "eval.configure",
            CONFIG_RESOURCE,
            CaStore(found.settings.pki_dir).certificate(),
        )
        note(
            action="eval.configure",
            resource=CONFIG_RESOURCE,
            signature_sha256=verified.signature_sha256,
        )
        params = verified.parameters
        unknown = set(params) - {"based_on", "config"}
        if unknown:  # what is signed is kept: nothing rides along that is not stored
            raise InvalidInput(f"unknown parameter {sorted(unknown)[0]!r:.70}")
        saved = config.save(conn, params.get("config"), params.get("based_on"), who.account,
                            action_id)  # fmt: skip
    note(signed_action=action_id, version=saved.version)  # committed
    return jsonify(saved.as_json()), 201
