"""HTTP for the city–district exchange. The peer delivers bundles (role exchange_peer);
the command centre forwards cases (a signed dispatch to the organisation standing for the
city platform), forwards cases to the district from the city, answers forwarded cases,
withdraws a message the peer has not acknowledged, and reads what was sent and received.
Every act is signed; every request is audited."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from audit.notes import note
from auth import actions
from auth.access import requires
from auth.ca_store import CaStore
from auth.gateway import identity
from mapserver import json_limits, text_limits
from mapserver.cases import attachments, media, reading
from mapserver.cases import store as case_store
from mapserver.errors import Conflict, InvalidInput, NotFound
from mapserver.exchange import bundle, files, inbox, outbox
from mapserver.exchange.listing import messages as listed_messages
from mapserver.services import services

bp = Blueprint("exchange", __name__, url_prefix="/exchange")
MAX_BUNDLE = 8 << 20
MAX_TEXT = 2000
MAX_LISTED = 100  # messages of each list on one page of GET /exchange/messages
_LISTING_ARGS = frozenset({"case", "limit", "sent_before", "received_before"})
_NO_CURSOR = 2**63 - 1  # before every sequence number
_CASE_FIELDS = ("number", "kind", "major", "minor", "component_code", "description", "address",
                "grid_code", "community_code", "street_code", "source", "created_at")  # fmt: skip
# The codes of a case forwarded to the district: what it needs to record the case, checked
# before the message is queued (a message the district refuses holds back every later one).
_CODES = {
    "major": (r"[0-9]{2}", "two digits"),
    "minor": (r"[0-9]{2,3}", "two or three digits"),
    "grid": (r"[0-9]{14,15}", "a unit grid code (14 or 15 digits)"),
    "component": (r"[0-9]{16,17}", "a component code (16 or 17 digits)"),
}


def _signed(conn: Any, action: str, resource: str) -> tuple[dict[str, Any], int]:
    verified, action_id = actions.accept(
        conn,
        identity(),
        request.get_json(silent=True),
        action,
        resource,
        CaStore(services().settings.pki_dir).certificate(),
    )
    note(action=action, resource=resource, signature_sha256=verified.signature_sha256)
    return dict(verified.parameters), action_id


def _attach(conn: Any, params: dict[str, Any], content: dict[str, Any]) -> None:
    """The signer's own uploads that the signed act names (`attachments`), carried with the
    message (mapserver.exchange.files)."""
    hashes = attachments.listed(params)
    if hashes:
        content["attachments"] = files.of_uploads(conn, identity().account, hashes)


def _text(params: dict[str, Any], name: str) -> str:
    """A text the message carries to the peer, refused here as the peer would refuse it (a
    refused message holds back every later one): required, within MAX_TEXT, no control
    character."""
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"the field {name!r} is required")
    return text_limits.Limit(name, MAX_TEXT).check(value.strip())


@bp.get("")
@requires("exchange.read")
def page() -> Response:
    """The command centre's exchange page: each received message's signature and its place
    in the peer's log are checked in the browser against the peer's CA and log key."""
    from webclient import peer_ca_pem, peer_log_key_pem

    ca = CaStore(services().settings.pki_dir).cert_path.read_text("ascii")
    response = current_app.make_response(
        render_template(
            "exchange.html",
            ca_pem=ca,
            peer_ca_pem=peer_ca_pem(),
            peer_log_key_pem=peer_log_key_pem(),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/receive")
@requires("exchange.receive")
def receive() -> Response:
    """A bundle from the peer: taken in order and once, or refused with the reason."""
    found = services()
    request.max_content_length = MAX_BUNDLE
    raw = request.get_data(cache=False)
    try:
        doc = json.loads(json_limits.check(raw, MAX_BUNDLE))
    except ValueError:
        raise InvalidInput("the bundle is not JSON") from None
    sha = hashlib.sha256(raw).hexdigest()
    source = doc.get("source_id") if isinstance(doc, dict) else None
    note(resource=f"exchange {str(source)[:200]}", bundle_sha256=sha)
    with found.pool.connection() as conn, conn.transaction():
        ack = inbox.receive(
            conn, found.settings, lambda spec: found.tile_source().place(spec, anywhere=True),
            found.calendar(), doc=doc, sha256=sha, peer_account=identity().account,
        )  # fmt: skip
    note(exchange_received=ack)
    return jsonify(ack)


@bp.get("/files/<sha256>")
@requires("exchange.receive")
def file_held(sha256: str) -> Response:
    """Whether this install holds the file already (the peer asks before it sends one)."""
    found = services()
    note(resource="exchange files", sha256=sha256[:64])
    inbox.require_configured(found.settings)
    with found.pool.connection() as conn:
        if not files.held(conn, sha256):
            raise NotFound(f"no file {sha256[:64]}")
    return jsonify(sha256=sha256, held=True)


@bp.put("/files/<sha256>")
@requires("exchange.receive")
def file_take(sha256: str) -> tuple[Response, int]:
    """A file a message of the peer lists, by its SHA-256, its Content-Type its media type:
    kept once it hashes to its name and carries nothing but pixels or audio frames."""
    found = services()
    inbox.require_configured(found.settings)
    declared = request.mimetype
    kind = media.kind_of(declared)  # 415 before the body is read
    request.max_content_length = media.MAX_BYTES[kind]
    data = request.get_data(cache=False)
    note(resource="exchange files", sha256=sha256[:64], declared=declared, bytes=len(data))
    with found.pool.connection() as conn, conn.transaction():
        added = files.take(conn, sha256, declared, data)
    return jsonify(sha256=sha256, held=True), 201 if added else 200


@bp.get("/messages/<source_id>/files/<sha256>")
@requires("exchange.read")
def message_file(source_id: str, sha256: str) -> Response:
    """A file that a message sent or received lists, for the command centre's page (which
    checks it against the hash the message's log entry vouches for)."""
    found = services()
    note(resource=f"exchange {source_id[:200]} file", sha256=sha256[:64])
    with found.pool.connection() as conn:
        media_type, data = files.of_message(conn, source_id, sha256)
    response = Response(data, mimetype=media_type)
    response.headers["Content-Disposition"] = "attachment"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _listing_args(args: Any) -> tuple[str | None, int, int, int]:
    """The case, page size and the two lists' cursors of `GET /exchange/messages`."""
    unknown = set(args) - _LISTING_ARGS
    if unknown:
        raise InvalidInput(f"unknown query parameter: {', '.join(sorted(unknown))}")
    numbers = {}
    for name, default, top in (
        ("limit", MAX_LISTED, MAX_LISTED),
        ("sent_before", _NO_CURSOR, _NO_CURSOR),
        ("received_before", _NO_CURSOR, _NO_CURSOR),
    ):
        given = args.get(name)
        if given is None:
            numbers[name] = default
            continue
        if not (
            given.isascii() and given.isdigit() and len(given) <= 19 and 1 <= int(given) <= top
        ):
            raise InvalidInput(f"{name} must be a whole number from 1 to {top}")
        numbers[name] = int(given)
    case = args.get("case")
    if case is not None and not reading.NUMBER.match(case):
        raise InvalidInput("case must be a case number such as 2026-000123")
    return case, numbers["limit"], numbers["sent_before"], numbers["received_before"]


