"""gunicorn's threaded worker with the TLS handshake moved into its poller, and every
connection it refuses itself recorded in the audit log.

gunicorn's gthread worker does the handshake on a request thread with a blocking socket, so
a few clients that send the first bytes of a ClientHello and stall hold every thread. Here
the main loop accepts, wraps the socket without handshaking, and drives `do_handshake()`
non-blocking from its selector; a handshake not finished within
`handshake_timeout_seconds` is closed. Only a connection with a completed handshake, and
data to read, ever reaches the thread pool.

A client certificate that is missing, expired, revoked, from another CA or not made for
client authentication fails the handshake; that failure and a handshake timeout are audit
entries (`tls.refused` with the reason), queued to a group-commit writer of their own so the
accept loop never waits for the database. Requests gunicorn refuses itself (request line
too long, too many or too large header fields, malformed framing) get the app's JSON
problems and security headers and an `http.refused` entry, committed before the answer.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn import http, util
from gunicorn import sock as gsock
from gunicorn.http import wsgi
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

from audit.keys import signer
from audit.record import Entry
from audit.writer import GroupCommitWriter
from auth import raw_responses
from auth.tls_reasons import REASONS, reason_of

__all__ = ["REASONS", "AuditingThreadWorker", "reason_of"]

LINGER_SECONDS = 2.0  # gunicorn's close_graceful default
# A request refused before its body was read (413 past a route's limit, 403 for an upload)
# leaves the body unread: closing then would reset the connection while the client is still
# sending, and the client would see a reset instead of the refusal. The linger reads and
# drops up to the largest body a route takes (a 16 MiB bulk import) and its head.
LINGER_MAX_BYTES = 17 << 20


def tls_refusal(addr: Any, reason: str, error: str, **detail: Any) -> Entry:
    return Entry(
        action="tls.refused",
        outcome="refused",
        client_addr=str(addr[0]) if addr else "",
        resource="tls",
        detail={"reason": reason, "tls_error": error[:200], **detail},
    )


class RefusalLog:
    """Audit entries for refused connections, written without making the caller wait.

    Entries go to a group-commit writer of their own (not the one served requests wait on)
    one each. From one source address, only the first `full_per_window` refusals of each
    `window_seconds` are entries of their own; the rest are counted per source and written
    as one entry per source and window ("N more refusals from ADDR", with the reasons), so
    unauthenticated clients cannot flood the log or hold the tree's lock. Should the
    database fall behind by `limit` entries, further refusals are counted per reason and
    written as one entry per reason with the count once the backlog has halved: nothing is
    dropped silently, and memory stays bounded (at most `max_sources` addresses a window).
    Counted entries are written every `interval_seconds`, so a flood is in the log soon.
    """

    def __init__(
        self,
        writer: GroupCommitWriter,
        log: Any,
        limit: int = 4096,
        full_per_window: int = 20,
        window_seconds: float = 60.0,
        interval_seconds: float = 5.0,
        max_sources: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.writer = writer
        self.log = log
        self.limit = limit
        self.full_per_window = full_per_window
        self.window_seconds = window_seconds
        self.interval_seconds = interval_seconds
        self.max_sources = max_sources
        self.clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._outstanding = 0
        self._overflow: Counter[str] = Counter()
        self._window_start = self._flushed = clock()
        self._seen: Counter[str] = Counter()  # refusals per source in this window
        self._held: dict[str, Counter[str]] = {}  # per source: reasons past the first N

    def add(self, entry: Entry) -> None:
        reason = str(entry.detail.get("reason", ""))
        with self._lock:
            due = self._roll(force=False)
            source = entry.client_addr or "(unknown)"
            if source not in self._seen and len(self._seen) >= self.max_sources:
                source = "(several)"
            self._seen[source] += 1
            keep: Entry | None = None
            if self._seen[source] > self.full_per_window:
                self._held.setdefault(source, Counter())[reason] += 1
            elif self._outstanding >= self.limit:
                self._overflow[reason] += 1
            else:
                self._outstanding += 1
                keep = entry
        for counted in due:
            self._submit(counted)
        if keep is not None:
            self._submit(keep)

    def tick(self) -> None:
        """Write the counted entries of a window that has ended (the worker's loop calls
        this about once a second)."""
        with self._lock:
            due = self._roll(force=False)
        for counted in due:
            self._submit(counted)

    def close(self, timeout: float) -> None:
        """Write everything still counted and wait (at most `timeout`) for it to commit."""
        with self._lock:
            due = self._roll(force=True)
            for reason, count in self._overflow.items():
                due.append(self._counted("(several)", Counter({reason: count})))
            self._outstanding += len(self._overflow)
            self._overflow = Counter()
        for counted in due:
            self._submit(counted)
        with self._idle:
            self._idle.wait_for(lambda: self._outstanding <= 0, timeout)

    def _roll(self, force: bool) -> list[Entry]:
        """Under the lock: a new window once one has ended; every interval, the counted
        entry of each source past its first refusals."""
        now = self.clock()
        if now - self._window_start >= self.window_seconds:
            self._window_start = now
            self._seen = Counter()
        if not force and now - self._flushed < self.interval_seconds:
            return []
        self._flushed = now
        held, self._held = self._held, {}
        self._outstanding += len(held)
        return [self._counted(source, reasons) for source, reasons in held.items()]

    def _counted(self, source: str, reasons: Counter[str]) -> Entry:
        count = sum(reasons.values())
        listed = ", ".join(f"{r} ×{n}" for r, n in reasons.most_common())
        reason = next(iter(reasons)) if len(reasons) == 1 else "several"
        entry = tls_refusal(None, reason, "", coalesced=count, reasons=dict(reasons))
        detail = {**entry.detail, "summary": f"{count} more refusals from {source}: {listed}"}
        return entry._replace(client_addr=source, detail=detail)

    def _submit(self, entry: Entry) -> None:
        self.writer.submit(entry).add_done_callback(self._done)

    def _done(self, future: Future[int]) -> None:
        exc = future.exception()
        if exc is not None:
            self.log.error("could not record a refused connection: %s", exc)
        with self._lock:
            self._outstanding -= 1
            flush: Counter[str] = Counter()
            if self._overflow and self._outstanding < self.limit // 2:
                flush, self._overflow = self._overflow, Counter()
                self._outstanding += len(flush)
            if self._outstanding <= 0:
                self._idle.notify_all()
        for reason, count in flush.items():
            self._submit(
                tls_refusal(None, reason, "", coalesced=count)._replace(client_addr="(several)")
            )


class Handshake:
    """A TLS connection whose handshake the worker's poller is driving."""

    __slots__ = ("sock", "addr", "server", "deadline", "events")

    def __init__(self, sock: ssl.SSLSocket, addr: Any, server: Any, deadline: float):
        self.sock = sock
        self.addr = addr
        self.server = server
        self.deadline = deadline
        self.events = 0


