"""HTTP for case attachments: upload the raw bytes of a photo or voice recording (cleaned
before anything is stored), and download them from a case one may see. Nested in the
cases blueprint (`/cases/...`)."""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, jsonify, request

from audit.notes import note
from auth.access import requires
from auth.gateway import identity
from mapserver.cases import attachments, media, reading
from mapserver.services import services

bp = Blueprint("attachments", __name__)


@bp.post("/attachments")
@requires("case.attach")
def upload() -> tuple[Response, int]:
    """The body is the attachment's bytes, its Content-Type one of media.ACCEPTED; the
    answer describes what was stored, by the SHA-256 of the stored (cleaned) bytes."""
    declared = request.mimetype
    kind = media.kind_of(declared)  # 415 before the body is read
    request.max_content_length = media.MAX_BYTES[kind]  # this route only; elsewhere 1 MiB
    data = request.get_data(cache=False)
    note(resource="case attachments", declared=declared, received_bytes=len(data))
    cleaned = media.clean(declared, data)
    sha256 = hashlib.sha256(cleaned.data).hexdigest()
    found = services()
    who = identity()
    with found.pool.connection() as conn, conn.transaction():
        shown = attachments.store(conn, who.account, cleaned, sha256)
    note(sha256=sha256, kind=cleaned.kind, bytes=len(cleaned.data))
    return jsonify(shown), 201


@bp.get("/<number>/attachments/<sha256>")
@requires("case.read")
def download(number: str, sha256: str) -> Response:
    """The stored bytes of an attachment, to whoever may see the case (404 otherwise)."""
    found = services()
    who = identity()
    note(resource=f"case {number} attachment", sha256=sha256[:64])
    with found.pool.connection() as conn:
        reading.require_visible(conn, number, who)  # 404 unless the asker may see the case
        media_type, data = attachments.fetch(conn, number, sha256)
    response = Response(data, mimetype=media_type)
    response.headers["Content-Disposition"] = (
        f'inline; filename="{sha256}.{media.EXTENSIONS.get(media_type, "bin")}"'
    )
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
