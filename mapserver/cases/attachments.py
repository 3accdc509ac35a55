"""Case attachments in PostgreSQL: an upload belongs to its uploader, and a signed create
or transition of the same person that names its hash (`attachments: [sha256, …]` in the
signed parameters) links it for ever to that case and history entry. A later step of the
same person, on this case or another, may name it again (one photo of two duplicate
complaints): one more link (migration 0048), the bytes stored once.

Stored in the database (migration 0012), not in files: an attachment, the signed action
naming its hash, the case event and the audit entry then commit or roll back together, a
refusal leaves nothing behind, one backup holds a case with its evidence, and the serving
role can be given INSERT without UPDATE or DELETE. The hash is of the stored (cleaned)
bytes, so whoever downloads an attachment can check it against the signed action.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import psycopg

from mapserver.cases.media import Cleaned
from mapserver.errors import Conflict, InvalidInput, NotFound

SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
MAX_PER_ACTION = 9
# Uploads not yet attached to any case, per person and day: what one account can make the
# database hold before it attaches them (the serving role cannot delete them).
UNLINKED_PER_DAY = 30
UNLINKED_BYTES_PER_DAY = 128 << 20

_FIELDS = ("sha256", "kind", "media_type", "bytes", "width", "height", "duration_ms")
_SHOWN = ", ".join(f"a.{name}" for name in _FIELDS)
_RETURNED = ", ".join(_FIELDS)


class UploadQuota(Conflict):
    code = "upload_quota"


def described(row: tuple[Any, ...]) -> dict[str, Any]:
    """What a person may know of an attachment (never anything of its origin)."""
    sha256, kind, media_type, size, width, height, duration_ms = row
    shown: dict[str, Any] = {
        "sha256": sha256,
        "kind": kind,
        "media_type": media_type,
        "bytes": size,
    }
    if kind == "photo":
        shown.update(width=width, height=height)
    else:
        shown["duration_ms"] = duration_ms
    return shown


def store(conn: psycopg.Connection, account: str, cleaned: Cleaned, sha256: str) -> dict[str, Any]:
    """Keep an upload of `account` (the same bytes twice: the first upload); its description."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('case_attachment'), hashtext(%s))", (account,)
    )
    row = conn.execute(
        f"SELECT {_SHOWN} FROM case_attachment a"  # noqa: S608
        " WHERE a.uploader = %s AND a.sha256 = %s AND a.source_id IS NULL",
        (account, sha256),
    ).fetchone()
    if row is not None:
        return described(tuple(row))
    count, total = conn.execute(
        """SELECT count(*), coalesce(sum(a.bytes), 0) FROM case_attachment a
           WHERE a.uploader = %s AND a.uploaded_at > now() - interval '1 day'
             AND NOT EXISTS (SELECT 1 FROM case_attachment_link l WHERE l.attachment_id = a.id)""",
        (account,),
    ).fetchone() or (0, 0)
    if count >= UNLINKED_PER_DAY or total + len(cleaned.data) > UNLINKED_BYTES_PER_DAY:
        raise UploadQuota(
            f"at most {UNLINKED_PER_DAY} uploads or {UNLINKED_BYTES_PER_DAY >> 20} MiB a day"
            " may wait unattached; attach them to a case first"
        )
    row = conn.execute(
        f"""INSERT INTO case_attachment (sha256, kind, media_type, data, bytes, width, height,
                duration_ms, uploader)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING {_RETURNED}""",  # noqa: S608 - fixed column names
        (
            sha256,
            cleaned.kind,
            cleaned.media_type,
            cleaned.data,
            len(cleaned.data),
            cleaned.width,
            cleaned.height,
            cleaned.duration_ms,
            account,
        ),
    ).fetchone()
    assert row is not None
    return described(tuple(row))


def listed(params: Mapping[str, Any]) -> list[str]:
    """The hashes a signed action's parameters attach (400 naming what is wrong)."""
    value = params.get("attachments")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PER_ACTION:
        raise InvalidInput(f"attachments must be a list of at most {MAX_PER_ACTION} sha256 hashes")
    for item in value:
        if not isinstance(item, str) or not SHA256.match(item):
            raise InvalidInput(
                f"attachments: {str(item)[:20]!r} is not a sha256 hash (64 lower-case hex digits)"
            )
    if len(set(value)) != len(value):
        raise InvalidInput("attachments: a hash is listed twice")
    return list(value)


