"""The sequencer: queued audit entries into the Merkle tree, in large batches.

Requests make their entries durable in `audit_queue` (audit.writer), which takes no shared
lock. The sequencer, one per install, takes everything queued since its last round in one
transaction: it copies the entries into `audit_entry` with their leaf indexes (in queue
order), advances the tree's right edge, writes the tlog-tiles the batch completes and signs
a checkpoint when one is due: every `every` entries, at least every `seconds` seconds while
entries arrive, and once the log has been idle for `idle` seconds after entries arrived, so
that a tail never stays without a checkpoint.

One per install: every serving process runs a candidate thread, and the one holding the
PostgreSQL advisory lock LOCK_KEY sequences; the others try again every FOLLOW_SECONDS, so
when the leader dies (its connection, and with it the lock, goes) another takes over.

The leader also prunes the queue every PRUNE_SECONDS: rows integrated into the tree and
covered by a signed checkpoint, queued more than KEEP_SECONDS ago, are deleted (migration
0033's audit_queue_prune; the queue's trigger refuses the deletion of any other row), so the
queue holds the recent minutes and what is not yet in the tree, not the whole history.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
from typing import NamedTuple

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.conninfo import conninfo_to_dict

from audit import checkpoint, entry, tree
from audit.record import write_tiles

LOCK_KEY = 0x43477A_5351  # "CGz" "SQ": the advisory lock of the one sequencer per database
POLL_SECONDS = 0.25  # a leader looks for queued entries this often
IDLE_SECONDS = 1.0  # a tail is checkpointed once nothing has arrived for this long
FOLLOW_SECONDS = 2.0  # a follower tries to become the leader this often
RETRY_SECONDS = 1.0  # after a database error
PRUNE_SECONDS = 5.0  # the leader prunes the queue this often
KEEP_SECONDS = 600.0  # queue rows younger than this stay, even once in the tree
# Rows deleted per statement: about 35 ms of the database's time here, not a pause of a
# third of a second (20,000). A full chunk means more is due: the next round prunes again,
# so a backlog goes at up to PRUNE_MOST per round, and a steady stream every PRUNE_SECONDS.
PRUNE_MOST = 2_000

log = logging.getLogger(__name__)

_COPIED = ", ".join(entry.FIELDS)


class Round(NamedTuple):
    integrated: int  # entries added to the tree in this round
    size: int  # the tree's size after it
    checkpointed: bool


def integrate(
    conn: psycopg.Connection,
    signer: Ed25519PrivateKey,
    every: int,
    seconds: float,
    idle: bool = False,
) -> Round:
    """One round, in its own transaction: every entry queued since the last round, into the
    tree. With `idle` (nothing arrived for a while) a checkpoint is signed if the tree has
    grown past the last one."""
    with conn.transaction():
        state = conn.execute(
            "SELECT size, frontier, checkpoint_size, checkpoint_at, queue_xmax::text,"
            " queue_xip::text[] FROM audit_tree FOR UPDATE"
        ).fetchone()
        assert state is not None, "audit_tree has its one row from migration 0004"
        size, frontier = int(state[0]), [bytes(h) for h in state[1]]
        last_size, last_at, xmax, xip = int(state[2]), state[3], state[4], state[5]
        # One statement: the snapshot it returns is the one its rows were read in.
        rows = conn.execute(
            "SELECT pg_snapshot_xmax(s.snap)::text,"
            " ARRAY(SELECT pg_snapshot_xip(s.snap)::text),"
            " q.id, q.leaf_hash"
            " FROM (SELECT pg_current_snapshot() AS snap) s"
            " LEFT JOIN audit_queue q ON q.txid >= %s::xid8 OR q.txid = ANY(%s::xid8[])"
            " ORDER BY q.id",
            (xmax, xip),
        ).fetchall()
        new_xmax, new_xip = rows[0][0], rows[0][1]
        ids = [int(r[2]) for r in rows if r[2] is not None]
        leaves = [bytes(r[3]) for r in rows if r[2] is not None]
        now = dt.datetime.now(dt.UTC)
        new_size = size
        if ids:
            conn.execute(
                f"INSERT INTO audit_entry ({_COPIED}, leaf_index, leaf_hash, queue_id)"  # noqa: S608 - fixed names
                f" SELECT {', '.join('q.' + f for f in entry.FIELDS)},"
                " %s + u.n - 1, q.leaf_hash, q.id"
                " FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(id, n)"
                " JOIN audit_queue q ON q.id = u.id ORDER BY u.n",
                (size, ids),
            )
            new_size, frontier = tree.extend(size, frontier, leaves)
            write_tiles(conn, size, leaves)
        due = new_size > last_size and (
            (
                bool(ids)
                and (
                    new_size // every > last_size // every
                    or last_at is None
                    or (now - last_at).total_seconds() >= seconds
                )
            )
            or (idle and not ids)
        )
        if due:
            root = tree.root(frontier)
            note = checkpoint.sign(checkpoint.Checkpoint(checkpoint.ORIGIN, new_size, root), signer)
            conn.execute(
                "INSERT INTO audit_checkpoint (size, root, at, note) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (size) DO NOTHING",
                (new_size, root, now, note),
            )
            last_size, last_at = new_size, now
        if ids or due or new_xmax != xmax:
            conn.execute(
                "UPDATE audit_tree SET size = %s, frontier = %s, checkpoint_size = %s,"
                " checkpoint_at = %s, queue_xmax = %s::xid8, queue_xip = %s::xid8[]",
                (new_size, frontier, last_size, last_at, new_xmax, new_xip),
            )
    return Round(len(ids), new_size, due)


def prune(conn: psycopg.Connection, keep: float = KEEP_SECONDS, most: int = PRUNE_MOST) -> int:
    """Delete queue rows that are in the tree under a signed checkpoint and were queued more
    than `keep` seconds ago (the oldest first, at most `most`); returns how many went."""
    row = conn.execute(
        "SELECT audit_queue_prune(make_interval(secs => %s), %s)", (float(keep), int(most))
    ).fetchone()
    return int(row[0]) if row else 0


class Sequencer:
    """A candidate for the install's one sequencer, in a thread of its own."""

    def __init__(
        self,
        conninfo: str,
        signer: Ed25519PrivateKey,
        every: int,
        seconds: float,
        poll: float = POLL_SECONDS,
        idle: float = IDLE_SECONDS,
        prune_every: float = PRUNE_SECONDS,
        keep: float = KEEP_SECONDS,
        prune_most: int = PRUNE_MOST,
    ):
        self.conninfo = conninfo
        self.signer = signer
        self.every = every
        self.seconds = seconds
        self.poll = poll
        self.idle = idle
        self.prune_every = prune_every
        self.keep = keep
        self.prune_most = prune_most
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="audit-sequencer", daemon=True)
            self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    application_name=f"citygrid-sequencer-{os.getpid()}",
                ) as conn:
                    failures = 0
                    self._follow_then_lead(conn)
            except psycopg.Error as exc:
                self.leading.clear()
                failures += 1
                if failures >= 30:  # the database is gone: the next append starts one again
                    log.warning("audit sequencer stops: %s", type(exc).__name__)
                    return
                log.info("audit sequencer: %s; retrying", type(exc).__name__)
                self._stop.wait(RETRY_SECONDS)

    def _follow_then_lead(self, conn: psycopg.Connection) -> None:
        while not self._stop.is_set():
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if row and row[0]:
                break
            self._stop.wait(FOLLOW_SECONDS)
        else:
            return
        self.leading.set()
        try:
            last_arrival = time.monotonic()  # a tail left by an earlier leader is checkpointed too
            pruned_at = time.monotonic()
            size = None
            while not self._stop.is_set():
                idle = last_arrival > 0 and time.monotonic() - last_arrival >= self.idle
                done = integrate(conn, self.signer, self.every, self.seconds, idle)
                # The tree also grows by acts of the command line, the signer and the exchange,
                # appended in their own transactions (audit.record.append): an arrival too, or
                # an act that follows a checkpoint within `seconds` stays without one.
                if done.integrated or (size is not None and done.size != size):
                    last_arrival = time.monotonic()
                elif idle:
                    last_arrival = 0.0  # the tail is checkpointed: wait for new arrivals
                size = done.size
                if time.monotonic() - pruned_at >= self.prune_every:
                    pruned_at = time.monotonic()
                    if self._prune(conn) >= self.prune_most:
                        pruned_at -= self.prune_every  # more is due: again next round
                self._stop.wait(self.poll)  # entries gather meanwhile: large batches
        finally:
            self.leading.clear()

    def _prune(self, conn: psycopg.Connection) -> int:
        """One chunk of the queue's pruning; how many rows went."""
        try:
            gone = prune(conn, self.keep, self.prune_most)
        except (psycopg.errors.UndefinedFunction, psycopg.errors.InsufficientPrivilege) as exc:
            # A database before migration 0033, or a role it gave no right to prune.
            log.info("audit sequencer: no queue pruning (%s)", type(exc).__name__)
            self.prune_every = float("inf")
            return 0
        if gone:
            log.info("audit sequencer: %d integrated queue rows pruned", gone)
        return gone