class Conn(TConn):  # type: ignore[misc]
    """gunicorn's connection, whose graceful close lingers in the worker's poller."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, linger: Any):
        super().__init__(cfg, sock, client, server)
        self.linger = linger

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.linger(self.sock)
        else:
            util.close(self.sock)


class TlsConn(Conn):
    """A connection whose TLS handshake is already complete: init() only makes its parser."""

    initialized: bool

    def init(self) -> None:
        if self.initialized:
            return
        self.initialized = True
        self.sock.setblocking(True)
        if gsock.is_http2_negotiated(self.sock):
            self.is_http2 = True
            self.parser = http.get_parser(self.cfg, self.sock, self.client, http2_connection=True)
            self.parser.initiate_connection()
            return
        self.parser = http.get_parser(self.cfg, self.sock, self.client)


class AuditingThreadWorker(ThreadWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        from mapserver import settings as settings_mod

        settings = settings_mod.load()
        self.handshake_seconds = settings.handshake_timeout_seconds
        self.audit = GroupCommitWriter(
            settings.serving_database_url,
            signer(settings.pki_dir),
            settings.audit_checkpoint_entries,
            settings.audit_checkpoint_seconds,
        )
        # Refusals commit through a writer of their own: served requests never queue behind them.
        refusal_writer = GroupCommitWriter(
            settings.serving_database_url,
            signer(settings.pki_dir),
            settings.audit_checkpoint_entries,
            settings.audit_checkpoint_seconds,
        )
        self.refusals = RefusalLog(refusal_writer, self.log)
        self.handshakes: dict[Handshake, None] = {}  # in accept order, so in deadline order
        self.lingering: deque[tuple[float, Any]] = deque()  # (deadline, socket), in order
        # gunicorn builds every HTTP/1 response from this class: drop its Server header.
        wsgi.Response = raw_responses.QuietResponse
        super().init_process()

    def run(self) -> None:
        try:
            super().run()
        finally:  # the refusals still counted are written before the worker exits
            self.refusals.close(timeout=5.0)

    # --- TLS handshakes, driven by the poller on the main thread -------------------------

    def accept(self, listener: Any) -> None:
        try:
            client, addr = listener.accept()
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        if not self.cfg.is_ssl:  # behind nginx: plain HTTP from the proxy
            client.setblocking(True)
            self.enqueue_req(Conn(self.cfg, client, addr, listener.getsockname(), self._linger))
            return
        client.setblocking(False)
        try:
            tls = gsock.ssl_context(self.cfg).wrap_socket(
                client,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
            )
        except OSError:  # gone before we could wrap it (ENOTCONN)
            self.nr_conns -= 1
            util.close(client)
            return
        except Exception:  # noqa: BLE001 - no TLS context, no connection (fail closed)
            self.log.exception("no TLS context for a new connection")
            self.nr_conns -= 1
            util.close(client)
            return
        hs = Handshake(tls, addr, listener.getsockname(), time.monotonic() + self.handshake_seconds)
        self.handshakes[hs] = None
        self._advance(hs)

    def _advance(self, hs: Handshake, _fileobj: Any = None) -> None:
        try:
            hs.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wait(hs, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._wait(hs, selectors.EVENT_WRITE)
            return
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError):
            self._close(hs)  # the client went away; nothing was refused
            return
        except ssl.SSLError as exc:
            self.refusals.add(tls_refusal(hs.addr, reason_of(exc), str(exc)))
            self._close(hs)
            return
        except OSError:
            self._close(hs)
            return
        self._forget(hs)
        conn = TlsConn(self.cfg, hs.sock, hs.addr, hs.server, self._linger)
        if hs.sock.pending():
            conn.data_ready = True
            self.enqueue_req(conn)
            return
        # Like gunicorn's deferred connections: the poller waits for the request, no thread.
        conn.timeout = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def _wait(self, hs: Handshake, events: int) -> None:
        if hs.events == events:
            return
        callback = partial(self._advance, hs)
        if hs.events:
            self.poller.modify(hs.sock, events, callback)
        else:
            self.poller.register(hs.sock, events, callback)
        hs.events = events

    def _forget(self, hs: Handshake) -> None:
        if hs.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(hs.sock)
            hs.events = 0
        self.handshakes.pop(hs, None)

    def _close(self, hs: Handshake) -> None:
        self._forget(hs)
        self.nr_conns -= 1
        util.close(hs.sock)

    # --- closing: wait for the client's FIN in the poller, not on the main thread ---------

    def _linger(self, sock: Any) -> None:
        """gunicorn's close_graceful (RFC 9112 9.6: FIN, then read until the peer closes, so
        unread request bytes do not turn into a reset that cuts the response), without its
        blocking wait of up to LINGER_SECONDS on the loop that serves every client."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, partial(self._drain, [0]))
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self.lingering.append((time.monotonic() + LINGER_SECONDS, sock))

    def _drain(self, drained: list[int], sock: Any) -> None:
        try:
            while drained[0] < LINGER_MAX_BYTES:
                data = sock.recv(65536)
                if not data:
                    break
                drained[0] += len(data)
        except (BlockingIOError, InterruptedError):
            return  # nothing more yet: stay registered
        except OSError:
            pass
        self._unlinger(sock)

    def _unlinger(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)
        util.close(sock)

    def murder_pending(self) -> None:
        """gunicorn's idle connections, lingering closes past their time, then handshakes
        past their deadline (each audited)."""
        super().murder_pending()
        self.refusals.tick()
        now = time.monotonic()
        while self.lingering and self.lingering[0][0] <= now:
            self._unlinger(self.lingering.popleft()[1])
        while self.handshakes:
            hs = next(iter(self.handshakes))
            if hs.deadline > now:
                break
            error = f"no complete handshake within {self.handshake_seconds:g} s"
            self.refusals.add(tls_refusal(hs.addr, "handshake_timeout", error))
            self._close(hs)

    # --- requests gunicorn refuses itself, on a request thread ---------------------------

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, ssl.SSLError):  # a TLS failure after the handshake
            self.refusals.add(tls_refusal(addr, reason_of(exc), str(exc)))
            return  # no answer over a broken TLS session; gunicorn closes the connection
        raw_responses.refuse(self.log, self.audit.write, req, client, addr, exc)
