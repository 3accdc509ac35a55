"""The on-disk queue (SQLite, WAL, synchronous=FULL): items in the order they were made,
each with its photos' bytes as sent and every key that makes a retry safe. Each step's
state is committed before the step is sent (Idempotency-Keys, the exact signed body) and
after its answer (upload location, attachment, the item's answer), so a client killed at
any point resumes where the server stands, never sending a change twice."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from mapserver.device_client import config, plan

SCHEMA = """
CREATE TABLE IF NOT EXISTS item (
    id          INTEGER PRIMARY KEY,             -- the order they are sent in
    path        TEXT NOT NULL,                   -- /device/v1/reports, …/cases/N/check_pass
    action      TEXT NOT NULL,                   -- case.report, case.check_pass, …
    resource    TEXT NOT NULL,
    params      TEXT NOT NULL,                   -- JSON, without attachments
    beside      TEXT,                            -- JSON beside the envelope (a GPS fix)
    idem_key    TEXT NOT NULL,                   -- Idempotency-Key of the change
    body        BLOB,                            -- the exact signed body, once signed
    state       TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent', 'failed')),
    answer      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    made_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS photo (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES item (id),
    position    INTEGER NOT NULL,
    media_type  TEXT NOT NULL,
    data        BLOB NOT NULL,                   -- the bytes as sent (downsized)
    sha256      TEXT NOT NULL,                   -- of data
    create_key  TEXT NOT NULL,                   -- Idempotency-Key of the tus creation
    location    TEXT,                            -- the upload, once created
    sent        INTEGER NOT NULL DEFAULT 0,      -- the server's offset as last seen
    attachment  TEXT,                            -- sha256 of the stored attachment
    UNIQUE (item_id, position)
);
"""


class Item(NamedTuple):
    id: int
    path: str
    action: str
    resource: str
    params: dict[str, Any]
    beside: dict[str, Any] | None
    key: str
    body: bytes | None
    state: str
    answer: str | None
    error: str | None
    attempts: int


class Photo(NamedTuple):
    id: int
    item_id: int
    position: int
    media_type: str
    length: int
    sha256: str
    create_key: str
    location: str | None
    sent: int
    attachment: str | None


_ITEM = "id, path, action, resource, params, beside, idem_key, body, state, answer, error, attempts"
_PHOTO = (
    "id, item_id, position, media_type, length(data), sha256, create_key, location, sent,"
    " attachment"
)


class Queue:
    def __init__(self, path: Path):
        fresh = not path.exists()
        if fresh:
            config.write_private(path, b"")
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- making items

    def add(
        self,
        path: str,
        action: str,
        resource: str,
        params: dict[str, Any],
        beside: dict[str, Any] | None = None,
        photos: list[tuple[str, bytes]] = [],  # noqa: B006 (never mutated)
    ) -> int:
        """Queue one change with its attachments ((media type, bytes): photos and voice
        recordings, kept in the `photo` table), all or nothing."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO item (path, action, resource, params, beside, idem_key)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    path,
                    action,
                    resource,
                    json.dumps(params, ensure_ascii=False),
                    json.dumps(beside) if beside is not None else None,
                    plan.new_key(),
                ),
            )
            item_id = int(cur.lastrowid or 0)
            for position, (media_type, data) in enumerate(photos):
                db.execute(
                    "INSERT INTO photo (item_id, position, media_type, data, sha256, create_key)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (item_id, position, media_type, data, hashlib.sha256(data).hexdigest(),
                     plan.new_key()),
                )  # fmt: skip
        return item_id

    # -- reading

    def _item(self, row: tuple[Any, ...]) -> Item:
        params = json.loads(row[4])
        beside = json.loads(row[5]) if row[5] is not None else None
        return Item(row[0], row[1], row[2], row[3], params, beside, *row[6:])

    def pending(self) -> list[Item]:
        rows = self.db.execute(
            f"SELECT {_ITEM} FROM item WHERE state = 'queued' ORDER BY id"
        ).fetchall()
        return [self._item(r) for r in rows]

    def items(self) -> list[Item]:
        return [self._item(r) for r in self.db.execute(f"SELECT {_ITEM} FROM item ORDER BY id")]

    def item(self, item_id: int) -> Item:
        row = self.db.execute(f"SELECT {_ITEM} FROM item WHERE id = ?", (item_id,)).fetchone()
        return self._item(row)

    def photos(self, item_id: int | None = None) -> list[Photo]:
        where, args = ("WHERE item_id = ?", (item_id,)) if item_id is not None else ("", ())
        rows = self.db.execute(
            f"SELECT {_PHOTO} FROM photo {where} ORDER BY item_id, position", args
        ).fetchall()
        return [Photo(*r) for r in rows]

    def photo(self, photo_id: int) -> Photo:
        return Photo(
            *self.db.execute(f"SELECT {_PHOTO} FROM photo WHERE id = ?", (photo_id,)).fetchone()
        )

    def photo_bytes(self, photo_id: int, start: int, size: int) -> bytes:
        row = self.db.execute(
            "SELECT substr(data, ?, ?) FROM photo WHERE id = ?", (start + 1, size, photo_id)
        ).fetchone()
        return bytes(row[0])

    def bytes_left(self) -> int:
        """Photo bytes of queued items not yet acknowledged by the server."""
        row = self.db.execute(
            "SELECT coalesce(sum(length(p.data) - p.sent), 0) FROM photo p"
            " JOIN item i ON i.id = p.item_id WHERE i.state = 'queued' AND p.attachment IS NULL"
        ).fetchone()
        return int(row[0])

    # -- steps, each committed at once

    def _set(self, sql: str, *args: Any) -> None:
        with self._tx() as db:
            db.execute(sql, args)

    def located(self, photo_id: int, location: str) -> None:
        self._set("UPDATE photo SET location = ?, sent = 0 WHERE id = ?", location, photo_id)

    def acknowledged(self, photo_id: int, offset: int) -> None:
        self._set("UPDATE photo SET sent = ? WHERE id = ?", offset, photo_id)

    def attached(self, photo_id: int, sha256: str) -> None:
        self._set(
            "UPDATE photo SET attachment = ?, sent = length(data) WHERE id = ?", sha256, photo_id
        )

    def upload_lost(self, photo_id: int) -> None:
        """The server no longer has the upload (expired): create a new one, under a new key."""
        self._set(
            "UPDATE photo SET location = NULL, sent = 0, create_key = ? WHERE id = ?",
            plan.new_key(),
            photo_id,
        )

    def signed(self, item_id: int, body: bytes) -> None:
        self._set("UPDATE item SET body = ? WHERE id = ? AND body IS NULL", body, item_id)

    def resign(self, item_id: int) -> None:
        """Refused as stale and kept nothing: sign anew, under a new key."""
        self._set("UPDATE item SET body = NULL, idem_key = ? WHERE id = ?", plan.new_key(), item_id)

    def tried(self, item_id: int) -> None:
        self._set("UPDATE item SET attempts = attempts + 1 WHERE id = ?", item_id)

    def sent(self, item_id: int, answer: str) -> None:
        self._set(
            "UPDATE item SET state = 'sent', answer = ?, error = NULL WHERE id = ?", answer, item_id
        )

    def failed(self, item_id: int, error: str) -> None:
        self._set("UPDATE item SET state = 'failed', error = ? WHERE id = ?", error, item_id)
