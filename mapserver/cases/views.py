"""HTTP for the case workflow. Every change is a signed action checked at the edge; each
route's policy action is declared here (a transition's comes from the workflow table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request

from audit.notes import note
from auth import actions, policy
from auth.access import ScopeContext, requires
from auth.ca_store import CaStore
from auth.gateway import identity
from mapserver import class_text
from mapserver.audit_writer import queue_with_change
from mapserver.cases import attachment_views, contact, flow, on_map, reading, store
from mapserver.cases.own_streets import place_in_own_streets
from mapserver.errors import InvalidInput
from mapserver.exchange import case_views
from mapserver.services import services

bp = Blueprint("cases", __name__, url_prefix="/cases")
bp.register_blueprint(attachment_views.bp)  # /cases/attachments, /cases/N/attachments/SHA256
bp.register_blueprint(case_views.bp)  # /cases/N/exchange, /cases/N/exchange/SOURCE/files/SHA256


def _transition_scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    """The policy action of a transition is the workflow table's, known from the URL."""
    return policy.Request(flow.transition(view_args["name"]).action)


def _signed(conn: Any, action: str, resource: str) -> tuple[dict[str, Any], int]:
    who = identity()
    verified, action_id = actions.accept(
        conn,
        who,
        request.get_json(silent=True),
        action,
        resource,
        CaStore(services().settings.pki_dir).certificate(),
    )
    note(action=action, resource=resource, signature_sha256=verified.signature_sha256)
    return dict(verified.parameters), action_id


def _create(source_action: str) -> tuple[Response, int]:
    found = services()
    who = identity()
    with found.pool.connection() as conn, conn.transaction():
        params, action_id = _signed(conn, source_action, "cases")
        if flow.SOURCES.get(str(params.get("source", ""))) != source_action:
            allowed = [s for s, a in flow.SOURCES.items() if a == source_action]
            raise InvalidInput("source must be one of " + ", ".join(allowed))
        body = request.get_json(silent=True)
        private = body.get("private") if isinstance(body, dict) else None
        tiles = found.tile_source()  # where the map is: this process, or the renderer
        number = store.create(
            conn,
            found.settings,
            None,
            found.calendar(),
            account=who.account,
            params=params,
            signed_action=action_id,
            contact=contact.from_request(params, private),
            resolved=place_in_own_streets(tiles, store.place_spec(params), who, "place"),
        )
        shown = reading.detail(conn, found, number, who)
        note(resource=f"case {number}", signed_action=action_id, case_version=1)
        answer = jsonify(shown)
        answer.status_code = 201
        queue_with_change(conn, answer)
    on_map.redraw(tiles, shown["pixel"])
    return answer, 201


@bp.post("/report")
@requires("case.report")
def report() -> tuple[Response, int]:
    """An inspector's report from the field (signed)."""
    return _create("case.report")


@bp.post("/record")
@requires("case.record")
def record() -> tuple[Response, int]:
    """A complaint (phone, web, SMS), a transfer or an instruction, recorded by an operator."""
    return _create("case.record")


@bp.get("")
@requires("case.read")
def listing() -> Response:
    found = services()
    who = identity()
    note(resource="cases", query=request.query_string.decode("utf-8", "replace")[:256])
    with found.pool.connection() as conn:
        return jsonify(reading.listing(conn, found, who, request.args))


@bp.get("/inbox")
@requires("case.read")
def inbox() -> Response:
    """What waits for the asker's roles (to accept, file, dispatch, handle, check…)."""
    found = services()
    who = identity()
    note(resource="cases inbox")
    with found.pool.connection() as conn:
        return jsonify(reading.inbox(conn, found, who, request.args))


@bp.get("/forms")
@requires("case.read")
def forms() -> Response:
    """What the browser's case forms offer, from the workflow table (states, transitions and
    their fields, sources) and the code tables (event classes, active bureaus)."""
    who = identity()
    found = services()
    with found.pool.connection() as conn:
        classes = conn.execute(
            "SELECT major, minor, major_name, name"  # noqa: S608 (a locale code, not input)
            f" FROM {class_text.relation(found.settings.locale)}"
            " WHERE kind = 'event' ORDER BY major, minor"
        ).fetchall()
        bureaus = conn.execute(
            "SELECT code, name FROM organisation WHERE kind = 'bureau' AND active ORDER BY code"
        ).fetchall()
    return jsonify(
        states=flow.STATES,
        transitions=[
            {
                "name": t.name,
                "title": t.title,
                "action": t.action,
                "needs": list(t.needs),
                "choices": {k: sorted(v) for k, v in t.choices.items()},
            }
            for t in flow.TRANSITIONS.values()
        ],
        sources=flow.SOURCES,
        event_classes=[
            {"major": a, "minor": b, "major_name": c, "name": d} for a, b, c, d in classes
        ],
        bureaus=[{"code": c, "name": n} for c, n in bureaus],
        attach=policy.permitted(who.roles, policy.Request("case.attach")),  # photos
    )


@bp.get("/<number>")
@requires("case.read")
def detail(number: str) -> Response:
    found = services()
    who = identity()
    note(resource=f"case {number}")
    with found.pool.connection() as conn:
        return jsonify(reading.detail(conn, found, number, who))


@bp.get("/<number>/bundle")
@requires("case.read")
def bundle(number: str) -> Response:
    """Every signed action of the case with the CA's CRL: verifiable offline. This request's
    audit entry states the version it read (`case_head`), so that a later export shows, by
    the log, that its bundle left no event out (see reading.head)."""
    found = services()
    who = identity()
    note(resource=reading.head_resource(number))
    with found.pool.connection() as conn:
        reading.require_visible(conn, number, who)
        doc = reading.bundle(conn, found.settings, number)
    if doc["events"]:
        note(case_head=reading.stated_head(number, doc["events"]))
    return jsonify(doc)


@bp.post("/<number>/<name>")
@requires("case.act", _transition_scope)
def act(number: str, name: str) -> Response:
    """Fire a transition: the body is a signed action `case.<name>` on `case <number>` whose
    parameters hold `from` (the state the person saw) and the transition's fields."""
    found = services()
    who = identity()
    with found.pool.connection() as conn, conn.transaction():
        reading.require_visible(conn, number, who)  # 404 outside one's streets or bureau
        params, action_id = _signed(conn, f"case.{name}", f"case {number}")
        if params.get("to") not in (None, flow.TRANSITIONS[name].target, "resume"):
            raise InvalidInput("the signed 'to' state is not where this transition leads")
        bureau = (
            reading.organisation_of(conn, who.account) if reading.only_own_bureau(who) else None
        )
        state, version = store.act(
            conn,
            found.calendar(),
            number=number,
            name=name,
            params=params,
            account=who.account,
            signed_action=action_id,
            bureau_of_actor=bureau,
            peer_org=found.settings.forwarding_org,
        )
        # A return leaves the bureau unable to see the case: it still gets its step's answer.
        shown = reading.detail(conn, found, number, who, acted=True)
        note(
            resource=f"case {number}",
            transition=name,
            to=state,
            signed_action=action_id,
            case_version=version,
        )
        answer = jsonify(shown)
        queue_with_change(conn, answer)
    on_map.redraw(found.tile_source(), shown["pixel"])
    return answer
