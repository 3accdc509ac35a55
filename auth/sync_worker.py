"""gunicorn's sync worker for `citygrid serve --behind-nginx`, with the same answers to what
gunicorn refuses itself as the TLS worker's (auth.tls_worker).

Behind nginx a worker process needs no threads: nginx holds the clients' connections, reads
their requests and bodies whole and takes each answer at once (buffering), so a slow
mobile link never holds a process, and one request at a time per process spares the
hand-offs between gunicorn's poller, its thread pool and the interpreter's lock that a
threaded worker pays on every request (README, Performance, sixth pass). More processes
take the place of threads: `citygrid serve --behind-nginx --workers N`.

Requests gunicorn refuses itself (request line too long, too many or too large header
fields, malformed framing) get the app's JSON problems and security headers and an
`http.refused` entry, committed before the answer; gunicorn's Server header is dropped.

A connection is closed as soon as its answer is written (`close_promptly`). gunicorn closes
gracefully (RFC 9112, 9.6): it half-closes, then reads until nginx has taken the answer and
closed its side, so that request bytes left unread do not turn the close into a reset that
could cut the answer short. nginx sends one request per upstream connection and nothing
after it, so nothing is left unread: the process may take the next request at once instead
of waiting for nginx to get round to the close (a tenth of a worker's time under load,
README, Performance). Where bytes are left unread, gunicorn's graceful close still runs.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers.sync import SyncWorker

from audit.keys import signer
from audit.writer import GroupCommitWriter
from auth import raw_responses

__all__ = ["AuditingSyncWorker", "close_promptly"]

_graceful = util.close_graceful


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
        _graceful(sock, timeout, max_drain)
        return
    with contextlib.suppress(OSError):
        sock.close()


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
        # gunicorn builds every HTTP/1 response from this class: drop its Server header.
        wsgi.Response = raw_responses.QuietResponse
        # The sync worker closes each connection through this function (module docstring).
        util.close_graceful = close_promptly
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        raw_responses.refuse(self.log, self.audit.write, req, client, addr, exc)
