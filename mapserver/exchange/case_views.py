"""A case's messages with the city–district peer, on the case's page: the forwarding and
its acknowledgement, the peer's result with its signer and files. For whoever may see the
case (the district's liaison to the city platform records the result from here). Nested in
the cases blueprint (`/cases/...`)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from audit.notes import note
from auth.access import requires
from auth.gateway import identity
from mapserver.cases import reading
from mapserver.exchange import files
from mapserver.exchange.listing import messages
from mapserver.services import services

bp = Blueprint("case_exchange", __name__)
MAX_LISTED = 100  # of each list: a case has a few messages


@bp.get("/<number>/exchange")
@requires("case.read")
def case_messages(number: str) -> Response:
    found = services()
    note(resource=f"case {number} exchange")
    with found.pool.connection() as conn:
        reading.require_visible(conn, number, identity())
        listed = messages(conn, number, MAX_LISTED, 2**63 - 1, 2**63 - 1)
    return jsonify(me=found.settings.exchange_role or None, **listed)


@bp.get("/<number>/exchange/<source_id>/files/<sha256>")
@requires("case.read")
def case_message_file(number: str, source_id: str, sha256: str) -> Response:
    """A file that a message about the case lists (404 for any other)."""
    found = services()
    note(resource=f"case {number} exchange file", source_id=source_id[:200], sha256=sha256[:64])
    with found.pool.connection() as conn:
        reading.require_visible(conn, number, identity())
        media_type, data = files.of_message(conn, source_id, sha256, case=number)
    response = Response(data, mimetype=media_type)
    response.headers["Content-Disposition"] = "attachment"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
