"""tus 1.0 over HTTP at `/device/v1/uploads` (nested in the device blueprint, so the device
guard holds): OPTIONS discovery, POST creation (with an Idempotency-Key), HEAD offset,
PATCH a checksummed chunk, DELETE termination. A finished upload answers with the stored
attachment's sha256 (`CityGrid-Attachment`), which a signed report then lists."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from flask import Blueprint, Response, request

from audit.notes import note
from auth.access import requires
from auth.gateway import identity
from mapserver.cases import media
from mapserver.device import idempotency, tus, uploads
from mapserver.device.answer import idempotent
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import Services, services

bp = Blueprint("uploads", __name__)
# The chunks' routes, nested in the device blueprint: their own rate limit
# (CITYGRID_RATE_LIMIT_UPLOADS), as many chunks make one photo.
CHUNK_ENDPOINTS = frozenset({"device.uploads.patch", "device.uploads.offset"})
LARGEST = max(media.MAX_BYTES.values())
ATTACHMENT_HEADER = "CityGrid-Attachment"
RECEIVED_HEADER = "CityGrid-Received-Sha256"  # the joined bytes before cleaning


def _headers(found: uploads.Upload) -> dict[str, str]:
    shown = {
        "Tus-Resumable": tus.VERSION,
        "Upload-Offset": str(found.offset),
        "Upload-Length": str(found.length),
        "Cache-Control": "no-store",
    }
    if found.sha256 is None:
        shown["Upload-Expires"] = tus.expires(found.expires_at)
    else:
        shown[ATTACHMENT_HEADER] = found.sha256
        if found.received_sha256:
            shown[RECEIVED_HEADER] = found.received_sha256
    return shown


# A creation's request is its headers (it has no body): the same key with another length or
# type is another request (422), never the first one's upload.
DEFINING = ("Upload-Length", "Upload-Metadata")


def _replay(conn: psycopg.Connection, kept: idempotency.Kept) -> idempotency.Kept:
    """A creation asked again: its upload as it stands now (offset, expiry, or the stored
    attachment). One that is gone (expired, purged or ended) is 410 `upload_expired`, never
    the first answer: the device creates a new upload under a new key."""
    made = json.loads(kept.body)["upload"]
    try:
        now = uploads.find(conn, identity().account, made)
    except (NotFound, uploads.Gone):
        raise uploads.Gone(
            "the upload made under this Idempotency-Key is gone (expired or ended);"
            " create a new one under a new key"
        ) from None
    return kept._replace(headers={"Location": kept.headers["Location"], **_headers(now)})


@bp.route("/uploads", methods=["OPTIONS"], provide_automatic_options=False)
@requires("device.upload")
def discovery() -> Response:
    response = Response(status=204)
    response.headers.update(tus.discovery(LARGEST))
    return response


@bp.post("/uploads")
@requires("device.upload")
def create() -> Response:
    """Creation: Upload-Length and Upload-Metadata `filetype` (a media type of
    mapserver.cases.media); 201 with Location."""
    tus.resumable(dict(request.headers))
    length = tus.upload_length(dict(request.headers), LARGEST)
    filetype = tus.metadata(dict(request.headers)).get("filetype")
    if not filetype:
        raise InvalidInput("Upload-Metadata needs filetype (e.g. image/jpeg)")
    uploads.kind_of(filetype)  # 415 before any key is claimed
    if request.get_data(cache=True):
        raise InvalidInput("creation takes no body here: PATCH the bytes")

    def change(conn: psycopg.Connection, found: Services) -> tuple[int, Any, dict[str, str]]:
        made = uploads.create(conn, identity().account, filetype, length)
        location = f"/device/v1/uploads/{made.id}"
        note(resource="device upload", upload=made.id, declared=filetype[:64], length=length)
        shown = {"upload": made.id, "location": location, "length": length}
        return 201, shown, {"Location": location, **_headers(made)}

    return idempotent(change, DEFINING, _replay)


@bp.route("/uploads/<upload_id>", methods=["HEAD"])
@requires("device.upload")
def offset(upload_id: str) -> Response:
    tus.resumable(dict(request.headers))
    note(resource="device upload", upload=upload_id[:64])
    with services().pool.connection() as conn:
        found = uploads.find(conn, identity().account, upload_id)
    response = Response(status=200)
    response.headers.update(_headers(found))
    return response


@bp.patch("/uploads/<upload_id>")
@requires("device.upload")
def patch(upload_id: str) -> Response:
    """One chunk at Upload-Offset with its Upload-Checksum; a chunk cut short by a dropped
    connection is never read whole, so nothing of it is kept."""
    tus.resumable(dict(request.headers))
    tus.content_type(request.mimetype)
    at = tus.upload_offset(dict(request.headers))
    algorithm, digest = tus.checksum(dict(request.headers))
    data = request.get_data(cache=False)
    note(resource="device upload", upload=upload_id[:64], offset=at, received_bytes=len(data))
    tus.verify(algorithm, digest, data)
    who = identity()
    with services().pool.connection() as conn:
        try:
            with conn.transaction():
                found = uploads.append(conn, who.account, upload_id, at, data)
        except uploads.Unusable as exc:
            with conn.transaction():  # bytes we never take: the upload goes at once
                uploads.terminate(conn, who.account, upload_id)
            note(removed="unusable")
            raise exc.cause from None
    if found.sha256:
        note(sha256=found.sha256)
    response = Response(status=204)
    response.headers.update(_headers(found))
    return response


@bp.delete("/uploads/<upload_id>")
@requires("device.upload")
def terminate(upload_id: str) -> Response:
    tus.resumable(dict(request.headers))
    note(resource="device upload", upload=upload_id[:64])
    with services().pool.connection() as conn, conn.transaction():
        uploads.terminate(conn, identity().account, upload_id)
    response = Response(status=204)
    response.headers["Tus-Resumable"] = tus.VERSION
    return response