_running: dict[str, Sequencer] = {}
_lock = threading.Lock()
DRAIN_SECONDS = 5.0  # how long a leaving process waits for the lock or for the leader
DRAIN_POLL_SECONDS = 0.05

# Whether every entry queued up to an id is in the tree: its transaction is in the snapshot
# of the last round (below queue_xmax and not among queue_xip). Pruned rows were integrated.
_INTEGRATED_THROUGH = (
    "SELECT NOT EXISTS (SELECT 1 FROM audit_queue q, audit_tree t WHERE q.id <= %s"
    " AND (q.txid >= t.queue_xmax OR q.txid = ANY(t.queue_xip)))"
)


def drain(conninfo: str, signer: Ed25519PrivateKey, every: int, seconds: float) -> Round | None:
    """Integrate what is queued now and checkpoint the tail, as the leader. While another
    process holds the lock, wait (at most DRAIN_SECONDS) until either the lock is free or
    the leader has integrated every entry queued when this began: None then. A leaving
    worker thus waits for a sequencer service's next round (a fraction of a second), not
    for a lock that service never lets go; entries the wait leaves behind stay queued for
    the next leader."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT max(id) FROM audit_queue").fetchone()
        last = row[0] if row else None
        deadline = time.monotonic() + DRAIN_SECONDS
        while True:
            locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if locked and locked[0]:
                return integrate(conn, signer, every, seconds, idle=True)
            if last is None or _integrated_through(conn, last) or time.monotonic() >= deadline:
                return None
            time.sleep(DRAIN_POLL_SECONDS)


def _integrated_through(conn: psycopg.Connection, last: int) -> bool:
    row = conn.execute(_INTEGRATED_THROUGH, (last,)).fetchone()
    return bool(row and row[0])


def drain_all() -> None:
    """At a process's exit (gunicorn's worker_exit, atexit): stop this process's candidates
    and integrate what they may have queued since the leader's last round."""
    for conninfo in list(_running):
        release(conninfo)


