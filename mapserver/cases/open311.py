"""Open311 GeoReport v2 for partner systems (the city's hotline) holding a CityGrid client
certificate: the event and component classes as services, complaints submitted as cases
(source `city_platform`), and the status of what the partner submitted.

A place comes in as `address_string`, `address_id` or a unit grid code (`attribute[grid]`;
a component case names its component in `attribute[component]`); `lat`/`long` are refused,
since CityGrid takes no coordinates from outside, and no answer carries one. Errors are the
specification's `[{"code": 400, "description": "..."}]`.

A partner's POST is a machine submission, not a person's act: it is not a signed action.
It is audited with the SHA-256 of the exact request body, which the case's history keeps
too, and the case waits in `reported` until an operator accepts it with a signed act.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from flask import Blueprint, Response, jsonify, request
from psycopg import sql
from werkzeug.exceptions import HTTPException

from audit.notes import note
from auth.access import requires
from auth.gateway import identity
from mapserver import class_text, text_limits
from mapserver.audit_writer import queue_with_change
from mapserver.cases import flow, on_map, place, store
from mapserver.cases.contact import Contact
from mapserver.errors import CityGridError, InvalidInput, NotFound
from mapserver.services import services
from webclient.messages import translate

bp = Blueprint("open311", __name__, url_prefix="/open311/v2")

SERVICE_CODE = re.compile(r"^(event|component)-([0-9]{2})-([0-9]{2,3})\Z")
REQUEST_ID = re.compile(r"^[0-9]{4}-[0-9]{6}\Z")
MAX_SPAN = dt.timedelta(days=90)
MAX_RESULTS = 1000
MAX_IDS = 50
SOURCE = "city_platform"  # the hotline is the city-level platform (CJJ/T 106)

# What the specification's POST may carry, and what CityGrid refuses of it (and why).
_POST_FIELDS = frozenset(
    {
        "jurisdiction_id",
        "api_key",  # ignored: partners authenticate with their client certificate
        "service_code",
        "address_string",
        "address_id",
        "description",
        "email",
        "phone",
        "first_name",
        "last_name",
        "device_id",  # ignored
        "account_id",  # ignored
        "attribute[grid]",
        "attribute[component]",
    }
)
_REFUSED = {
    "lat": "CityGrid takes no coordinates from outside",
    "long": "CityGrid takes no coordinates from outside",
    "media_url": "CityGrid fetches nothing from outside the secure zone",
}
_LOCATIONS = ("address_string", "address_id", "attribute[grid]")
_LIST_FIELDS = frozenset(
    {"jurisdiction_id", "api_key", "service_request_id", "service_code", "start_date", "end_date"}
    | {"status"}
)
_CONTACT = (("last_name", 50), ("first_name", 50), ("phone", 40), ("email", 100))
_ADDRESS = text_limits.Limit("address_string", 200)


@bp.errorhandler(CityGridError)
def _citygrid_problem(exc: CityGridError) -> tuple[Response, int]:
    note(reason=exc.code)
    return jsonify([{"code": exc.status, "description": exc.message}]), exc.status


@bp.errorhandler(HTTPException)
def _http_problem(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    return jsonify([{"code": status, "description": exc.description or exc.name}]), status


def _single(values: Mapping[str, list[str]]) -> dict[str, str]:
    """Each parameter once: a repeated one is refused rather than one of them picked."""
    for name, given in values.items():
        if len(given) != 1:
            raise InvalidInput(f"{name[:40]} is given {len(given)} times")
    return {name: given[0] for name, given in values.items()}


def _form(raw: bytes, charset: str) -> dict[str, list[str]]:
    """A form body's fields, UTF-8 only: a byte that is no UTF-8 is refused, not kept as the
    percent-escape it came as (which a case's text then showed)."""
    if charset.lower() not in ("utf-8", "utf8"):
        raise InvalidInput(f"the form's charset must be utf-8, not {charset[:20]!r}")
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, errors="strict"
        )
    except UnicodeDecodeError:
        raise InvalidInput("the form is not UTF-8 (a field's percent-escapes)") from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def _jurisdiction(params: Mapping[str, str]) -> None:
    wanted = params.get("jurisdiction_id")
    district = services().settings.district_code
    if wanted is not None and wanted != district:
        raise InvalidInput(f"jurisdiction_id: this endpoint serves {district} only")


def _service(code: str) -> tuple[str, str, str]:
    found = SERVICE_CODE.match(code)
    if found is None:
        raise InvalidInput("service_code must look like event-01-02 or component-01-01")
    kind, major, minor = found.groups()
    return kind, major, minor


def _services(locale: str) -> str:
    """Every class as a service, its texts in the install's language."""
    return (
        "SELECT kind, major, minor, major_name, name, filing_condition"  # noqa: S608
        f" FROM {class_text.relation(locale)}"
    )