def _summary(conn: Any, number: str) -> dict[str, Any]:
    """What the city is told of a district case: codes, class, text; never a point."""
    row = conn.execute(
        f"SELECT {', '.join(_CASE_FIELDS)} FROM city_case WHERE number = %s",  # noqa: S608
        (number,),
    ).fetchone()
    assert row is not None
    case = dict(zip(_CASE_FIELDS, row, strict=True))
    case["created_at"] = case["created_at"].isoformat()
    case["grid"] = case.pop("grid_code")
    case["component"] = case.pop("component_code")
    return {k: v for k, v in case.items() if v not in (None, "")}


@bp.post("/cases/<number>/forward")
@requires("case.dispatch")
def forward_case(number: str) -> Response:
    """Forward a filed case to the city platform: a signed `case.dispatch` on `case NUMBER`
    to the organisation that stands for the city (setting exchange_peer_org)."""
    found = services()
    who = identity()
    settings = found.settings
    if settings.exchange_role != "district":
        raise NotFound("this install forwards no cases to a city platform")
    with found.pool.connection() as conn, conn.transaction():
        reading.require_visible(conn, number, who)
        params, action_id = _signed(conn, "case.dispatch", f"case {number}")
        if params.get("bureau") != settings.exchange_peer_org:
            raise InvalidInput(f"bureau must be {settings.exchange_peer_org!r} (the city platform)")
        state, version = case_store.act(
            conn, found.calendar(), number=number, name="dispatch", params=params,
            account=who.account, signed_action=action_id,
        )  # fmt: skip
        content: dict[str, Any] = {
            "case": _summary(conn, number),
            "note": str(params.get("note", ""))[:2000],
        }
        carried, left = files.of_case(conn, number)
        if carried:
            content["attachments"] = carried
        if left:
            content["attachments_left"] = left
        said = outbox.enqueue(
            conn, settings, kind="case.forward", content=content, signed_action=action_id,
            case_number=number,
        )  # fmt: skip
    note(
        resource=f"case {number}",
        transition="dispatch",
        to=state,
        exchange=said,
        case_version=version,
    )
    return jsonify(number=number, state=state, exchange=said)


