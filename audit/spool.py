"""The audit spool: a request's entry made durable on its serving host's own disk, then shipped
to the audit queue in batches.

A request's own thread appends its entry to the worker's spool file and flushes the file to
disk (`fdatasync`) before its response leaves, so nothing it answered is lost if the worker
dies the next moment; that flush is the durability point. A thread whose line a flush that
began after its write has already covered skips its own; flushes that overlap are joined by
the file system into one journal commit (group commit without a writer thread to hand
entries to, and without threads waiting in Python for one another). A shipper thread then
copies flushed lines into `audit_queue`, many at a time, in one transaction with the file's
new shipped offset in `audit_spool`: after a crash a line is shipped exactly once. The
sequencer (audit.sequencer) integrates the queue into the Merkle tree as before.

Compared with committing each batch to PostgreSQL (audit.writer), a request waits for one
local flush rather than a database round trip and WAL flush beside every other writer's, and
the database takes one commit per shipment instead of one per batch of concurrent requests.

A thread that answers several requests together may put their flushes off
(`flushes_put_off`: the sync worker behind nginx, auth.sync_worker): their entries are
admitted or refused at once, as any entry is, and their stored values taken
(audit.record.prepare: a copy, escaped and capped), then held; at the flush they are encoded
one after the other (canonical JSON, leaf hash), appended in one write and made durable by one
flush before any of their answers is sent. Encoded together, the entries run the same code
while it is warm: between requests it runs cold, at several times the CPU
(docs/performance.md).

Files. Each writer appends to a file of its own under the spool directory, named for its host
and process, registered in `audit_spool` before its first line, and held with an exclusive
`flock` while the writer lives. A line is one entry: its canonical JSON and leaf hash
(`audit.writer.queue_line`), which `QUEUE_INSERT_JSON` unpacks. A file that reaches
MAX_BYTES is closed and a new one begun. A file nobody holds (its process ended or died) is
adopted by the first shipper of the host to find it: it ships the complete lines, deletes the
file, then its row. A line torn by a crash was never acknowledged: it ends without a newline
and is left out.

Room ahead. The shipper keeps the file written with zeros (and flushed) at least half of
ROOM_BYTES past its last line, ROOM_BYTES at a time, and lines are written over those zeros. A
flush then writes the line's block and nothing else: an append that grew the file would also
commit the file system's journal for the new size. (Measured on the project's ext4 disk with
four processes flushing at once: 0.32 against 0.42–0.46 ms per flush at p50, 0.55 against
1.0–1.2 ms at p99, a third less CPU.) Room is a speed-up only: a line written past it
extends the file and is flushed as before. A line is JSON, which never holds a zero byte, so
a file's lines end at its first zero byte (`lines_end`); what follows is room, never shipped.

Failing closed. If entries cannot be shipped (the database is unreachable, or refuses a line),
they stay in the file, and a writer whose oldest unshipped entry is older than MAX_LAG_SECONDS
refuses new ones: the gateway then answers 503 until the shipments resume.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import BinaryIO

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import sequencer
from audit.record import Entry, prepare
from audit.writer import QUEUE_INSERT_JSON, prepared_line, queue_line

SUFFIX = ".spool"
MAX_BYTES = 64 << 20  # a spool file is rotated at this size
SHIP_SECONDS = 0.05  # a shipper gathers flushed lines at least this long between shipments
# ... and this long after a shipment of SHIP_BUSY_LINES or more: under load a shipment's fixed
# cost (four round trips and a commit) is shared by more lines (docs/performance.md).
SHIP_BUSY_SECONDS = 0.25
SHIP_BUSY_LINES = 10
SHIP_LINES = 2_000  # lines per shipping transaction at most
ROOM_BYTES = 1 << 20  # zeros written ahead of the lines at a time (see Room ahead)
ADOPT_SECONDS = 1.0  # how often a shipper looks for spool files no process holds
RETRY_SECONDS = 1.0  # after a database error
MAX_LAG_SECONDS = 10.0  # an entry unshipped this long: the writer refuses new entries
HOST = socket.gethostname()

log = logging.getLogger(__name__)


class SpoolBehind(RuntimeError):
    """Entries wait too long to be shipped to the audit queue: new ones are refused."""


class SpoolClosed(RuntimeError):
    """The writer was closed: it takes no more entries."""


class _File:
    """One spool file open for appending, held with an exclusive lock. Its counters change
    under the writer's lock."""

    def __init__(self, directory: Path, conninfo: str):
        self.path = directory / f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        # Created under another name and locked before it is a spool file: a shipper looking
        # for files nobody holds never finds it unlocked.
        new = self.path.with_suffix(".new")
        self.fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            new.rename(self.path)
            _sync_directory(directory)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO audit_spool (host, path) VALUES (%s, %s)", (HOST, str(self.path))
                )
        except BaseException:
            os.close(self.fd)
            new.unlink(missing_ok=True)
            self.path.unlink(missing_ok=True)
            raise
        self.size = 0  # bytes written: where the next line goes
        self.room = 0  # bytes of zeros written ahead of the lines (see Room ahead)
        self.entries = 0  # lines written
        self.durable = 0  # bytes flushed to disk
        self.durable_entries = 0
        self.flushing = 0  # threads between their write and the end of their flush
        self.shipped = 0  # bytes shipped (the shipper's)

    def retire(self, conn: psycopg.Connection) -> None:
        """Delete the file, then its row; the lock is held until the file is gone, so no
        other shipper adopts it meanwhile. Called once every line is flushed and shipped."""
        self.path.unlink(missing_ok=True)
        _sync_directory(self.path.parent)
        os.close(self.fd)
        conn.execute(
            "DELETE FROM audit_spool WHERE host = %s AND path = %s", (HOST, str(self.path))
        )