def _service_query() -> None:
    """The service list and definitions take jurisdiction_id (and an ignored api_key)."""
    params = _single(request.args.to_dict(flat=False))
    unknown = sorted(set(params) - {"jurisdiction_id", "api_key"})
    if unknown:
        raise InvalidInput(f"unknown parameter {unknown[0][:40]!r}")
    _jurisdiction(params)


def _service_of(row: tuple[Any, ...], locale: str) -> dict[str, Any]:
    """A class as a service; its keywords are the locale's words for its kind and major class
    and their codes (`event`, `event-01`), so a client may look for either."""
    kind, major, minor, major_name, name, condition = row
    words = [translate(locale, f"common.{kind}"), major_name, kind, f"{kind}-{major}"]
    keywords = [w for i, w in enumerate(words) if w and w.lower() not in
                {v.lower() for v in words[:i]}]  # fmt: skip
    return {
        "service_code": f"{kind}-{major}-{minor}",
        "service_name": name,
        "description": condition or name,
        "metadata": True,  # the place (grid) or component attribute: see services/{code}.json
        "type": "realtime",
        "keywords": ",".join(keywords),
        "group": major_name,
    }


@bp.get("/services.json")
@requires("open311.read")
def service_list() -> Response:
    """The event and component classes as services."""
    note(resource="open311 services")
    _service_query()
    found = services()
    with found.pool.connection() as conn:
        rows = conn.execute(_services(found.settings.locale) + " ORDER BY 1 DESC, 2, 3").fetchall()
    return jsonify([_service_of(tuple(r), found.settings.locale) for r in rows])


def _find_service(conn: psycopg.Connection, code: str) -> tuple[Any, ...]:
    kind, major, minor = _service(code)
    row = conn.execute(
        sql.SQL("SELECT * FROM ({}) s WHERE kind = %s AND major = %s AND minor = %s").format(
            sql.SQL(_services(services().settings.locale))  # type: ignore[arg-type]
        ),
        (kind, major, minor),
    ).fetchone()
    if row is None:
        raise NotFound(f"no service {code}")
    return tuple(row)


@bp.get("/services/<code>.json")
@requires("open311.read")
def service_definition(code: str) -> Response:
    """The attributes a request of this service may or must carry."""
    note(resource=f"open311 service {code[:40]}")
    _service_query()
    found = services()
    with found.pool.connection() as conn:
        kind = _find_service(conn, code)[0]
    chinese = found.settings.locale == class_text.BASE  # the standard's own terms beside
    if kind == "component":
        attribute = {
            "variable": True,
            "code": "component",
            "datatype": "string",
            "required": True,
            "datatype_description": "the component's 16- or 17-digit code"
            + (" (部件编码)" if chinese else ""),
            "order": 1,
            "description": ("部件编码：" if chinese else "") + "the code on the component's plate",
        }
    else:
        attribute = {
            "variable": True,
            "code": "grid",
            "datatype": "string",
            "required": False,
            "datatype_description": "a 14- or 15-digit unit grid code"
            + (" (单元网格编码)" if chinese else ""),
            "order": 1,
            "description": ("单元网格编码: " if chinese else "")
            + "the place, instead of address_string or address_id",
        }
    return jsonify({"service_code": code, "attributes": [attribute]})


def _contact(params: Mapping[str, str]) -> str:
    parts = []
    for name, limit in _CONTACT:
        value = params.get(name, "").strip()
        text_limits.Limit(name, limit).check(value)
        if value:
            parts.append(value)
    return "; ".join(parts)


def _description(params: Mapping[str, str], service_name: str) -> str:
    """Line breaks of a hotline's notes become spaces; other control characters are refused
    (by the case store, with the 4000-character limit)."""
    text = re.sub(r"[\r\n\t]+", " ", params.get("description", "")).strip()
    return text or service_name


def _place(conn: psycopg.Connection, params: Mapping[str, str]) -> tuple[str, Any, str]:
    """(the field that gave the place, the place spec for the case store, the address)."""
    given = [name for name in _LOCATIONS if params.get(name, "").strip()]
    if len(given) != 1:
        raise InvalidInput(
            "give the place in exactly one of address_string, address_id, attribute[grid]"
        )
    field = given[0]
    value = params[field].strip()
    if field == "address_string":
        return field, {"address": _ADDRESS.check(value)}, value
    if field == "attribute[grid]":
        if not re.fullmatch(r"[0-9]{14,15}", value):
            raise InvalidInput("attribute[grid] must be a 14- or 15-digit unit grid code")
        return field, {"grid": value}, ""
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise InvalidInput("address_id must be a number")
    # The address's own point, looked up where the map is: never one from outside.
    return field, {"address_id": int(value)}, ""