def upload_id(conn: psycopg.Connection, account: str, sha256: str) -> int:
    """The id of `account`'s own upload of `sha256` (400 when there is none: another
    person's upload is refused like one that does not exist)."""
    row = conn.execute(
        "SELECT id FROM case_attachment WHERE uploader = %s AND sha256 = %s AND source_id IS NULL",
        (account, sha256),
    ).fetchone()
    if row is None:
        raise InvalidInput(
            f"attachments: no upload {sha256} of yours; upload it first (POST /cases/attachments)"
        )
    return int(row[0])


def link(
    conn: psycopg.Connection,
    *,
    account: str,
    case_id: int,
    event_id: int,
    hashes: list[str],
) -> None:
    """Attach `account`'s own uploads to a case's history entry, for ever (an upload already
    on another step or case too: `listed` refused a hash named twice in one step); another
    person's upload is refused like one that does not exist."""
    for position, sha256 in enumerate(hashes):
        conn.execute(
            """INSERT INTO case_attachment_link (attachment_id, case_id, event_id, position)
               VALUES (%s, %s, %s, %s)""",
            (upload_id(conn, account, sha256), case_id, event_id, position),
        )


def by_event(conn: psycopg.Connection, case_id: int) -> dict[int, list[dict[str, Any]]]:
    """The attachments of a case's history entries, in the order they were signed."""
    found: dict[int, list[dict[str, Any]]] = {}
    for event_id, *row in conn.execute(
        f"""SELECT l.event_id, {_SHOWN} FROM case_attachment_link l
            JOIN case_attachment a ON a.id = l.attachment_id
            WHERE l.case_id = %s ORDER BY l.event_id, l.position""",  # noqa: S608
        (case_id,),
    ).fetchall():
        found.setdefault(event_id, []).append(described(tuple(row)))
    return found


def of_cases(conn: psycopg.Connection, numbers: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The attachments of each of the cases `numbers`, in the order they were signed."""
    found: dict[str, list[dict[str, Any]]] = {}
    for number, *row in conn.execute(
        f"""SELECT c.number, {_SHOWN} FROM case_attachment_link l
            JOIN case_attachment a ON a.id = l.attachment_id
            JOIN city_case c ON c.id = l.case_id
            WHERE c.number = ANY(%s) ORDER BY l.event_id, l.position""",  # noqa: S608
        (numbers,),
    ).fetchall():
        found.setdefault(number, []).append(described(tuple(row)))
    return found


def fetch(conn: psycopg.Connection, number: str, sha256: str) -> tuple[str, bytes]:
    """(media type, stored bytes) of an attachment of case `number`; 404 otherwise. The
    caller has checked that the asker may see the case."""
    row = None
    if SHA256.match(sha256):
        row = conn.execute(
            """SELECT a.media_type, a.data FROM case_attachment a
               JOIN case_attachment_link l ON l.attachment_id = a.id
               JOIN city_case c ON c.id = l.case_id
               WHERE c.number = %s AND a.sha256 = %s LIMIT 1""",
            (number, sha256),
        ).fetchone()
    if row is None:
        raise NotFound(f"case {number} has no attachment {sha256[:64]}")
    return str(row[0]), bytes(row[1])


def prune_unattached(conn: psycopg.Connection, older_than: dt.timedelta) -> tuple[int, int]:
    """Remove uploads that no step names, uploaded over `older_than` ago (a report or step
    never sent); (files, bytes) removed. A linked upload is never removed (the link's
    foreign key, and none is asked for). By the owner role (`citygrid case prune-uploads`):
    the serving role may not delete attachments."""
    row = conn.execute(
        """WITH gone AS (
               DELETE FROM case_attachment a
               WHERE a.uploaded_at < now() - %s
                 AND NOT EXISTS (SELECT 1 FROM case_attachment_link l
                                 WHERE l.attachment_id = a.id)
               RETURNING a.bytes)
           SELECT count(*), coalesce(sum(bytes), 0) FROM gone""",
        (older_than,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