_writers: weakref.WeakSet[SpoolWriter] = weakref.WeakSet()  # this process's, for close_all


def close_all(timeout: float = 10.0) -> None:
    """Close this process's writers (a leaving worker, gunicorn's worker_exit): what they
    flushed is shipped, files that ended processes left are adopted, and the sequencer's last
    round (SpoolWriter.close) integrates it all before the process is gone."""
    for writer in list(_writers):
        writer.close(timeout)


_put_off = threading.local()  # .owed: the calling thread's PutOff, while one is open


class PutOff:
    """Flushes put off by one thread that answers several requests together (the sync worker
    behind nginx, auth.sync_worker): while `flushes_put_off()` is open, SpoolWriter.write on
    that thread admits an entry and holds it here; `flush()` then encodes and appends the held
    entries, one write per writer, and makes every such entry durable with one flush per
    file. The thread holds back every answer until `flush()` has returned, and sends none of
    them if it raised: the durability point is unchanged, it is shared."""

    def __init__(self) -> None:
        # writer → the stored values of its entries admitted but not yet written
        self._held: dict[int, tuple[SpoolWriter, list[dict[str, object]]]] = {}
        # (writer, file) → the end to flush to and how many appends wait for it
        self._owed: dict[tuple[int, int], tuple[SpoolWriter, _File, int, int]] = {}

    def hold(self, writer: SpoolWriter, values: dict[str, object]) -> None:
        self._held.setdefault(id(writer), (writer, []))[1].append(values)

    def add(self, writer: SpoolWriter, f: _File, end: int, writes: int) -> None:
        key = (id(writer), id(f))
        _, _, _, waiting = self._owed.get(key, (writer, f, 0, 0))
        self._owed[key] = (writer, f, end, waiting + writes)

    def __len__(self) -> int:
        held = sum(len(entries) for _, entries in self._held.values())
        return held + sum(writes for _, _, _, writes in self._owed.values())

    def _write_held(self) -> BaseException | None:
        """The held entries appended, one write per writer; the first failure, if any."""
        held, self._held = list(self._held.values()), {}
        failed: BaseException | None = None
        for writer, entries in held:
            try:
                f, end = writer._append_held(entries)
            except BaseException as exc:  # noqa: BLE001 - the rest are still written
                failed = failed or exc
            else:
                self.add(writer, f, end, len(entries))
        return failed

    def flush(self) -> None:
        """Every entry held or appended so far durable; raises if a write or flush failed."""
        failed = self._write_held()
        owed, self._owed = list(self._owed.values()), {}
        for writer, f, end, writes in owed:
            try:
                writer._settle(f, end, writes)
            except BaseException as exc:  # noqa: BLE001 - the rest still settle; raised below
                failed = failed or exc
        if failed is not None:
            raise failed

    def drop(self) -> None:
        """Entries whose answers will not be sent: appended but no longer waited for (they are
        flushed with later entries, as a request's whose answer was lost)."""
        failed = self._write_held()
        if failed is not None:
            log.warning("audit spool: entries of answers never sent not written (%s)", failed)
        owed, self._owed = list(self._owed.values()), {}
        for writer, f, _, writes in owed:
            writer._release(f, writes)