@bp.post("/requests.json")
@requires("open311.submit")
def submit() -> tuple[Response, int]:
    """A complaint from a partner system: a new case in `reported`, source city_platform."""
    raw = request.get_data(cache=True)
    digest = hashlib.sha256(raw).hexdigest()
    note(resource="open311 requests", request_sha256=digest)
    if request.mimetype != "application/x-www-form-urlencoded":
        raise InvalidInput("send the request form-encoded (application/x-www-form-urlencoded)")
    params = _single(_form(raw, request.mimetype_params.get("charset", "utf-8")))
    for name, why in _REFUSED.items():
        if name in params:
            raise InvalidInput(
                f"{name} is not accepted: {why}; give address_string, address_id or attribute[grid]"
            )
    unknown = sorted(set(params) - _POST_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown parameter {unknown[0][:40]!r}")
    _jurisdiction(params)
    code = params.get("service_code", "")
    if not code:
        raise InvalidInput("service_code is required")
    found = services()
    who = identity()
    with found.pool.connection() as conn, conn.transaction():
        kind, major, minor, _, name, _ = _find_service(conn, code)
        case: dict[str, Any] = {
            "source": SOURCE,
            "kind": kind,
            "major": major,
            "minor": minor,
            "description": _description(params, name),
            "open311": {"service_code": code, "request_sha256": digest},
        }
        address = params.get("address_string", "").strip()
        field = "attribute[component]"
        if kind == "component":
            component = params.get(field, "").strip()
            if not component:
                raise InvalidInput(f"a {code} request names its component in {field}")
            if component[6:8] != major or component[8 : 8 + len(minor)] != minor:
                raise InvalidInput(f"{field}: {component[:20]} is not a component of {code}")
            case["component"] = component
            _ADDRESS.check(address)
        else:
            field, case["place"], address = _place(conn, params)
        if "address_id" in params:
            case["open311"]["address_id"] = params["address_id"]
        tiles = found.tile_source()  # where the map is: this process, or the renderer
        try:
            resolved = tiles.place(store.place_spec(case), anywhere=True)  # any street
            number = store.create(
                conn,
                found.settings,
                None,
                found.calendar(),
                account=who.account,
                params=case,
                signed_action=None,  # a machine submission: audited with its request hash
                contact=Contact(_contact(params), "") if _contact(params) else None,
                resolved=resolved,
                system_fields=frozenset({"open311"}),
            )
        except NotFound as exc:
            raise InvalidInput(f"{field}: {exc.message}") from None
        address = address or (resolved.address if "address_id" in params else "")
        if address:
            conn.execute("UPDATE city_case SET address = %s WHERE number = %s", (address, number))
        deadline = conn.execute(
            "SELECT stage_deadline FROM city_case WHERE number = %s", (number,)
        ).fetchone()
        assert resolved.pixel is not None  # tiles.source: a place always has its pixel
        pixel = place.pixel_at(len(tiles.levels()) - 1, *resolved.pixel)._asdict()
        note(resource=f"case {number}", open311="submit", request_sha256=digest, service_code=code)
        by = _local(deadline[0]) if deadline and deadline[0] else None
        notice = f"recorded as case {number}; an operator reviews it" + (f" by {by}" if by else "")
        answer = jsonify([{"service_request_id": number, "service_notice": notice}])
        answer.status_code = 201
        queue_with_change(conn, answer)  # the submission's entry commits with its case
    on_map.redraw(tiles, pixel)
    return answer, 201


def _local(moment: dt.datetime) -> str:
    """ISO 8601 with the install's zone, to the second."""
    zone = ZoneInfo(services().settings.work_timezone)
    return moment.astimezone(zone).isoformat(timespec="seconds")


def _moment(params: Mapping[str, str], name: str) -> dt.datetime | None:
    """A W3C date-time with its zone, or a date (the start of that day, the install's zone)."""
    value = params.get(name)
    if value is None:
        return None
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(), ZoneInfo(services().settings.work_timezone))
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{name} must be a W3C date-time such as 2026-04-14T06:37:38+08:00"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} needs a time zone, e.g. 2026-04-14T06:37:38+08:00")
    return moment


def _window(params: Mapping[str, str]) -> tuple[dt.datetime, dt.datetime]:
    """The requested_datetime range: at most 90 days, the most recent 90 by default."""
    start, end = _moment(params, "start_date"), _moment(params, "end_date")
    if start is None and end is None:
        end = dt.datetime.now(dt.UTC)
    try:
        if start is None:
            assert end is not None
            start = end - MAX_SPAN
        if end is None:
            end = start + MAX_SPAN
    except OverflowError:
        raise InvalidInput("start_date or end_date is out of range") from None
    if end < start:
        raise InvalidInput("end_date is before start_date")
    if end - start > MAX_SPAN:
        raise InvalidInput("start_date to end_date may span at most 90 days")
    return start, end


