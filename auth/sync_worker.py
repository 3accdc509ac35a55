"""gunicorn's sync worker for `citygrid serve --behind-nginx`, with the same answers to what
gunicorn refuses itself as the TLS worker's (auth.tls_worker).

Behind nginx a worker process needs no threads: nginx holds the clients' connections, reads
their requests and bodies whole and takes each answer at once (buffering), so a slow
mobile link never holds a process, and one request at a time per process spares the
hand-offs between gunicorn's poller, its thread pool and the interpreter's lock that a
threaded worker pays on every request (docs/performance.md, sixth pass). More processes
take the place of threads: `citygrid serve --behind-nginx --workers N`.

Requests gunicorn refuses itself (request line too long, too many or too large header
fields, malformed framing) get the app's JSON problems and security headers and an
`http.refused` entry, committed before the answer; gunicorn's Server header is dropped.

Answers are held back and sent in batches. A process takes the connections waiting on its
socket, up to BATCH_MOST, one after the other, and runs each request through the app, but
what gunicorn writes for it is kept (`HeldAnswer`) and its audit entry held, to be written
with the batch's (audit.spool.flushes_put_off). Once none waits (or BATCH_MOST), one write and
one flush make every entry of the batch durable, and only then are the answers sent: no answer
leaves before its entry is on disk, but a process flushes and sleeps once per batch rather
than once per request. If that flush fails, each answer of the batch is a 503 instead. When
requests come one at a time, a batch is one request, as without batching. Under load, a
process no longer waits on the disk between requests, so fewer processes are needed (two
on two cores, docs/performance.md). Every byte of an answer goes through its HeldAnswer:
gunicorn's sendfile is off (nginx sends the tiles themselves, X-Accel-Redirect).

A connection is closed as soon as its answer is written (`close_promptly`). gunicorn closes
gracefully (RFC 9112, 9.6): it half-closes, then reads until nginx has taken the answer and
closed its side, so that request bytes left unread do not turn the close into a reset that
could cut the answer short. nginx sends one request per upstream connection and nothing
after it, so nothing is left unread: the process may take the next request at once instead
of waiting for nginx to get round to the close (a tenth of a worker's time under load,
docs/performance.md). Where bytes are left unread, gunicorn's graceful close still runs.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.sync import SyncWorker

from audit.keys import signer
from audit.spool import flushes_put_off
from audit.writer import GroupCommitWriter
from auth import raw_responses

__all__ = ["AuditingSyncWorker", "close_promptly"]

_graceful = util.close_graceful
BATCH_MOST = 8  # connections answered together, with one flush of the audit spool
# A request refused before its body was read (a 403 for an upload) leaves the body unread:
# closing then resets the connection while nginx is still writing the body, and nginx
# answers 502 instead of the refusal. The close reads and drops up to the largest body nginx
# passes on (the 16 MiB of a bulk component import, deploy/nginx) and its head.
DRAIN_MOST = 17 << 20


def close_promptly(sock: socket.socket, timeout: float = 2.0, max_drain: int = 65536) -> None:
    """Close `sock` at once if its peer sent nothing it has not read (a FIN, no reset);
    else gunicorn's graceful close (half-close, drain for up to `timeout` seconds)."""
    try:
        sock.setblocking(False)
        pending = sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        pending = b""  # nothing unread
    except OSError:
        pending = b""  # the peer is gone: nothing to cut short
    if pending:
        sock.setblocking(True)
        _graceful(sock, timeout, max(max_drain, DRAIN_MOST))
        return
    with contextlib.suppress(OSError):
        sock.close()


class HeldAnswer:
    """A connection whose answer is held back: what gunicorn and the app write to it is kept,
    and its close put off, until `release` sends it (or a refusal in its place) and closes."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.out = bytearray()

    def __getattr__(self, name: str) -> Any:  # reading the request, addresses, timeouts
        return getattr(self.sock, name)

    def sendall(self, data: bytes, flags: int = 0) -> None:  # noqa: ARG002 - as socket's
        self.out += data

    def send(self, data: bytes, flags: int = 0) -> int:  # noqa: ARG002 - as socket's
        self.out += data
        return len(data)

    def close(self) -> None:
        """Put off until `release`."""

    def release(self, instead: bytes | None = None) -> None:
        """Send what was written (or `instead`), then close the connection."""
        try:
            data = self.out if instead is None else instead
            if data:
                self.sock.setblocking(True)
                self.sock.sendall(data)
        except OSError:
            pass  # nginx went away: nothing to answer
        finally:
            close_promptly(self.sock)


def _close(sock: Any, timeout: float = 2.0, max_drain: int = 65536) -> None:
    """gunicorn's close of a connection once answered: put off for a held answer."""
    if isinstance(sock, HeldAnswer):
        return
    close_promptly(sock, timeout, max_drain)


def take_over(cfg: Any) -> None:
    """What this worker changes in gunicorn, for its whole process."""
    # gunicorn builds every HTTP/1 response from this class: drop its Server header.
    wsgi.Response = raw_responses.QuietResponse
    # The sync worker closes each connection through this function (module docstring).
    util.close_graceful = _close
    # Every byte of an answer goes through its HeldAnswer (sendfile would go around it).
    cfg.set("sendfile", False)


class AuditingSyncWorker(SyncWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        from mapserver import settings as settings_mod

        settings = settings_mod.load()
        self.audit = GroupCommitWriter(
            settings.serving_database_url,
            signer(settings.pki_dir),
            settings.audit_checkpoint_entries,
            settings.audit_checkpoint_seconds,
        )
        take_over(self.cfg)
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        raw_responses.refuse(self.log, self.audit.write, req, client, addr, exc)

    def accept(self, listener: socket.socket) -> None:
        """Answer the connections waiting now, at most BATCH_MOST, with one flush of the audit
        spool for all of their entries (module docstring). Raises as `listener.accept` does
        when none waits, for gunicorn's loop to wait."""
        held: list[HeldAnswer] = []
        with flushes_put_off() as owed:
            while len(held) < BATCH_MOST:
                try:
                    client, addr = listener.accept()
                except OSError:
                    if held:
                        break  # none waits any more: answer these
                    raise
                client.setblocking(True)
                util.close_on_exec(client)
                answer = HeldAnswer(client)
                held.append(answer)
                self.handle(listener, answer, addr)
                self.notify()  # alive for the arbiter, however long the batch takes
            try:
                owed.flush()
            except Exception:  # noqa: BLE001 - no answer leaves whose entry is not durable
                self.log.exception("audit spool flush failed; answering 503")
                for answer in held:
                    refusal = raw_responses.render(raw_responses.UNAVAILABLE, uuid.uuid4().hex)
                    answer.release(refusal)
                return
        for answer in held:
            answer.release()