@contextlib.contextmanager
def flushes_put_off() -> Iterator[PutOff]:
    """The calling thread's spool flushes put off until the PutOff's `flush()` (its class)."""
    owed = PutOff()
    _put_off.owed = owed
    try:
        yield owed
    finally:
        _put_off.owed = None
        owed.drop()


class SpoolWriter:
    """Audit entries made durable in a local spool file; same interface as GroupCommitWriter."""

    def __init__(
        self,
        conninfo: str,
        signer: Ed25519PrivateKey,
        every: int,
        seconds: float,
        directory: Path,
        max_lag: float = MAX_LAG_SECONDS,
        room: int = ROOM_BYTES,
    ):
        self.conninfo = conninfo
        self.signer = signer
        self.every = every
        self.seconds = seconds
        self.directory = directory
        self.max_lag = max_lag
        # Zeros written ahead at a time; 0: none (a copy-on-write file system, which writes
        # every block anew, gains nothing from them).
        self.room = room
        self._zeros = bytes(room)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.batch_sizes: Counter[int] = Counter()  # entries per flush
        self._state = threading.Condition()  # guards everything below and the files' counters
        self._file: _File | None = None  # the one being written
        self._owned: list[_File] = []  # files this writer holds
        self._retiring: list[_File] = []  # no longer written: deleted once flushed and shipped
        self._flushed: deque[tuple[_File, int, float]] = deque()  # (file, end, at) unshipped
        self._count = 0
        self._closed = False
        self._shipper: threading.Thread | None = None
        self._hurry = threading.Event()  # ship_now and close: the shipper's pause ends
        self._start_lock = threading.Lock()
        self._ensure_shipper()  # it adopts what ended processes left, from the start
        # At exit, before the sequencer's drain (registered after it: atexit runs the last
        # registered first). A gunicorn worker closes its writers earlier (close_all).
        atexit.register(self.ship_now)
        _writers.add(self)

    # --- the request's side ----------------------------------------------------------------

    def write(self, entry: Entry) -> int:
        """Append `entry` to the spool and flush it; returns its number in this writer once it
        is durable (while flushes are put off: once admitted, see PutOff). Raises SpoolBehind
        while earlier entries wait too long to be shipped."""
        self._ensure_shipper()
        now = dt.datetime.now(dt.UTC)
        owed: PutOff | None = getattr(_put_off, "owed", None)
        if owed is not None:  # this thread's answers wait for the owed flush (PutOff)
            values = prepare(entry, now)  # what the line will hold, whatever the caller does
            with self._state:
                self._admit()
                self._count += 1
                number = self._count
            owed.hold(self, values)
            return number
        line = queue_line(entry, now) + b"\n"
        with self._state:
            self._admit()
            f = self._append(line, 1)
            self._count += 1
            number, end = self._count, f.size
        self._settle(f, end, 1)
        return number

    def _admit(self) -> None:
        """Whether a new entry is taken (the lock held): not once closed, nor while earlier
        entries wait too long to be shipped."""
        if self._closed:
            raise SpoolClosed("the audit spool writer is closed")
        lag = self._lag()
        if lag > self.max_lag:
            raise SpoolBehind(f"audit entries unshipped for {lag:.0f} s")

    def _append(self, data: bytes, entries: int) -> _File:
        """`data`, `entries` whole lines, written after the current file's last line (the lock
        held); each counted as waiting for a flush. A failed write abandons the file."""
        f = self._target()
        try:
            written = os.pwrite(f.fd, data, f.size)
            if written != len(data):
                raise OSError(f"short write to the audit spool ({written} of {len(data)})")
        except BaseException:
            with contextlib.suppress(OSError):  # else: a torn tail, which no shipper takes
                os.ftruncate(f.fd, f.size)
            self._abandon()
            raise
        f.size += len(data)
        f.entries += entries
        f.flushing += entries
        return f

    def _append_held(self, entries: list[dict[str, object]]) -> tuple[_File, int]:
        """Entries a PutOff held (their stored values), encoded one after the other and
        appended in one write; the file and the end to flush to."""
        data = b"".join([prepared_line(values) + b"\n" for values in entries])
        with self._state:
            if self._closed:
                raise SpoolClosed("the audit spool writer is closed")
            f = self._append(data, len(entries))
            return f, f.size

    def _settle(self, f: _File, end: int, writes: int) -> None:
        """Flush `f` up to `end` for `writes` appends that wait for it (each counted in
        `flushing` until now); a failed flush abandons the file."""
        try:
            self._flush(f, end)
        except BaseException:
            with self._state:
                if self._file is f:
                    self._abandon()
            raise
        finally:
            with self._state:
                f.flushing -= writes

    def _release(self, f: _File, writes: int) -> None:
        """`writes` appends to `f` no longer wait for a flush (their answers never left)."""
        with self._state:
            f.flushing -= writes

    def _flush(self, f: _File, end: int) -> None:
        """Until `f` is durable up to `end`. Each thread flushes for itself unless a flush that
        began after its write has ended; flushes that overlap are joined by the file system
        into one journal commit, with no thread waiting in Python for another (group commit
        without hand-offs: under the interpreter's lock those cost more than a flush)."""
        if f.durable >= end:
            return
        with self._state:
            mark, marked = f.size, f.entries
        os.fdatasync(f.fd)
        with self._state:
            if mark > f.durable:
                self.batch_sizes[marked - f.durable_entries] += 1
                f.durable, f.durable_entries = mark, marked
                self._flushed.append((f, mark, time.monotonic()))
                self._state.notify_all()

    def submit(self, entry: Entry, urgent: bool = True) -> Future[int]:  # noqa: ARG002 - as GroupCommitWriter
        """`write`, its outcome as a future (already done)."""
        future: Future[int] = Future()
        try:
            future.set_result(self.write(entry))
        except Exception as exc:  # noqa: BLE001 - the caller learns of it from the future
            future.set_exception(exc)
        return future

    def lag(self) -> float:
        """Seconds the oldest flushed entry not yet shipped has waited (0 if none)."""
        with self._state:
            return self._lag()

    def _lag(self) -> float:
        return time.monotonic() - self._flushed[0][2] if self._flushed else 0.0

    def ship_now(self, timeout: float = 5.0) -> bool:
        """Until what is flushed now is shipped, or `timeout` (at exit: best effort); whether
        it was."""
        deadline = time.monotonic() + timeout
        self._hurry.set()
        with self._state:
            mark = self._flushed[-1] if self._flushed else None
            self._state.notify_all()
            while mark is not None and mark[0].shipped < mark[1]:
                left = deadline - time.monotonic()
                if left <= 0 or self._shipper is None or not self._shipper.is_alive():
                    return False
                self._state.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Take no more entries; ship what is flushed, delete this writer's files, stop its
        shipper and this process's sequencer candidate for the install (after a last round).
        Whether all was shipped within `timeout`: what was not stays in its file, released,
        and the next shipper of the spool adopts it."""
        with self._state:
            if self._closed:
                return True
            self._closed = True
            self._abandon()
            self._state.notify_all()
        self._hurry.set()
        shipper = self._shipper
        if shipper is not None:
            shipper.join(timeout)
        with self._state:
            done = not self._owned
        sequencer.release(self.conninfo)
        return done

    def _ensure_shipper(self) -> None:
        if self._closed:
            return
        if self._shipper is None or not self._shipper.is_alive():
            with self._start_lock:
                if self._shipper is None or not self._shipper.is_alive():
                    self._shipper = threading.Thread(
                        target=self._ship_loop, name="audit-spool-ship", daemon=True
                    )
                    self._shipper.start()
        sequencer.ensure_running(self.conninfo, self.signer, self.every, self.seconds)

    def _target(self) -> _File:
        """The file to append to (the lock held): a new one at first, after MAX_BYTES or after
        a failure."""
        if self._file is not None and self._file.size >= MAX_BYTES:
            self._abandon()
        if self._file is None:
            self._file = _File(self.directory, self.conninfo)
            self._owned.append(self._file)
        return self._file

    def _abandon(self) -> None:
        """Stop writing to the current file (the lock held); the shipper ships its rest, then
        deletes it."""
        if self._file is not None:
            self._retiring.append(self._file)
            self._file = None
            self._state.notify_all()

    # --- the shipper thread ----------------------------------------------------------------

    def _ship_loop(self) -> None:
        conn: psycopg.Connection | None = None
        adopted_at = 0.0
        failures = 0
        lines = 0  # shipped in the last round
        while True:
            with self._state:
                while (
                    not self._flushed
                    and not self._retiring
                    and not self._closed
                    and time.monotonic() - adopted_at < ADOPT_SECONDS
                ):
                    self._state.wait(ADOPT_SECONDS)
                done = self._closed and not self._owned
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True)
                if done:
                    # A last look for files of processes that ended: a stop that follows a
                    # crash closely leaves nothing waiting for the next start.
                    adopt(conn, self.directory, set())
                    break
                lines = self._ship_owned(conn)
                self._make_room()
                if not self._closed and time.monotonic() - adopted_at >= ADOPT_SECONDS:
                    with self._state:
                        own = {str(f.path) for f in self._owned}
                    adopt(conn, self.directory, own)
                    adopted_at = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - entries stay in the spool; shipped later
                if failures == 0 or failures % 60 == 0:  # not a line a second while it lasts
                    if isinstance(exc, psycopg.OperationalError):
                        log.warning("audit spool: shipment failed (%s); retrying", exc)
                    else:
                        log.exception("audit spool: shipment failed; retrying")
                failures += 1
                if conn is not None:
                    conn.close()
                conn = None
                if self._closed:  # the files stay, released: the next shipper adopts them
                    break
                time.sleep(RETRY_SECONDS)
                continue
            failures = 0
            self._pause(SHIP_BUSY_SECONDS if lines >= SHIP_BUSY_LINES else SHIP_SECONDS)
        if conn is not None:
            conn.close()
        with self._state:
            for f in self._owned:  # unshipped lines: its lock goes with the descriptor
                os.close(f.fd)
            self._owned.clear()
            self._retiring.clear()

    def _pause(self, seconds: float) -> None:
        """Sleep `seconds` between shipments, in steps of SHIP_SECONDS, ended early by ship_now
        or close. Relative sleeps: a timed wait on a lock would take its deadline from a clock
        that libfaketime moves (the renewal tests) and could sleep for the jump."""
        slept = 0.0
        # `_closed` too: a close whose hurry an ending pause cleared is not waited out.
        while slept < seconds and not self._hurry.is_set() and not self._closed:
            time.sleep(SHIP_SECONDS)
            slept += SHIP_SECONDS
        self._hurry.clear()

    def _make_room(self) -> None:
        """Zeros written and flushed ahead of the current file's lines (Room ahead) when
        less than half of `room` is left. They are written under the lock, so that no line
        is written where the zeros then go; a failure only costs the speed-up."""
        with self._state:
            f = self._file
            if f is None or not self.room or f.room - f.size >= self.room // 2:
                return
            if f.size >= MAX_BYTES:
                return
            start = max(f.room, f.size)
            try:
                os.pwrite(f.fd, self._zeros, start)
            except OSError as exc:
                log.warning("audit spool: no room written ahead (%s)", exc)
                return
            f.room = start + self.room
        try:
            os.fdatasync(f.fd)
        except OSError as exc:  # a line's own flush fails alike and abandons the file
            log.warning("audit spool: room written ahead not flushed (%s)", exc)

    def _ship_owned(self, conn: psycopg.Connection) -> int:
        """Ship what this writer has flushed; delete the retired files once shipped. Returns
        the number of lines shipped."""
        lines = 0
        with self._state:
            ends: dict[Path, tuple[_File, int]] = {}
            for f, end, _ in self._flushed:
                ends[f.path] = (f, end)
        for f, end in ends.values():
            with open(f.path, "rb") as fh:
                while f.shipped < end:
                    f.shipped, taken = _ship(conn, fh, str(f.path), f.shipped, end)
                    lines += taken
                    with self._state:
                        while self._flushed and self._flushed[0][0].shipped >= self._flushed[0][1]:
                            self._flushed.popleft()
                        self._state.notify_all()
        with self._state:
            done = [
                f
                for f in self._retiring
                if f.flushing == 0 and f.shipped >= f.durable  # a line never flushed: refused
            ]
        for f in done:
            f.retire(conn)
            with self._state:
                self._retiring.remove(f)
                self._owned.remove(f)
        return lines


def ship(conn: psycopg.Connection, fh: object, path: str, start: int, end: int) -> int:
    """The complete lines of `path` between `start` and `end` (up to SHIP_LINES), queued in
    one transaction with the file's new shipped offset; returns that offset."""
    return _ship(conn, fh, path, start, end)[0]


