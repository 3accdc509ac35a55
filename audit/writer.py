"""Group commit into the audit queue: concurrent requests of one worker share one transaction
for their entries. A request waits until its entry is committed to `audit_queue`, so nothing
it answered is lost if the worker dies the next moment; that commit is the durability point.
The queue takes no shared lock: workers append side by side, and the install's sequencer
(audit.sequencer) integrates what they queued into the Merkle tree in large batches.

A writer commits over CONNECTIONS connections, each with a thread of its own taking the next
batch from one in-memory queue: while one batch waits for its WAL flush, the entries that
arrive meanwhile are committed over another connection instead of waiting for that flush to
end before theirs begins (PostgreSQL then flushes the overlapping commits together).

A writer may also hold entries back for a batch interval (`interval`, the renderer's own
log: tiles.renderer_audit): an entry submitted with `urgent=False` waits until the oldest
entry of its batch is `interval` old, or until an urgent entry or a full batch arrives, so
that a stream of such entries costs one commit per interval rather than one per entry. An
urgent entry (the default) is committed at once, with whatever waits beside it (the entries
held back first).

Each entry's values are escaped and capped and its leaf hash computed (audit.record.prepare,
about 30 µs an entry), one entry at a time, never for a whole batch at once: that would hold
the interpreter for milliseconds while requests wait to be answered. An urgent entry is
prepared by the writer's thread as it takes it from the in-memory queue. An entry held back is
prepared by the thread that submits it (the renderer's submits it once its answer has left)
and set aside without waking the writer: the writer wakes once per batch, at its first
entry, rather than once per entry, which made the renderer's tile answers wait for the
interpreter (bench/zones.py). The sequencer then copies rows and hashes nodes, nothing more.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from typing import Protocol

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import entry, sequencer
from audit.merkle import leaf_hash
from audit.record import Entry, prepare

MAX_BATCH = 256
GATHER, AT_ONCE = False, True  # queued words: entries held back wait (see GroupCommitWriter)
WAIT_SECONDS = 30.0
CONNECTIONS = 2  # commits in flight at once per writer (docs/performance.md)

_COLUMNS = f"{', '.join(entry.FIELDS)}, leaf_hash"
_ROW = f"({', '.join(['%s'] * (len(entry.FIELDS) + 1))})"
QUEUE_INSERT = f"INSERT INTO audit_queue ({_COLUMNS}) VALUES {_ROW} RETURNING id"  # noqa: S608

# A batch of JSON_FROM entries or more goes as one JSON parameter that PostgreSQL unpacks:
# psycopg adapts each of an entry's 16 parameters in the writer's thread (about 33 µs an
# entry, holding the interpreter), where json.dumps of the batch costs a few µs an entry.
# Below it, VALUES is cheaper for the database (single entries are the gateway's usual batch).
JSON_FROM = 8
_TYPES = {"at": "timestamptz", "status": "integer", "bytes": "bigint"}
_TYPES |= {"latency_ms": "double precision", "detail": "jsonb"}
# An element is a queue line (`queue_line`: an object of the entry's canonical values and leaf
# hash) or, as written by `json_row` and by spool files of releases before the lines, an array
# of the values in FIELDS order and the leaf hash: `->` on the other kind gives NULL. The
# batch is parsed once, as jsonb: each `->` on `json` parses the element's text again, 17
# fields twice over (about 78 against 20 µs of the database's time an entry,
# docs/performance.md). A value reads back the same: jsonb keeps a number's decimal digits (the
# double cast from them is the one cast from the text) and a string's characters.
_UNPACKED = ", ".join(
    [
        f"COALESCE(r->'e'->>'{f}', r->>{i})::{_TYPES.get(f, 'text')}"
        for i, f in enumerate(entry.FIELDS)
    ]
    + [f"decode(COALESCE(r->>'h', r->>{len(entry.FIELDS)}), 'hex')"]
)
QUEUE_INSERT_JSON = (
    f"INSERT INTO audit_queue ({_COLUMNS}) SELECT {_UNPACKED}"  # noqa: S608
    " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(r, i) ORDER BY i RETURNING id"
)


def queued_row(e: Entry, now: dt.datetime) -> list[object]:
    """The audit_queue values of `e`: stored values first, then the leaf hash over them."""
    values = prepare(e, now)
    return [
        *(
            json.dumps(values[f], ensure_ascii=False) if f == "detail" else values[f]
            for f in entry.FIELDS
        ),
        entry.leaf(values),
    ]


def queue_line(e: Entry, now: dt.datetime) -> bytes:
    """`e` as one line of JSON that QUEUE_INSERT_JSON unpacks: `{"e":CANONICAL,"h":"LEAF"}`.
    The canonical bytes the leaf hash is computed over are written as they are, so an entry is
    encoded once (queued_row and json_row encode it twice, and its detail a third time: some
    50 µs of a gateway's tile request, docs/performance.md)."""
    return prepared_line(prepare(e, now))


def prepared_line(values: dict[str, object]) -> bytes:
    """queue_line of an entry already prepared (audit.record.prepare: its stored values)."""
    canonical = entry.canonical(values)
    return b'{"e":' + canonical + b',"h":"' + leaf_hash(canonical).hex().encode() + b'"}'


def json_row(row: list[object]) -> str:
    """`row` (queued_row's values) as one JSON array that QUEUE_INSERT_JSON unpacks: the time
    in ISO 8601 with its offset and microseconds, the leaf hash in hex, the rest as they are
    (a float's repr reads back as the same double), so the stored values stay exactly those
    the leaf hash was computed over."""
    at, leaf = row[0], row[-1]
    assert isinstance(at, dt.datetime) and isinstance(leaf, bytes)
    return json.dumps([at.isoformat(), *row[1:-1], leaf.hex()], ensure_ascii=False, allow_nan=False)


def json_rows(rows: list[list[object]]) -> str:
    """`rows` as the JSON array of json_row's arrays."""
    return "[" + ",".join(json_row(row) for row in rows) + "]"


class AuditWriter(Protocol):
    """What serving code records through: GroupCommitWriter or audit.spool.SpoolWriter."""

    batch_sizes: Counter[int]

    def write(self, entry: Entry) -> int: ...

    def submit(self, entry: Entry, urgent: bool = True) -> Future[int]: ...

    def close(self, timeout: float = 10.0) -> bool: ...


class GroupCommitWriter:
    def __init__(
        self,
        conninfo: str,
        signer: Ed25519PrivateKey,
        every: int,
        seconds: float,
        connections: int = CONNECTIONS,
        interval: float = 0.0,
    ):
        if connections < 1:
            raise ValueError("a writer needs at least one connection")
        self.conninfo = conninfo
        self.signer = signer
        self.every = every
        self.seconds = seconds
        self.interval = interval  # how long an entry that is not urgent may wait for others
        self.batch_sizes: Counter[int] = Counter()  # committed batches by size
        self._counted = threading.Lock()
        # An entry with its time, future and urgency; or a word that entries wait in _held,
        # to be gathered for a batch interval (GATHER) or committed at once (AT_ONCE).
        self._queue: queue.Queue[tuple[Entry, dt.datetime, Future[int], bool] | bool] = (
            queue.Queue()
        )
        self._held: list[tuple[list[object], Future[int]]] = []  # prepared, not urgent
        self._held_lock = threading.Lock()
        self._threads: list[threading.Thread | None] = [None] * connections
        self._start_lock = threading.Lock()
        self._closed = False
        # This process's candidate for the install's sequencer, from the start: after a
        # restart, what the previous processes queued is integrated before any new request.
        sequencer.ensure_running(conninfo, signer, every, seconds)

    def write(self, entry: Entry) -> int:
        """Queue `entry` durably; returns its queue id once it is committed."""
        return self.submit(entry).result(timeout=WAIT_SECONDS)

    def submit(self, entry: Entry, urgent: bool = True) -> Future[int]:
        """Queue `entry`; the future holds its queue id once it is committed (at once if
        `urgent`, else within the writer's interval), or the error that kept it out."""
        future: Future[int] = Future()
        if self._closed:
            future.set_exception(RuntimeError("the audit writer is closed"))
            return future
        self._ensure_thread()
        at = dt.datetime.now(dt.UTC)
        if urgent:
            self._queue.put((entry, at, future, True))
            return future
        try:
            row = queued_row(entry, at)
        except Exception as exc:  # noqa: BLE001 - only this entry's request learns of it
            future.set_exception(exc)
            return future
        with self._held_lock:
            first = not self._held
            self._held.append((row, future))
        if first:  # the writer gathers a batch from now on
            self._queue.put(GATHER)
        return future

    def close(self, timeout: float = 10.0) -> bool:
        """Take no more entries; commit what is queued, stop the writer's threads and this
        process's sequencer candidate for the install (after a last round). Whether every
        thread ended within `timeout`."""
        self._closed = True
        threads = [t for t in self._threads if t is not None]
        deadline = time.monotonic() + timeout
        for t in threads:  # a word to wake each (one thread's batch may take another's word)
            while t.is_alive() and time.monotonic() < deadline:
                self._queue.put(AT_ONCE)
                t.join(0.05)
        sequencer.release(self.conninfo)
        return not any(t.is_alive() for t in threads)

    def _ensure_thread(self) -> None:
        if not all(t is not None and t.is_alive() for t in self._threads):
            with self._start_lock:
                for i, t in enumerate(self._threads):
                    if t is None or not t.is_alive():
                        t = threading.Thread(
                            target=self._run, name=f"audit-writer-{i}", daemon=True
                        )
                        self._threads[i] = t
                        t.start()
        sequencer.ensure_running(self.conninfo, self.signer, self.every, self.seconds)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            batch = self._batch()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                if batch:
                    self._commit(conn, batch)
            except Exception as exc:  # noqa: BLE001 - the database is unusable: all learn of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if conn is not None:
                    conn.close()
                conn = None
            if self._closed and self._queue.empty() and not self._held:
                if conn is not None:
                    conn.close()
                return

    def _batch(self) -> list[tuple[list[object], Future[int]]]:
        """The next batch, its rows prepared: what is queued now; if none of it is urgent,
        also what arrives until the first entry is `interval` old (an urgent entry or a full
        batch ends it). An entry that cannot be prepared fails alone, here."""
        batch: list[tuple[list[object], Future[int]]] = []
        item = self._queue.get()
        urgent = False
        deadline = time.monotonic() + self.interval
        while True:
            if isinstance(item, bool):
                urgent = urgent or item
            else:
                e, at, future, more = item
                urgent = urgent or more
                try:
                    batch.append((queued_row(e, at), future))
                except Exception as exc:  # noqa: BLE001 - only this entry's request learns of it
                    future.set_exception(exc)
            if len(batch) >= MAX_BATCH:
                break
            try:
                wait = deadline - time.monotonic()
                if urgent or wait <= 0:
                    item = self._queue.get_nowait()
                else:
                    item = self._queue.get(timeout=wait)
            except queue.Empty:
                break
        with self._held_lock:
            taken = self._held[: max(0, MAX_BATCH - len(batch))]
            del self._held[: len(taken)]
            more_held = bool(self._held)
        if more_held:  # the rest, which has waited already, in the next batch
            self._queue.put(AT_ONCE)
        return [*taken, *batch]  # held back since the batch began: answered before the rest

    def _commit(
        self, conn: psycopg.Connection, rows: list[tuple[list[object], Future[int]]]
    ) -> None:
        """One transaction for the batch; if it fails, each entry in a transaction of its
        own, so an entry the database refuses fails alone and never costs its batch-mates."""
        try:
            ids = self._insert(conn, [r for r, _ in rows])
        except Exception as exc:
            if conn.broken:
                raise
            if len(rows) == 1:
                rows[0][1].set_exception(exc)
                return
        else:
            self._count(len(rows))
            for (_, future), queue_id in zip(rows, ids, strict=True):
                future.set_result(queue_id)
            return
        for row, future in rows:
            try:
                queue_id = self._insert(conn, [row])[0]
            except Exception as exc:  # noqa: BLE001 - only this entry's request learns of it
                if conn.broken:
                    raise
                future.set_exception(exc)
            else:
                self._count(1)
                future.set_result(queue_id)

    def _count(self, size: int) -> None:
        with self._counted:
            self.batch_sizes[size] += 1

    @staticmethod
    def _insert(conn: psycopg.Connection, rows: list[list[object]]) -> list[int]:
        """One statement, one round trip, committed on its own (the connection autocommits):
        the rows in order, with their queue ids."""
        if len(rows) >= JSON_FROM:
            found = conn.execute(QUEUE_INSERT_JSON, (json_rows(rows),)).fetchall()
            assert len(found) == len(rows), "INSERT … RETURNING gives one row per entry"
            return sorted(int(i) for (i,) in found)  # identities follow the ORDER BY
        sql = f"INSERT INTO audit_queue ({_COLUMNS}) VALUES {', '.join([_ROW] * len(rows))}"  # noqa: S608
        sql += " RETURNING id"
        ids = [int(i) for (i,) in conn.execute(sql, [v for row in rows for v in row]).fetchall()]
        assert len(ids) == len(rows), "INSERT … RETURNING gives one row per entry"
        return sorted(ids)  # identity values follow the order of VALUES
