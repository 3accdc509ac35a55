"""Runs of tiles: the renderer's accepted tile answers recorded as one audit entry per run,
not one per tile.

The gateway's entry of each tile request is the durable record before its answer leaves;
the renderer's own log is defence in depth (tiles.renderer_audit). An entry of its own for
every accepted tile cost the renderer's zone a leaf, a row and a hash per tile, which showed
in the two zones' latency (README, "Deploying in two zones"). A run keeps every answer's
facts in one entry instead:

- a run is the accepted tile answers (200, 304) to one presenter (service certificate and
  address) under one grant (account, products, level, streets), asked the same way (tile
  channel or app), begun within RUN_SECONDS of the first, RUN_MOST at most;
- its entry (action `renderer.tiles`) names the certificate, address and grant as a single
  tile's entry does, the shared path prefix as its resource, the sum of the bytes and the
  slowest answer's latency, and holds one row per answer in `detail.tiles`, in answer order:
  `[µs after the entry's time, request id, path, status, bytes, latency µs]` (FIELDS);
- a thread of its own hands each run to the trail when it is due, so no request waits for
  it; a run that reaches RUN_MOST is handed over by the request that filled it.

Refusals are never in a run: each is committed as an entry of its own before it leaves. What
the log can miss if the process dies is what it missed before, a run not yet handed over
(younger than RUN_SECONDS) and the writer's commit in flight; `pending` lets the trail refuse
to write behind while runs pile up (tiles.renderer_audit.Trail.keeping_up).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from audit.record import Entry

if TYPE_CHECKING:
    from tiles.renderer_audit import Answered

ACTION = "renderer.tiles"
ENDPOINT = "tile"  # the answers that go into runs (renderer_audit.Answered.endpoint)
RUN_SECONDS = 0.1  # a run is handed over this long after its first answer, at the latest
RUN_MOST = 100  # answers in a run at most (storable.DETAIL_ITEMS_MAX: a list keeps 100)
FIELDS = ("after_us", "request_id", "path", "status", "bytes", "latency_us")

log = logging.getLogger("citygrid.renderer")

Key = tuple[Any, ...]


@dataclass
class Run:
    """The answers of one key so far: the first's wall and monotonic times, then the rows."""

    answered: Answered  # the first answer: whom the run names
    at: dt.datetime
    started: float  # time.monotonic() of the first answer
    rows: list[list[Any]] = field(default_factory=list)


def key_of(a: Answered) -> Key:
    """What every answer of a run shares: presenter, grant and the way it was asked."""
    peer, grant = a.peer, a.grant
    streets = None if grant.streets is None else tuple(sorted(grant.streets))
    return (
        peer.service if peer else "", peer.serial if peer else "", peer.sha256 if peer else "",
        a.client_addr, a.method, a.channel,
        grant.account, tuple(grant.products), grant.level, streets,
    )  # fmt: skip


def row_of(a: Answered, started: float, now: float) -> list[Any]:
    """One answer's row; `started` is its run's first answer's monotonic time."""
    latency = None if a.started is None else round((now - a.started) * 1e6)
    return [round((now - started) * 1e6), a.request_id, a.path, a.status, a.size, latency]


def entry_of(run: Run) -> Entry:
    """The run's entry (module docstring). Pure."""
    a, rows = run.answered, run.rows
    peer, grant = a.peer, a.grant
    prefix = posixpath.commonprefix([r[2] for r in rows])
    latencies = [r[5] for r in rows if r[5] is not None]
    detail: dict[str, Any] = {
        "service": peer.service if peer else "",
        "grant_account": grant.account,
        "products": list(grant.products),
        "level": grant.level,
        "streets": None if grant.streets is None else sorted(grant.streets),
        "fields": list(FIELDS),
        "tiles": rows,
    }
    if a.channel:
        detail["channel"] = a.channel
    return Entry(
        at=run.at,
        action=ACTION,
        outcome="ok",
        client_addr=a.client_addr,
        method=a.method,
        resource=prefix[: prefix.rfind("/") + 1] if "/" in prefix else prefix,
        request_id=str(rows[0][1]),
        status=200,
        bytes=sum(r[4] or 0 for r in rows),
        latency_ms=max(latencies) / 1000 if latencies else None,
        detail=detail,
        **(peer.presenter() if peer else {}),
    )


def answers(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """A run entry's rows as one mapping per tile answer (for review and tests)."""
    names = detail.get("fields") or FIELDS
    return [dict(zip(names, row, strict=True)) for row in detail.get("tiles", [])]


class Runs:
    """Accepted tile answers gathered into runs and handed to `hand_over(entry, answers)`."""

    def __init__(
        self,
        hand_over: Callable[[Entry, int], None],
        seconds: float = RUN_SECONDS,
        most: int = RUN_MOST,
    ):
        self.hand_over = hand_over
        self.seconds = seconds
        self.most = most
        self._state = threading.Condition()
        self._open: dict[Key, Run] = {}
        self._pending = 0  # answers in open runs
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, a: Answered) -> None:
        """Put the accepted answer `a` into its run (after its answer has left)."""
        now = time.monotonic()
        key = key_of(a)
        full: Run | None = None
        with self._state:
            self._ensure_thread()
            run = self._open.get(key)
            if run is None:
                run = self._open[key] = Run(a, dt.datetime.now(dt.UTC), now)
                if len(self._open) == 1:
                    self._state.notify()
            run.rows.append(row_of(a, run.started, now))
            self._pending += 1
            if len(run.rows) >= self.most:
                full = self._open.pop(key)
                self._pending -= len(full.rows)
        if full is not None:
            self.hand_over(entry_of(full), len(full.rows))

    def pending(self) -> tuple[int, float]:
        """Answers in runs not yet handed over, and how long the oldest run has waited."""
        with self._state:
            if not self._open:
                return 0, 0.0
            oldest = min(run.started for run in self._open.values())
            return self._pending, time.monotonic() - oldest

    def flush(self) -> None:
        """Hand every open run over now (at exit)."""
        with self._state:
            due, self._open, self._pending = list(self._open.values()), {}, 0
        for run in due:
            self.hand_over(entry_of(run), len(run.rows))

    def _ensure_thread(self) -> None:
        """The hand-over thread of this process (started lazily: a forked worker has none)."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="tile-runs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._state:
                while not self._open:
                    self._state.wait()
                now = time.monotonic()
                due_at = min(run.started for run in self._open.values()) + self.seconds
                if due_at > now:
                    self._state.wait(due_at - now)
                    continue
                due = [k for k, run in self._open.items() if run.started + self.seconds <= now]
                runs = [self._open.pop(k) for k in due]
                self._pending -= sum(len(run.rows) for run in runs)
            for run in runs:
                try:
                    self.hand_over(entry_of(run), len(run.rows))
                except Exception:  # noqa: BLE001 - the thread goes on with the next run
                    log.warning("renderer audit: a run of tiles not handed over", exc_info=True)