def _ship(conn: psycopg.Connection, fh: object, path: str, start: int, end: int) -> tuple[int, int]:
    """`ship`, with the number of lines shipped."""
    assert hasattr(fh, "seek") and hasattr(fh, "read")
    fh.seek(start)
    data: bytes = fh.read(end - start)
    lines = data.split(b"\n")[:-1][:SHIP_LINES]  # the part after the last newline is torn
    if not lines:
        return start, 0
    offset = start + sum(len(line) + 1 for line in lines)
    with conn.transaction():
        row = conn.execute(
            "SELECT shipped FROM audit_spool WHERE host = %s AND path = %s FOR UPDATE",
            (HOST, path),
        ).fetchone()
        if row is None or int(row[0]) != start:
            raise RuntimeError(f"audit spool {path}: shipped offset is {row}, expected {start}")
        conn.execute(QUEUE_INSERT_JSON, ((b"[" + b",".join(lines) + b"]").decode(),))
        conn.execute(
            "UPDATE audit_spool SET shipped = %s WHERE host = %s AND path = %s",
            (offset, HOST, path),
        )
    return offset, len(lines)


def adopt(conn: psycopg.Connection, directory: Path, own: set[str]) -> int:
    """Ship and delete every spool file of `directory` that no process holds; forget the rows
    of this host's files that are gone. Returns the number of files adopted."""
    adopted = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if str(path) in own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # adopted meanwhile by another process
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer lives, or another shipper has it
            if not path.exists():
                continue  # adopted and deleted between our open and our lock
            row = conn.execute(
                "SELECT shipped FROM audit_spool WHERE host = %s AND path = %s",
                (HOST, str(path)),
            ).fetchone()
            if row is not None:  # unregistered: its writer died before its first line
                with os.fdopen(os.dup(fd), "rb") as fh:
                    shipped = int(row[0])
                    end = lines_end(fh, shipped)
                    while True:
                        further = ship(conn, fh, str(path), shipped, end)
                        if further == shipped:
                            break
                        shipped = further
            path.unlink()
            _sync_directory(directory)
            adopted += 1
        finally:
            os.close(fd)
    if adopted:  # and the rows a crash between a file's deletion and its row's left
        for (path,) in conn.execute("SELECT path FROM audit_spool WHERE host = %s", (HOST,)):
            if Path(path).parent == directory and not Path(path).exists():
                conn.execute("DELETE FROM audit_spool WHERE host = %s AND path = %s", (HOST, path))
    return adopted


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lines_end(fh: BinaryIO, start: int) -> int:
    """Where the lines of an open spool file end, looking from `start` (a line's end): at
    its first zero byte (room written ahead, which no line holds), else at its size."""
    fh.seek(start)
    at = start
    while chunk := fh.read(ROOM_BYTES):
        zero = chunk.find(0)
        if zero >= 0:
            return at + zero
        at += len(chunk)
    return at


def pending(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """This host's spool files with lines not yet shipped: path → (shipped, where the
    lines end)."""
    found = {}
    for path, shipped in conn.execute(
        "SELECT path, shipped FROM audit_spool WHERE host = %s", (HOST,)
    ):
        try:
            with open(path, "rb") as fh:
                size = lines_end(fh, int(shipped))
        except FileNotFoundError:
            continue
        if size > shipped:
            found[path] = (int(shipped), size)
    return found