def release(conninfo: str) -> None:
    """Stop this process's candidate for the install at `conninfo` (if it runs one) and
    integrate what it may have queued since the leader's last round. A writer that appends
    later starts a candidate again."""
    with _lock:
        candidate = _running.pop(conninfo, None)
    if candidate is None:
        return
    candidate.stop()
    try:
        drain(conninfo, candidate.signer, candidate.every, candidate.seconds)
    except psycopg.Error as exc:  # the queue keeps the entries: the next leader takes them
        log.warning("audit sequencer: no final round (%s)", type(exc).__name__)


def forget(database: str) -> None:
    """Stop this process's candidates for `database` without a final round: it is being
    dropped (tests drop their own databases; a drain at exit would only find it gone)."""
    with _lock:
        gone = [
            _running.pop(c) for c in list(_running) if conninfo_to_dict(c).get("dbname") == database
        ]
    for candidate in gone:
        candidate.stop()


def ensure_running(
    conninfo: str, signer: Ed25519PrivateKey, every: int, seconds: float
) -> Sequencer:
    """This process's sequencer candidate for the database at `conninfo`, started once (and
    again if its thread has ended). It signs with the key of the latest writer that asked."""
    candidate = _running.get(conninfo)
    if candidate is not None and candidate.alive():
        if candidate.signer is not signer:
            candidate.signer, candidate.every, candidate.seconds = signer, every, seconds
        return candidate
    with _lock:
        candidate = _running.get(conninfo)
        if candidate is None:
            if not _running:
                atexit.register(drain_all)
            candidate = _running[conninfo] = Sequencer(conninfo, signer, every, seconds)
        candidate.signer, candidate.every, candidate.seconds = signer, every, seconds
        candidate.start()
        return candidate
