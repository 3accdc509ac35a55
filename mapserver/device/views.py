"""HTTP for devices, `/device/v1/…`: tasks and their photos, map pictures, reports and
verify/check results. Every route declares its policy action; every one also takes a device
certificate with a bound token (mapserver.device.guard); every change carries an
Idempotency-Key."""

from __future__ import annotations

from flask import Blueprint, Response, request

from audit.notes import note
from auth.access import requires
from auth.gateway import identity
from mapserver.cases import attachments, reading
from mapserver.device import byte_range, guard, map_picture, reports, tasks, upload_views
from mapserver.device.answer import idempotent
from mapserver.services import services

bp = Blueprint("device", __name__, url_prefix="/device/v1")
bp.register_blueprint(upload_views.bp)  # /device/v1/uploads (tus 1.0)


@bp.before_request
def device_only() -> None:
    """After the policy's decision: a device certificate and a token bound to it."""
    guard.check_request(identity(), services().gateway.keys)


@bp.get("/tasks")
@requires("device.tasks")
def task_list() -> Response:
    """The cases waiting for this inspector; 304 while unchanged; gzip when accepted."""
    found = services()
    note(resource="device tasks")
    with found.pool.connection() as conn:
        data = tasks.body(tasks.load(conn, found, identity()))
    tag = tasks.etag(data)
    if tasks.not_modified(request.headers.get("If-None-Match"), tag):
        response = Response(status=304)
    elif tasks.accepts_gzip(request.headers.get("Accept-Encoding")):
        response = Response(tasks.compress(data), mimetype="application/json")
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(data, mimetype="application/json")
    response.headers["ETag"] = tag
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/map")
@requires("device.map")
def map_view() -> Response:
    """One PNG for the device's screen around a case (`case=`) or unit grid (`grid=`), `w`×`h`
    pixels, with the marks' picture pixels in `CityGrid-Marks`; 304 while unchanged."""
    ask = map_picture.parse(request.args)
    note(resource=f"device map {ask.case or 'grid ' + str(ask.grid)} {ask.width}x{ask.height}")
    planned, data = map_picture.answer_parts(services(), identity(), ask, map_picture.PICTURES)
    marks = map_picture.header(planned.marks)
    tag = map_picture.etag(data, marks)
    if tasks.not_modified(request.headers.get("If-None-Match"), tag):
        response = Response(status=304)
    else:
        response = Response(data, mimetype="image/png")
    response.headers["ETag"] = tag
    response.headers["CityGrid-Marks"] = marks
    response.headers["CityGrid-Scale"] = str(services().tile_source().scale_of(planned.frame.z))
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/cases/<number>/attachments/<sha256>")
@requires("device.tasks")
def attachment(number: str, sha256: str) -> Response:
    """A photo or recording of a case in this inspector's tasks (`attachments[].url`), by its
    SHA-256: 304 for the hash the device holds, a Range for the rest of a cut download."""
    found = services()
    who = identity()
    note(resource=f"case {number} attachment", sha256=sha256[:64])
    with found.pool.connection() as conn:
        reading.require_visible(conn, number, who)
        media_type, data = attachments.fetch(conn, number, sha256)
    response = Response(data, mimetype=media_type)
    response.set_etag(sha256)  # the bytes never change under their hash
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    environ = dict(request.environ)  # Werkzeug answers 416 to any Range it does not serve
    environ.pop("HTTP_RANGE", None)
    wanted = byte_range.honoured(request.headers.get("Range"), len(data))
    if wanted is not None:
        environ["HTTP_RANGE"] = wanted
    response.make_conditional(environ, accept_ranges=True, complete_length=len(data))
    return response


@bp.post("/reports")
@requires("device.report")
def report() -> Response:
    """A signed `case.report` (see mapserver.device.reports); 201 with the case's number."""
    body = request.get_json(silent=True)
    return idempotent(lambda conn, found: (201, reports.report(conn, found, identity(), body), {}))


@bp.post("/cases/<number>/<name>")
@requires("device.check")
def act(number: str, name: str) -> Response:
    """A verify or check result: signed `case.NAME` on `case NUMBER` with `from`."""
    body = request.get_json(silent=True)
    return idempotent(
        lambda conn, found: (200, reports.act(conn, found, identity(), number, name, body), {})
    )
