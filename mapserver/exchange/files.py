"""The photos and voice recordings an exchange message carries (migration 0043).

A message's content lists them (`attachments`: each file's SHA-256, kind, media type, size,
and the picture's size or the recording's length), so the sender's log vouches for every
hash as for the rest of the content, and the signed acts behind the message name them. The
bytes travel beside the bundle, each by its hash (PUT /exchange/files/SHA256), before the
bundle that names them; the receiver takes a bundle only when it holds every file it lists,
each as described. Files are kept by hash in `exchange_file`, never changed: a message's
files are copied there when it is queued, so nothing done to the case or the uploads later
can hold the message back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

import psycopg

from mapserver.cases import attachments, media
from mapserver.errors import Conflict, InvalidInput, NotFound
from mapserver.exchange.bundle import BundleRefused

# A forwarded case carries the attachments of its steps, oldest first, up to this many;
# the content says how many more it has (`attachments_left`).
MAX_PER_MESSAGE = 27
# Files the peer delivered this past week that no message taken in names: those of the
# message it is sending, and of sends that failed after their files went. Past this, a
# faulty peer is refused rather than let fill the database with files nothing names.
MAX_WAITING_BYTES = 512 << 20
WAITING_WINDOW = "7 days"
_FIELDS = ("sha256", "kind", "media_type", "bytes", "width", "height", "duration_ms")
_COLUMNS = ", ".join(_FIELDS)


class TooManyWaiting(Conflict):
    code = "files_waiting"


class FilesMissing(Conflict):
    """The bundle names files the peer has not delivered yet: send them, then the bundle."""

    code = "files_missing"

    def __init__(self, missing: list[str]):
        super().__init__(
            f"{len(missing)} file(s) the message lists were not delivered: PUT each to "
            "/exchange/files/SHA256 first"
        )
        self.missing = missing

    @property
    def details(self) -> dict[str, object]:
        return {"missing": self.missing}


def listed(content: dict[str, Any]) -> list[dict[str, Any]]:
    """The attachments a message's content lists, each checked to be a description this
    install could have made (BundleRefused naming the first that is not)."""
    items = content.get("attachments", [])
    if not isinstance(items, list) or len(items) > MAX_PER_MESSAGE:
        raise BundleRefused(f"attachments: a list of at most {MAX_PER_MESSAGE} files")
    seen: set[str] = set()
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict) or _described(item) != item:
            raise BundleRefused(f"attachment {i}: not a file's description")
        if item["sha256"] in seen:
            raise BundleRefused(f"attachment {i}: listed twice")
        seen.add(item["sha256"])
    return items


def _described(item: dict[str, Any]) -> dict[str, Any] | None:
    """`item` rebuilt from its checked fields (None when one is wrong)."""
    sha, kind, media_type, size = (item.get(k) for k in _FIELDS[:4])
    if not (isinstance(sha, str) and attachments.SHA256.match(sha)):
        return None
    if kind not in media.MAX_BYTES or media_type not in media.ACCEPTED:
        return None
    if media.kind_of(str(media_type)) != kind:
        return None
    if not _whole(size, 1, media.MAX_BYTES[str(kind)]):
        return None
    if kind == "photo":
        width, height = item.get("width"), item.get("height")
        if not (_whole(width, 1, 2**31 - 1) and _whole(height, 1, 2**31 - 1)):
            return None
        return attachments.described((sha, kind, media_type, size, width, height, None))
    duration = item.get("duration_ms")
    if not _whole(duration, 0, 2**31 - 1):
        return None
    return attachments.described((sha, kind, media_type, size, None, None, duration))


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# -- the sending side -----------------------------------------------------------------


def of_case(conn: psycopg.Connection, number: str) -> tuple[list[dict[str, Any]], int]:
    """The attachments of case `number`'s steps, oldest first, kept for sending (at most
    MAX_PER_MESSAGE), and how many more the case has."""
    rows = conn.execute(
        """SELECT a.id FROM case_attachment a
           JOIN case_attachment_link l ON l.attachment_id = a.id
           JOIN city_case c ON c.id = l.case_id
           WHERE c.number = %s ORDER BY l.event_id, l.position""",
        (number,),
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    kept = _keep(conn, ids[:MAX_PER_MESSAGE])
    return kept, max(0, len(ids) - MAX_PER_MESSAGE)


def of_uploads(conn: psycopg.Connection, account: str, hashes: list[str]) -> list[dict[str, Any]]:
    """`account`'s own uploads named by a signed act (`attachments`), kept for sending."""
    return _keep(conn, [attachments.upload_id(conn, account, sha256) for sha256 in hashes])


def _keep(conn: psycopg.Connection, ids: list[int]) -> list[dict[str, Any]]:
    """Copy attachments `ids` into exchange_file; their descriptions, in order, once each."""
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for attachment_id in ids:
        conn.execute(
            f"""INSERT INTO exchange_file ({_COLUMNS}, data, received)
                SELECT {_COLUMNS}, data, false FROM case_attachment WHERE id = %s
                ON CONFLICT (sha256) DO NOTHING""",  # noqa: S608 - fixed column names
            (attachment_id,),
        )
        described = conn.execute(
            f"SELECT {_COLUMNS} FROM case_attachment WHERE id = %s",  # noqa: S608
            (attachment_id,),
        ).fetchone()
        assert described is not None
        if described[0] not in seen:
            seen.add(described[0])
            kept.append(attachments.described(tuple(described)))
    return kept


def load(conn: psycopg.Connection, sha256: str) -> bytes:
    row = conn.execute("SELECT data FROM exchange_file WHERE sha256 = %s", (sha256,)).fetchone()
    if row is None:
        raise NotFound(f"no exchange file {sha256[:64]}")
    return bytes(row[0])