@bp.post("/forward")
@requires("exchange.forward")
def forward_new() -> tuple[Response, int]:
    """From the city platform: a case for the district (signed `exchange.forward` on
    `exchange cases`: kind, major, minor, description and a grid or component code)."""
    found = services()
    if found.settings.exchange_role != "city":
        raise NotFound("only the city platform forwards new cases to a district")
    with found.pool.connection() as conn, conn.transaction():
        params, action_id = _signed(conn, "exchange.forward", "exchange cases")
        kind = params.get("kind")
        if kind not in ("event", "component"):
            raise InvalidInput("kind must be event or component")
        needed = ("major", "minor", "grid") if kind == "event" else ("component",)
        case: dict[str, Any] = {"kind": kind}
        for name, (pattern, what) in _CODES.items():
            value = params.get(name)
            if value is None and name not in needed:
                continue
            if not isinstance(value, str) or not re.fullmatch(pattern, value):
                raise InvalidInput(f"{name} must be {what}")
            case[name] = value
        case["description"] = _text(params, "description")
        content: dict[str, Any] = {"case": case}
        _attach(conn, params, content)
        said = outbox.enqueue(
            conn, found.settings, kind="case.forward", content=content, signed_action=action_id
        )
    note(resource="exchange cases", exchange=said)
    return jsonify(exchange=said), 201


@bp.post("/messages/<source_id>/result")
@requires("exchange.answer")
def answer(source_id: str) -> Response:
    """Answer a forwarded case with its result: signed `exchange.result` on
    `exchange SOURCE_ID` with `result` (text) and `outcome` (handled or refused)."""
    found = services()
    with found.pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "SELECT kind, answered_by, content, case_number FROM exchange_inbox"
            " WHERE source_id = %s FOR UPDATE",
            (source_id,),
        ).fetchone()
        if row is None or row[0] != "case.forward":
            raise NotFound(f"no forwarded case {source_id}")
        if row[1] is not None:
            raise Conflict(f"{source_id} was answered already ({row[1]})")
        params, action_id = _signed(conn, "exchange.result", f"exchange {source_id}")
        outcome = params.get("outcome", "handled")
        if outcome not in ("handled", "refused"):
            raise InvalidInput("outcome must be handled or refused")
        content = {
            "in_reply_to": source_id,
            "case": (row[2].get("case") or {}).get("number"),
            "result": _text(params, "result"),
            "outcome": outcome,
        }
        _attach(conn, params, content)
        said = outbox.enqueue(
            conn, found.settings, kind="case.result", content=content, signed_action=action_id,
            case_number=row[3], in_reply_to=source_id,
        )  # fmt: skip
        conn.execute(
            "UPDATE exchange_inbox SET answered_by = %s WHERE source_id = %s",
            (said["source_id"], source_id),
        )
    note(resource=f"exchange {source_id}", exchange=said)
    return jsonify(exchange=said)


@bp.post("/messages/<source_id>/withdraw")
@requires("exchange.withdraw")
def withdraw(source_id: str) -> Response:
    """Withdraw a message of this install's outbox the peer has not acknowledged (one it
    refuses holds back every later one): signed `exchange.withdraw` on `exchange SOURCE_ID`
    with `reason`. The withdrawal takes the message's place under its number and is sent
    like any message; the withdrawn act and its audit entry stay."""
    found = services()
    with found.pool.connection() as conn, conn.transaction():
        row = conn.execute(
            "SELECT seq, kind, content, acked_at, withdrawn_at FROM exchange_outbox"
            " WHERE source_id = %s FOR UPDATE",
            (source_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no message {source_id} was sent from here")
        if row[4] is not None:
            raise Conflict(f"{source_id} was withdrawn already")
        if row[3] is not None:
            raise Conflict(f"{source_id} was acknowledged by the peer: it cannot be withdrawn")
        params, action_id = _signed(conn, "exchange.withdraw", f"exchange {source_id}")
        said = outbox.withdraw(
            conn, found.settings, seq=int(row[0]), source_id=source_id, kind=str(row[1]),
            content=row[2], reason=_text(params, "reason"), signed_action=action_id,
        )  # fmt: skip
    note(resource=f"exchange {source_id}", exchange=said, withdrawn=row[1])
    return jsonify(exchange=said)


@bp.get("/messages")
@requires("exchange.read")
def messages() -> Response:
    """What was sent (with its delivery state) and received, newest first, `limit` of each
    (100 at most); `?case=NUMBER` for one case. Older messages page by their sequence
    numbers: each list's `older_*` value, passed back as `sent_before` or
    `received_before`, asks for the next older page (null: none is left)."""
    found = services()
    number, limit, sent_before, received_before = _listing_args(request.args)
    note(resource="exchange messages", case=number)
    with found.pool.connection() as conn:
        listed = listed_messages(conn, number, limit, sent_before, received_before)
    district = found.settings.exchange_role == "district"
    return jsonify(
        me=found.settings.exchange_role,
        peer_org=found.settings.exchange_peer_org if district else None,
        **listed,
    )


__all__ = ["bp", "bundle"]
