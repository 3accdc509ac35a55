"""The renderer's own audit: every request it answers, accepted or refused, is an entry of
the tamper-evident log in the renderer's database (audit.writer's queue, audit.sequencer's
tree, the renderer's own checkpoint key under its data directory). `citygrid audit verify`
with the renderer's settings checks it.

The gateway's entry is the durable record that precedes every answer to a client; the
renderer's log is defence in depth against a compromised gateway. So the two kinds of answer
reach it differently (`Trail`):

- a refusal (status 400 and up) is committed before it leaves, as the gateway's entries are;
- an accepted request's entry is written behind: handed to the writer, which commits the
  entries of BATCH_SECONDS in one transaction (one WAL flush, not one per request: both
  zones' logs may share a disk), while the answer leaves at once. The entry is made and
  handed over after the answer has left: on the tile channel (tiles.tile_channel) once it
  is sent, at the app once the WSGI server closes the response, sent or not. Accepted
  tiles are recorded in runs, one entry for up to a hundred answers under one grant
  (tiles.tile_runs), which a thread of their own hands to the writer.
  If an entry cannot be committed (database down, role revoked) or the writer falls more
  than BEHIND_SECONDS or BEHIND_MOST answers behind, the renderer fails closed: every
  answer then waits for its own entry's commit, and is 503 `audit_unavailable` while that
  fails, until a commit succeeds again. What the renderer's log can miss is thus bounded:
  the entries of accepted requests answered in that window (at most BEHIND_MOST, all
  younger than BEHIND_SECONDS when the writer stopped keeping up) and, if the renderer
  process dies, the accepted entries not yet committed (younger than BATCH_SECONDS, or
  than tile_runs.RUN_SECONDS for tiles, and the commit in flight);
  every one of those requests is in the gateway's log.

An entry names the service certificate that presented (account = its service name, with
its serial and SHA-256), the grant's account (`detail.grant_account`), what was asked and
the outcome; a refusal carries the reason its JSON problem gave. If the entry cannot be
committed (the database or the audit role is unreachable), a refusal is replaced by a 503,
and so is every answer from then on until the log accepts entries again.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime as dt
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple

import jwt
from flask import Flask, Response, g, jsonify, request

from audit.keys import signer
from audit.record import Entry
from audit.writer import GroupCommitWriter
from mapserver.settings import Settings, _as_role
from tiles import tile_runs

AUDIT_ROLE = "citygrid_audit"  # appends to the log only (migration 0031)
WAIT_SECONDS = 10.0  # how long a response waits for its entry's commit before a 503
BATCH_SECONDS = 0.1  # the writer commits accepted requests' entries this often, at least
BEHIND_SECONDS = 1.0  # an accepted entry not committed after this: answers wait for commits
BEHIND_MOST = 1024  # accepted entries not yet committed, at most, before answers wait too
DRAIN_SECONDS = 5.0  # at exit, how long the process waits for entries written behind

log = logging.getLogger("citygrid.renderer")


class Peer(NamedTuple):
    """The certificate a request came over, once the renderer has checked it."""

    service: str  # the service name of a service certificate, "" otherwise
    serial: str
    sha256: str

    def presenter(self) -> dict[str, str]:
        """The entry fields that name this certificate."""
        role = "service" if self.service else ""
        return {"account": self.service, "role": role, "cert_serial": self.serial,
                "cert_sha256": self.sha256}  # fmt: skip


def writer_url(settings: Settings) -> str:
    """The renderer's audit connection: its database as the append-only audit role (or
    app_database_url where set: in the secure zone the serving role writes the audit only).
    `renderer serve` hands it to its workers, which audit refused handshakes with it."""
    return settings.app_database_url or _as_role(settings.database_url, AUDIT_ROLE)


def open_writer(settings: Settings) -> GroupCommitWriter:
    return GroupCommitWriter(
        writer_url(settings),
        signer(settings.pki_dir),
        settings.audit_checkpoint_entries,
        settings.audit_checkpoint_seconds,
        connections=1,  # one commit in flight: the log keeps the order of the answers
        interval=BATCH_SECONDS,
    )


_ID_PREFIX = uuid.uuid4().hex[:16]
_ids = itertools.count(1)
_pid = [os.getpid()]  # read again in a forked child, not per request (a system call)
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def request_id() -> str:
    """A request's id, unique across restarts and workers (a random prefix drawn once, the
    process id and a counter): no call to the system's random source per request, which
    costs some 0.1 ms on a virtual machine."""
    return f"{_ID_PREFIX}{_pid[0]:x}-{next(_ids):x}"


def _outcome(status: int) -> str:
    return "ok" if status < 400 else ("refused" if status < 500 else "error")


def _reason(response: Response) -> str:
    if response.status_code < 400 or not response.is_json:
        return ""
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return ""
    return f"{body.get('error', '')}: {body.get('message', '')}"


def claimed_account(header: str) -> str:
    """Whom a grant in the Authorization `header` claims to be for, unverified."""
    if not header.startswith("Bearer "):
        return ""
    try:
        claims = jwt.decode(header[len("Bearer ") :].strip(), options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return ""
    return str(claims.get("sub", "")) if isinstance(claims, dict) else ""


class Answered(NamedTuple):
    """What the renderer answered whom: the facts of one entry, however the request came
    (the Flask app, or the tile channel: tiles.tile_channel)."""

    peer: Peer | None
    grant: Any  # tiles.grant.Grant, when one was verified
    authorization: str  # the request's Authorization header (a refused grant's claim)
    endpoint: str
    method: str
    path: str
    client_addr: str
    request_id: str
    status: int
    size: int | None
    reason: str  # "error: message" of a refusal's JSON problem
    started: float | None  # time.monotonic() when the request arrived
    channel: str = ""  # "tiles": asked on the tile channel, not at the app


def entry(a: Answered) -> Entry:
    detail: dict[str, Any] = {"service": a.peer.service if a.peer else ""}
    if a.grant is not None:
        streets = None if a.grant.streets is None else sorted(a.grant.streets)
        detail.update(grant_account=a.grant.account, products=list(a.grant.products))
        detail.update(level=a.grant.level, streets=streets)
    else:
        claimed = claimed_account(a.authorization)
        if claimed:  # a grant that was refused: whom it claimed to be for, unverified
            detail["grant_claimed"] = claimed
    if a.reason:
        detail["reason"] = a.reason
    if a.channel:
        detail["channel"] = a.channel
    peer = a.peer
    return Entry(
        at=dt.datetime.now(dt.UTC),  # the answer's time, also for an entry written behind
        action=f"renderer.{a.endpoint}",
        outcome=_outcome(a.status),
        client_addr=a.client_addr,
        method=a.method,
        resource=a.path,
        request_id=a.request_id,
        status=a.status,
        bytes=a.size,
        latency_ms=round((time.monotonic() - a.started) * 1000, 3) if a.started else None,
        detail=detail,
        **(peer.presenter() if peer else {}),
    )


def answered_of(response: Response, started: float | None) -> Answered:
    """The facts of the app's answer `response` (in its request's context)."""
    rule = request.url_rule
    return Answered(
        peer=g.get("peer"),
        grant=g.get("grant"),
        authorization=request.headers.get("Authorization", ""),
        endpoint=rule.endpoint if rule is not None else "unknown",
        method=request.method,
        path=request.path,
        client_addr=request.remote_addr or "",
        request_id=g.get("request_id", ""),
        status=response.status_code,
        size=response.calculate_content_length(),
        reason=_reason(response),
        started=started,
    )


class Trail:
    """The renderer's entries on their way to the writer: refusals committed before they
    leave, accepted requests written behind while the writer keeps up (module docstring)."""

    def __init__(self, writer: GroupCommitWriter):
        _trails.add(self)
        self.writer = writer
        self.runs = tile_runs.Runs(self._run_behind)  # accepted tiles, one entry per run
        self._lock = threading.Lock()
        # (handed over at, its commit, how many answers it records), oldest first
        self._behind: collections.deque[tuple[float, Future[int], int]] = collections.deque()
        self._failing = False  # the last commit failed: answers wait until one succeeds

    def keeping_up(self) -> bool:
        """Whether an accepted request may be answered before its entry is committed: no
        failed commit, and fewer than BEHIND_MOST answers, none older than BEHIND_SECONDS,
        waiting in runs or for their commit."""
        if self._failing:
            return False
        in_runs, waited = self.runs.pending()
        with self._lock:
            behind = self._behind
            while behind and behind[0][1].done():
                behind.popleft()
            if behind:
                waited = max(waited, time.monotonic() - behind[0][0])
            answers = in_runs + sum(n for _, _, n in behind)
        return answers < BEHIND_MOST and waited < BEHIND_SECONDS

    def answered_behind(self, a: Answered) -> None:
        """An accepted answer, once it has left: a tile into its run (tiles.tile_runs),
        anything else as an entry of its own."""
        if a.endpoint == tile_runs.ENDPOINT and a.grant is not None:
            self.runs.add(a)
        else:
            self.behind(entry(a))

    def behind(self, e: Entry, answers: int = 1, urgent: bool = False) -> None:
        """Hand `e` (recording `answers` answers) to the writer without waiting; a failed
        commit makes answers wait."""
        future = self.writer.submit(e, urgent=urgent)
        with self._lock:
            self._behind.append((time.monotonic(), future, answers))
        future.add_done_callback(self._committed)

    def _run_behind(self, e: Entry, answers: int) -> None:
        """A run's entry: already a batch, so committed with the next commit, not held."""
        self.behind(e, answers, urgent=True)

    def now(self, e: Entry) -> None:
        """Commit `e` before the answer leaves; raises if it cannot be committed."""
        future = self.writer.submit(e)
        try:
            future.result(timeout=WAIT_SECONDS)
        except BaseException:
            self._failing = True
            raise
        self._failing = False

    def _committed(self, future: Future[int]) -> None:
        failed = future.exception() is not None
        if failed and not self._failing:
            log.warning("renderer audit: an entry written behind was not committed; "
                        "answers wait for their entries until a commit succeeds")  # fmt: skip
        self._failing = failed

    def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait (at most `timeout`) for the entries written behind, e.g. at exit."""
        deadline = time.monotonic() + timeout
        self.runs.flush()
        with self._lock:
            pending = [f for _, f, _ in self._behind]
        for future in pending:
            with contextlib.suppress(Exception, FutureTimeout):  # logged by _committed
                future.result(timeout=max(0.0, deadline - time.monotonic()))


_trails: weakref.WeakSet[Trail] = weakref.WeakSet()  # this process's, for drain_all


def drain_all() -> None:
    """Every trail of this process drained (a leaving renderer worker, gunicorn's
    worker_exit): its runs handed over and its entries committed before the sequencer's last
    round, which then integrates them."""
    for trail in list(_trails):
        trail.drain()


def init_app(app: Flask, writer: GroupCommitWriter) -> Trail:
    """Audit every response of `app`: refusals before they leave, accepted requests behind
    while the writer keeps up; 503 where an entry that must be committed cannot be.
    Registered first, so its start time precedes every other check."""
    trail = Trail(writer)
    atexit.register(trail.drain)
    app.extensions["citygrid-renderer-trail"] = trail

    @app.before_request
    def started() -> None:
        g.audit_started = time.monotonic()
        g.request_id = request_id()

    @app.after_request
    def audited(response: Response) -> Response:
        answered = answered_of(response, g.get("audit_started"))
        try:
            if answered.status < 400 and trail.keeping_up():
                # made and handed over once the answer has left: the WSGI server closes the
                # response after sending it (or failing to), and then calls this
                response.call_on_close(lambda: trail.answered_behind(answered))
            else:
                trail.now(entry(answered))
        except (Exception, FutureTimeout):  # noqa: BLE001 - unaudited is never answered
            app.logger.warning("renderer audit unavailable; refusing", exc_info=True)
            refused = jsonify(
                error="audit_unavailable",
                message="the renderer cannot write its audit log; try later",
            )
            refused.status_code = 503
            return refused
        return response

    return trail