def _codes(value: str, name: str, limit: int = MAX_IDS) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or len(items) > limit:
        raise InvalidInput(f"{name} takes 1 to {limit} comma-separated values")
    return items


def _read(locale: str) -> str:
    """A partner's cases with their class's name in the install's language."""
    return (
        """SELECT c.number, c.kind, c.major, c.minor, t.name, c.state,
        c.description, c.address, c.created_at,
        (SELECT max(v.at) FROM case_event v WHERE v.case_id = c.id), o.name,
        coalesce(k.department, e.department), c.duplicate_of
    FROM city_case c
    LEFT JOIN component_class k ON c.kind = 'component' AND (k.major, k.minor) = (c.major, c.minor)
    LEFT JOIN event_class e ON c.kind = 'event' AND (e.major, e.minor) = (c.major, c.minor)
    LEFT JOIN """
        + class_text.relation(locale)
        + """ t ON (t.kind, t.major, t.minor) = (c.kind, c.major, c.minor)
    LEFT JOIN organisation o ON o.code = c.bureau
    WHERE c.reporter = %s AND c.source = %s"""
    )


def _request_of(row: tuple[Any, ...], locale: str) -> dict[str, Any]:
    """A case as the specification's service request, without lat, long or any point."""
    (number, kind, major, minor, service_name, state, description, address, created,
     updated, bureau, department, duplicate_of) = row  # fmt: skip
    notes = f"{translate(locale, 'state.' + state)} ({state})"
    if duplicate_of:
        notes += f"; duplicate of {duplicate_of}"
    return {
        "service_request_id": number,
        "status": "open" if state in flow.OPEN else "closed",
        "status_notes": notes,
        "service_name": service_name,
        "service_code": f"{kind}-{major}-{minor}",
        "description": description,
        "agency_responsible": bureau or department or "",
        "requested_datetime": _local(created),
        "updated_datetime": _local(updated or created),
        "address": address,
    }


def _query(
    conn: psycopg.Connection, account: str, extra: str, values: list[Any]
) -> list[dict[str, Any]]:
    locale = services().settings.locale
    rows = conn.execute(
        (_read(locale) + extra + " ORDER BY c.created_at DESC, c.id DESC LIMIT %s").encode(),
        [account, SOURCE, *values, MAX_RESULTS],
    ).fetchall()
    return [_request_of(tuple(r), locale) for r in rows]


@bp.get("/requests.json")
@requires("open311.read")
def request_list() -> Response:
    """The partner's own requests: by id, or by service, status and a ≤ 90-day window."""
    params = _single(request.args.to_dict(flat=False))
    note(resource="open311 requests", query=request.query_string.decode("utf-8", "replace")[:256])
    unknown = sorted(set(params) - _LIST_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown parameter {unknown[0][:40]!r}")
    _jurisdiction(params)
    extra, values = "", list[Any]()
    if "service_request_id" in params:  # the specification: then every other filter is ignored
        ids = _codes(params["service_request_id"], "service_request_id")
        if not all(REQUEST_ID.match(i) for i in ids):
            raise InvalidInput("service_request_id must look like 2026-000123")
        extra, values = " AND c.number = ANY(%s)", [ids]
    else:
        start, end = _window(params)
        extra, values = " AND c.created_at BETWEEN %s AND %s", [start, end]
        if "service_code" in params:
            wanted = _codes(params["service_code"], "service_code")
            for code in wanted:
                _service(code)
            extra += " AND concat_ws('-', c.kind, c.major, c.minor) = ANY(%s::text[])"
            values.append(wanted)
        if "status" in params:
            statuses = set(_codes(params["status"], "status", 2))
            if not statuses <= {"open", "closed"}:
                raise InvalidInput("status must be open, closed or open,closed")
            if statuses == {"open"}:
                extra += " AND c.state = ANY(%s)"
                values.append(sorted(flow.OPEN))
            elif statuses == {"closed"}:
                extra += " AND c.state = ANY(%s)"
                values.append(sorted(flow.FINAL))
    with services().pool.connection() as conn:
        return jsonify(_query(conn, identity().account, extra, values))


@bp.get("/requests/<request_id>.json")
@requires("open311.read")
def request_one(request_id: str) -> Response:
    """One of the partner's requests; another's, or none, is the same 404."""
    note(resource=f"open311 request {request_id[:20]}")
    if not REQUEST_ID.match(request_id):
        raise NotFound(f"no service request {request_id[:20]}")
    with services().pool.connection() as conn:
        found = _query(conn, identity().account, " AND c.number = %s", [request_id])
    if not found:
        raise NotFound(f"no service request {request_id}")
    return jsonify(found)
