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
"""

from __future__ import annotations

from typing import Any

from gunicorn.http import wsgi
from gunicorn.workers.sync import SyncWorker

from audit.keys import signer
from audit.writer import GroupCommitWriter
from auth import raw_responses

__all__ = ["AuditingSyncWorker"]


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
        super().init_process()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        raw_responses.refuse(self.log, self.audit.write, req, client, addr, exc)
