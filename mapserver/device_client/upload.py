"""One photo by tus 1.0: created under the photo's own Idempotency-Key (a lost answer
gives the same upload again), then checksummed chunks from the offset the server reports
(HEAD after any interruption, or the offset a 409 names), never from the client's guess."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from mapserver.device_client.link import Link
from mapserver.device_client.plan import Answer
from mapserver.device_client.queue import Photo, Queue
from mapserver.device_client.steps import Again, Refused, checked

TUS = {"Tus-Resumable": "1.0.0"}


def upload(
    link: Link, queue: Queue, photo: Photo, chunk_bytes: int, advance: Callable[[int], None]
) -> str:
    """Send the photo until the server holds all of it; the stored attachment's sha256."""
    if photo.location is None:
        meta = "filetype " + base64.b64encode(photo.media_type.encode()).decode()
        headers = {
            **TUS,
            "Upload-Length": str(photo.length),
            "Upload-Metadata": meta,
            "Idempotency-Key": photo.create_key,
        }
        answer = _present(queue, photo, link.call("POST", "/device/v1/uploads", headers))
        location = answer.headers.get("location", "")
        if not location.startswith("/device/v1/uploads/"):
            raise Refused("the server named no upload location")
        queue.located(photo.id, location)
        photo = queue.photo(photo.id)
        if "citygrid-attachment" in answer.headers:  # a replay of one finished already
            return _finished(queue, photo, answer, advance)
        offset = int(answer.headers.get("upload-offset", "0"))
    else:
        answer = _present(queue, photo, link.call("HEAD", photo.location, TUS))
        if "citygrid-attachment" in answer.headers:
            return _finished(queue, photo, answer, advance)
        offset = int(answer.headers["upload-offset"])
    assert photo.location is not None
    advance(offset - photo.sent)
    while True:
        chunk = queue.photo_bytes(photo.id, offset, chunk_bytes)
        digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
        headers = {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha256 {digest}",
        }
        answer = link.call("PATCH", photo.location, headers, chunk)
        if answer.status == 409 and answer.error()[0] == "offset_mismatch":
            stands = int(answer.json()["offset"])  # our last chunk did arrive after all
            advance(stands - offset)
            offset = stands
            continue
        if answer.status == 460:  # damaged on the way: the same chunk again
            raise Again("checksum mismatch")
        answer = _present(queue, photo, answer)
        if "citygrid-attachment" in answer.headers:
            advance(photo.length - offset)
            return _finished(queue, photo, answer, lambda n: None)
        new = int(answer.headers["upload-offset"])
        advance(new - offset)
        offset = new
        queue.acknowledged(photo.id, offset)


def _present(queue: Queue, photo: Photo, answer: Answer) -> Answer:
    """The answer about an upload the server still has; a removed or expired one is
    created anew under a new key (nothing of it is left on the server). A creation asked
    again under its key once its upload is gone is 410 `upload_expired` too."""
    if answer.status in (404, 410) and (photo.location or answer.error()[0] == "upload_expired"):
        queue.upload_lost(photo.id)
        raise Again(f"upload {answer.status}: created anew", at_once=True)
    return checked(answer)


def _finished(queue: Queue, photo: Photo, answer: Answer, advance: Callable[[int], None]) -> str:
    received = answer.headers.get("citygrid-received-sha256")
    if received is not None and received != photo.sha256:
        raise Refused(f"photo {photo.position + 1} arrived other than it was sent")
    sha256 = answer.headers["citygrid-attachment"]
    queue.attached(photo.id, sha256)
    advance(photo.length - photo.sent)
    return sha256
