"""Load for the SIGKILL tests: concurrent clients repeat requests until stopped, and every
outcome is kept with its times, so that a test can kill serving processes mid-load and then
tell the answered requests from the failed ones and from those in flight at the kill."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import NamedTuple

import psycopg

from audit.sequencer import LOCK_KEY

from .tls import REFUSED, Reply


class Kill(NamedTuple):
    """When a kill was sent and when its process was reaped (monotonic seconds)."""

    began: float
    ended: float


class Outcome(NamedTuple):
    """One request: the client's sequence number `n`, its times, and the status (None: no
    answer at all, the connection refused or cut)."""

    n: int
    started: float
    ended: float
    status: int | None
    request_id: str | None

    def in_flight(self, kill: Kill) -> bool:
        """Sent before the kill was over and answered (or failed) after it began."""
        return self.started <= kill.ended and self.ended >= kill.began


class Load:
    """`clients` threads, each calling `send(n)` for n = 0, 1, 2, … until stopped."""

    def __init__(self, send: Callable[[int], Reply], clients: int = 6):
        self.send = send
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def __enter__(self) -> Load:
        for th in self._threads:
            th.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            if th.is_alive():
                th.join()

    def _client(self) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                reply = self.send(n)
                status, rid = reply.status, reply.headers.get("X-Request-Id")
            except REFUSED:
                status, rid = None, None  # no answer: nothing was promised
            with self._lock:
                self.outcomes.append(Outcome(n, started, time.monotonic(), status, rid))
            n += 1

    @property
    def answered(self) -> list[str]:
        """The request ids of the 200 answers so far."""
        with self._lock:
            return [o.request_id for o in self.outcomes if o.status == 200 and o.request_id]

    def answers_reach(self, n: int, timeout: float = 60) -> None:
        """Wait on the load itself, not on the clock: slow machines just take longer."""
        deadline = time.monotonic() + timeout
        while (count := len(self.answered)) < n:
            assert time.monotonic() < deadline, f"only {count} answers"
            time.sleep(0.05)


def workers(arbiter: int) -> list[int]:
    """The pids of a gunicorn arbiter's workers."""
    found = subprocess.run(["pgrep", "-P", str(arbiter)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def kill(pid: int) -> Kill:
    began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return Kill(began, time.monotonic())


def kill_group(proc: subprocess.Popen[bytes]) -> Kill:
    """SIGKILL a process group at once (a gunicorn arbiter and its workers: none leaves in
    order, none drains the audit queue) and reap its leader."""
    began = time.monotonic()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return Kill(began, time.monotonic())


_LEADER = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND (l.classid::bigint << 32 | l.objid::bigint) = %s"
)


def sequencer_leader(url: str, other_than: int | None = None, timeout: float = 30) -> int:
    """The pid of the process whose audit sequencer holds the install's lock, waiting for
    one (other than `other_than`: a successor) to lead."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(_LEADER, (LOCK_KEY,)).fetchone()
            if row and str(row[0]).startswith("citygrid-sequencer-"):
                pid = int(str(row[0]).rsplit("-", 1)[1])
                if pid != other_than:
                    return pid
            time.sleep(0.05)
    raise AssertionError("no sequencer leads" + (f" after {other_than}" if other_than else ""))
