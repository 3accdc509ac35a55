"""Group commit: concurrent requests of one worker share one transaction for their audit
entries. A request waits until its entry is committed, so nothing it answered is lost if
the worker dies the next moment; throughput comes from batching commits, not from keeping
entries in memory."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from concurrent.futures import Future

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.record import Entry, append

MAX_BATCH = 256
WAIT_SECONDS = 30.0


class GroupCommitWriter:
    def __init__(self, conninfo: str, signer: Ed25519PrivateKey, every: int, seconds: float):
        self.conninfo = conninfo
        self.signer = signer
        self.every = every
        self.seconds = seconds
        self.batch_sizes: Counter[int] = Counter()
        self._queue: queue.Queue[tuple[Entry, Future[int]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def write(self, entry: Entry) -> int:
        """Append `entry` and return its leaf index once it is committed."""
        return self.submit(entry).result(timeout=WAIT_SECONDS)

    def submit(self, entry: Entry) -> Future[int]:
        """Queue `entry`; the future holds its leaf index once it is committed."""
        self._ensure_thread()
        future: Future[int] = Future()
        self._queue.put((entry, future))
        return future

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="audit-writer", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo)
                self._commit(conn, batch)
            except Exception as exc:  # noqa: BLE001 - the database is unusable: all learn of it
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if conn is not None:
                    conn.close()
                conn = None

    def _commit(self, conn: psycopg.Connection, batch: list[tuple[Entry, Future[int]]]) -> None:
        """One transaction for the batch; if it fails, each entry in a transaction of its
        own, so an entry the database refuses fails alone and never costs its batch-mates."""
        try:
            with conn.transaction():
                indexes = append(conn, [e for e, _ in batch], self.signer, self.every, self.seconds)
        except Exception as exc:
            if conn.broken:
                raise
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
        else:
            self.batch_sizes[len(batch)] += 1
            for (_, future), index in zip(batch, indexes, strict=True):
                future.set_result(index)
            return
        for e, future in batch:
            try:
                with conn.transaction():
                    index = append(conn, [e], self.signer, self.every, self.seconds)[0]
            except Exception as exc:  # noqa: BLE001 - only this entry's request learns of it
                if conn.broken:
                    raise
                future.set_exception(exc)
            else:
                self.batch_sizes[1] += 1
                future.set_result(index)