# -- the receiving side ---------------------------------------------------------------


def take(conn: psycopg.Connection, sha256: str, declared: str, data: bytes) -> bool:
    """Keep a file the peer delivered, once checked: it hashes to its name and is as clean
    as this install keeps its own. True when it was new here."""
    if not attachments.SHA256.match(sha256):
        raise NotFound("a file is named by its SHA-256 (64 lower-case hex digits)")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidInput("the file's bytes do not hash to its name")
    cleaned = media.check_clean(declared, data)
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('exchange_file'))")  # one count at a time
    waiting = conn.execute(
        f"""SELECT coalesce(sum(f.bytes), 0) FROM exchange_file f
            WHERE f.stored_at > now() - %s::interval AND {_UNNAMED}""",  # noqa: S608
        (WAITING_WINDOW,),
    ).fetchone()
    if waiting is not None and waiting[0] + len(data) > MAX_WAITING_BYTES:
        raise TooManyWaiting(
            f"{waiting[0] >> 20} MiB of files delivered this week wait for a message that"
            " names them: send that message first"
        )
    added = conn.execute(
        f"""INSERT INTO exchange_file ({_COLUMNS}, data, received)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true)
            ON CONFLICT (sha256) DO NOTHING RETURNING sha256""",  # noqa: S608
        (
            sha256,
            cleaned.kind,
            cleaned.media_type,
            len(data),
            cleaned.width,
            cleaned.height,
            cleaned.duration_ms,
            data,
        ),
    ).fetchone()
    return added is not None


_UNNAMED = """f.received AND NOT EXISTS (SELECT 1 FROM exchange_inbox m
                 WHERE m.content -> 'attachments' @> jsonb_build_array(
                     jsonb_build_object('sha256', f.sha256::text)))"""


def prune(conn: psycopg.Connection, older_than: dt.timedelta) -> tuple[int, int]:
    """Remove the files the peer delivered over `older_than` ago that no message taken in
    names (what a send that never completed left); (files, bytes) removed. Files of messages
    sent or received stay: they are evidence. By the owner role (`citygrid exchange
    prune-files`): the serving role may not delete them."""
    row = conn.execute(
        f"""WITH gone AS (DELETE FROM exchange_file f WHERE {_UNNAMED}
                AND f.stored_at < now() - %s RETURNING f.bytes)
            SELECT count(*), coalesce(sum(bytes), 0) FROM gone""",  # noqa: S608 - fixed text
        (older_than,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def held(conn: psycopg.Connection, sha256: str) -> bool:
    return bool(
        re.fullmatch(r"[0-9a-f]{64}", sha256)
        and conn.execute("SELECT 1 FROM exchange_file WHERE sha256 = %s", (sha256,)).fetchone()
    )


def require(conn: psycopg.Connection, items: list[dict[str, Any]]) -> None:
    """Every listed file is here, as described (FilesMissing, or BundleRefused on a file
    that is here but not as the message describes it)."""
    missing = []
    for item in items:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM exchange_file WHERE sha256 = %s",  # noqa: S608
            (item["sha256"],),
        ).fetchone()
        if row is None:
            missing.append(item["sha256"])
        elif attachments.described(tuple(row)) != item:
            raise BundleRefused(f"the file {item['sha256']} is not as the message describes it")
    if missing:
        raise FilesMissing(missing)


def adopt(
    conn: psycopg.Connection,
    *,
    account: str,
    source_id: str,
    number: str,
    items: list[dict[str, Any]],
) -> None:
    """Attach a forwarded case's files to its creation, as brought by message `source_id`
    on behalf of the peer's account (after the message's inbox row exists)."""
    case = conn.execute(
        """SELECT c.id, e.id FROM city_case c JOIN case_event e ON e.case_id = c.id
           WHERE c.number = %s ORDER BY e.id LIMIT 1""",
        (number,),
    ).fetchone()
    assert case is not None, "the case was created in this transaction"
    for position, item in enumerate(items):
        row = conn.execute(
            f"""INSERT INTO case_attachment ({_COLUMNS}, data, uploader, source_id)
                SELECT {_COLUMNS}, data, %s, %s FROM exchange_file WHERE sha256 = %s
                RETURNING id""",  # noqa: S608
            (account, source_id, item["sha256"]),
        ).fetchone()
        assert row is not None, "require() found every file"
        conn.execute(
            """INSERT INTO case_attachment_link (attachment_id, case_id, event_id, position)
               VALUES (%s, %s, %s, %s)""",
            (row[0], case[0], case[1], position),
        )


def of_message(
    conn: psycopg.Connection, source_id: str, sha256: str, case: str | None = None
) -> tuple[str, bytes]:
    """(media type, bytes) of a file that a message sent or received lists (about `case`,
    when given); 404 otherwise."""
    row = None
    if attachments.SHA256.match(sha256):
        row = conn.execute(
            """SELECT f.media_type, f.data FROM exchange_file f
               WHERE f.sha256 = %s AND EXISTS (
                   SELECT 1 FROM exchange_inbox m WHERE m.source_id = %s
                       AND (%s::text IS NULL OR m.case_number = %s)
                       AND m.content -> 'attachments' @> jsonb_build_array(
                           jsonb_build_object('sha256', f.sha256::text))
                   UNION ALL
                   SELECT 1 FROM exchange_outbox m WHERE m.source_id = %s
                       AND (%s::text IS NULL OR m.case_number = %s)
                       AND m.content -> 'attachments' @> jsonb_build_array(
                           jsonb_build_object('sha256', f.sha256::text)))""",
            (sha256, source_id, case, case, source_id, case, case),
        ).fetchone()
    if row is None:
        raise NotFound(f"message {source_id[:200]} has no file {sha256[:64]}")
    return str(row[0]), bytes(row[1])
