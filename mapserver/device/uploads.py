"""Resumable uploads in PostgreSQL (migration 0019): an upload is a row with its declared
type and length and the offset it has reached; each accepted PATCH is one chunk row. When
the last byte arrives the chunks are joined, cleaned (mapserver.cases.media: the type read
from the bytes, EXIF/XMP removed) and kept as the uploader's case attachment, and the
chunks go. Unfinished uploads expire EXPIRES after their last chunk and are removed."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import NamedTuple

import psycopg

from mapserver.cases import attachments, media
from mapserver.device import tus
from mapserver.errors import CityGridError, NotFound

EXPIRES = dt.timedelta(hours=24)  # an unfinished upload lives this long after its last chunk
KEEP_FINISHED = dt.timedelta(hours=24)  # a finished upload's record (HEAD tells its sha256)
PER_HOUR = 120  # uploads a device's account may start per hour
OPEN_AT_ONCE = 30  # unfinished uploads per account


class Gone(CityGridError):
    status = 410
    code = "upload_expired"


class TooMany(CityGridError):
    status = 429
    code = "upload_rate"


class Unusable(Exception):
    """The finished bytes are not a photo or recording we take: the upload must go."""

    def __init__(self, cause: CityGridError):
        super().__init__(cause.message)
        self.cause = cause


class Upload(NamedTuple):
    id: str
    kind: str
    media_type: str
    length: int
    offset: int
    sha256: str | None
    expires_at: dt.datetime
    received_sha256: str | None = None  # of the joined bytes as received, before cleaning


def _parse_id(upload_id: str) -> str:
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        raise NotFound("no such upload") from None


def purge(conn: psycopg.Connection) -> int:
    """Remove expired unfinished uploads (with their chunks) and old finished records."""
    return conn.execute(
        """DELETE FROM device_upload
           WHERE (sha256 IS NULL AND expires_at <= now())
              OR (sha256 IS NOT NULL AND created_at <= now() - %s)""",
        (KEEP_FINISHED,),
    ).rowcount


def kind_of(filetype: str) -> str:
    """The attachment kind of a creation's declared `filetype`: 415 naming the header it came
    in (media.kind_of's words are of a POST's Content-Type)."""
    if filetype in media.ACCEPTED:
        return media.kind_of(filetype)
    raise media.UnsupportedType(
        f"Upload-Metadata filetype must be one of {', '.join(media.ACCEPTED)}"
    )


def create(conn: psycopg.Connection, account: str, media_type: str, length: int) -> Upload:
    """A new upload of `account` (429 beyond PER_HOUR or OPEN_AT_ONCE)."""
    kind = kind_of(media_type)  # 415 for a type that is never taken
    if length > media.MAX_BYTES[kind]:
        raise tus.TooLarge(f"a {kind} may have at most {media.MAX_BYTES[kind] >> 20} MiB")
    purge(conn)
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('device_upload'), hashtext(%s))", (account,)
    )
    started, unfinished = conn.execute(
        """SELECT count(*) FILTER (WHERE created_at > now() - interval '1 hour'),
                  count(*) FILTER (WHERE sha256 IS NULL)
           FROM device_upload WHERE account = %s""",
        (account,),
    ).fetchone() or (0, 0)
    if started >= PER_HOUR:
        raise TooMany(f"at most {PER_HOUR} uploads an hour per device account")
    if unfinished >= OPEN_AT_ONCE:
        raise TooMany(f"at most {OPEN_AT_ONCE} unfinished uploads; finish or delete one")
    row = conn.execute(
        """INSERT INTO device_upload (id, account, kind, media_type, length, expires_at)
           VALUES (%s, %s, %s, %s, %s, now() + %s)
           RETURNING id, kind, media_type, length, upload_offset, sha256, expires_at""",
        (str(uuid.uuid4()), account, kind, media_type, length, EXPIRES),
    ).fetchone()
    assert row is not None
    return Upload(str(row[0]), *row[1:])


def find(conn: psycopg.Connection, account: str, upload_id: str, lock: bool = False) -> Upload:
    """The account's upload (404 for another's or a removed one, 410 once expired)."""
    row = conn.execute(
        "SELECT id, kind, media_type, length, upload_offset, sha256, expires_at,"
        " sha256 IS NULL AND expires_at <= now(), received_sha256 FROM device_upload"
        " WHERE id = %s AND account = %s" + (" FOR UPDATE" if lock else ""),
        (_parse_id(upload_id), account),
    ).fetchone()
    if row is None:
        raise NotFound("no such upload")
    if row[7]:
        raise Gone("this upload has expired; start a new one")
    return Upload(str(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[8])


def append(
    conn: psycopg.Connection, account: str, upload_id: str, offset: int, data: bytes
) -> Upload:
    """Add a verified chunk at `offset`; on the last byte, store the attachment."""
    found = find(conn, account, upload_id, lock=True)
    if offset != found.offset or found.sha256 is not None:
        raise tus.OffsetMismatch(found.offset)
    if offset + len(data) > found.length:
        raise tus.TooLarge("the chunk goes beyond Upload-Length")
    if data:
        conn.execute(
            "INSERT INTO device_upload_chunk (upload_id, start, data) VALUES (%s, %s, %s)",
            (found.id, offset, data),
        )
    row = conn.execute(
        """UPDATE device_upload SET upload_offset = upload_offset + %s, expires_at = now() + %s
           WHERE id = %s RETURNING upload_offset, expires_at""",
        (len(data), EXPIRES, found.id),
    ).fetchone()
    assert row is not None
    found = found._replace(offset=row[0], expires_at=row[1])
    if found.offset < found.length:
        return found
    try:
        stored, received = _finish(conn, account, found)
        return found._replace(sha256=stored, received_sha256=received)
    except attachments.UploadQuota:
        raise  # the upload stays: its last chunk can be sent again later
    except CityGridError as exc:  # 415 / 413 / 400 from cleaning
        raise Unusable(exc) from exc


def _finish(conn: psycopg.Connection, account: str, found: Upload) -> tuple[str, str]:
    """Join, clean and keep the upload as a case attachment; the sha256 of the stored
    bytes and of the bytes received."""
    whole = b"".join(
        bytes(r[0])
        for r in conn.execute(
            "SELECT data FROM device_upload_chunk WHERE upload_id = %s ORDER BY start",
            (found.id,),
        ).fetchall()
    )
    assert len(whole) == found.length, "chunks are contiguous by their offsets"
    cleaned = media.clean(found.media_type, whole)  # 415/413/400: the caller removes it
    sha256 = hashlib.sha256(cleaned.data).hexdigest()
    attachments.store(conn, account, cleaned, sha256)
    conn.execute("DELETE FROM device_upload_chunk WHERE upload_id = %s", (found.id,))
    received = hashlib.sha256(whole).hexdigest()
    conn.execute(
        "UPDATE device_upload SET sha256 = %s, received_sha256 = %s WHERE id = %s",
        (sha256, received, found.id),
    )
    return sha256, received


def terminate(conn: psycopg.Connection, account: str, upload_id: str) -> None:
    """Remove an upload and its chunks (tus termination; a stored attachment stays)."""
    removed = conn.execute(
        "DELETE FROM device_upload WHERE id = %s AND account = %s",
        (_parse_id(upload_id), account),
    ).rowcount
    if not removed:
        raise NotFound("no such upload")
