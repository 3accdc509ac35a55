"""The gateway's side of the renderer's CRL: each new CRL is pushed to the renderer
(`PUT /crl` over mutual TLS with the gateway's service certificate), because in two zones
the gateway connects inward and the renderer may not connect out.

Two ways, both needing no person: the CLI that publishes a CRL (`citygrid pki crl`,
`pki revoke`, `pki renew`) pushes it at once where it can, and every gateway process
watches its CRL file (the signer republishes it daily and on revocations made in the
browser) and pushes it when it changed, retrying every POLL_SECONDS while the renderer
cannot be reached. Of the install's processes on one machine (gunicorn's workers, several
gateway instances) one pushes: the one holding the lock file `crl-push.lock` in the data
directory (flock, released by the kernel when its holder exits; another takes it at its next
poll and pushes what it finds). The renderer checks what it is given (auth.crl_update); a
push is idempotent, so gateways on several machines each pushing is harmless.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import logging
import os
import ssl
import threading
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from auth.ca_store import CaStore
from mapserver.errors import CityGridError
from mapserver.settings import Settings

POLL_SECONDS = 5.0
LOCK_FILE = "crl-push.lock"  # in the data directory: its holder pushes for this machine
TIMEOUT = 30.0

log = logging.getLogger("citygrid.crl_push")


class PushFailed(CityGridError):
    """The renderer could not be reached or could not take the CRL."""

    status = 503
    code = "unavailable"


class PushRefused(CityGridError):
    """The renderer refused the CRL (older, foreign, not current): pushing again won't help."""

    status = 409
    code = "crl_refused"


class Pushed(NamedTuple):
    number: int
    installed: bool  # False: the renderer held this CRL already


def _context(settings: Settings) -> ssl.SSLContext:
    pki = settings.pki_dir
    cert = Path(settings.renderer_client_cert or pki / "service" / "gateway.crt")
    key = Path(settings.renderer_client_key or pki / "service" / "gateway.key")
    ca = pki / "ca.crt"
    for path in (cert, key, ca):
        if not path.is_file():
            raise PushFailed(f"two zones: {path.name} is missing (see README)")
    context = ssl.create_default_context(cafile=str(ca))
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise PushFailed(f"the service certificate cannot be used: {exc}") from None
    return context


def push(settings: Settings, data: bytes | None = None) -> Pushed:
    """PUT the gateway's current CRL (or `data`) to the renderer at `renderer_url`."""
    parts = urlsplit(settings.renderer_url)
    if parts.scheme != "https" or not parts.hostname:
        raise PushFailed("renderer_url must be https://HOST:PORT")
    if data is None:
        try:
            data = CaStore(settings.pki_dir).crl_path.read_bytes()
        except OSError:
            raise PushFailed("no CRL published yet: run `citygrid pki crl`") from None
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=_context(settings), timeout=TIMEOUT
    )
    try:
        conn.request("PUT", "/crl", body=data, headers={"Content-Type": "application/pkix-crl"})
        response = conn.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise PushFailed(f"the renderer cannot be reached: {exc}") from None
    finally:
        conn.close()
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    if status == 200:
        return Pushed(int(doc.get("number", -1)), bool(doc.get("installed")))
    message = str(doc.get("message") or f"HTTP {status}")
    if status in (400, 409):
        raise PushRefused(f"the renderer refused the CRL: {message}")
    raise PushFailed(f"the renderer did not take the CRL: {message}")


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        s = os.stat(path)
    except FileNotFoundError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns)


class Watcher:
    """Pushes the CRL file to the renderer whenever it changed (and once at start)."""

    def __init__(self, settings: Settings, poll: float = POLL_SECONDS):
        self.settings = settings
        self.poll = poll
        self.path = CaStore(settings.pki_dir).crl_path
        self.pushed: tuple[int, int, int] | None = None  # the file's stat when last delivered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-push", daemon=True)
        self._held: int | None = None  # the lock file's descriptor while this one pushes
        self._holding = threading.Lock()  # `_held` taken or given up by one thread at a time

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        with self._holding:
            if self._held is not None:
                os.close(self._held)  # closing the description releases the lock
                self._held = None

    def leading(self) -> bool:
        """Whether this watcher pushes for the install's processes on this machine: it holds
        the lock file, or takes it now that its holder is gone (never waits for it). A
        stopped watcher leads nothing. Safe from any thread: its own, and a caller asking
        while it runs (two attempts at once would each open the file, and the second's flock
        would fail against the first's)."""
        with self._holding:
            return self._take()

    def _take(self) -> bool:
        if self._stop.is_set():
            return False
        if self._held is not None:
            return True
        try:
            fd = os.open(self.settings.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # a CRL pushed twice is harmless; one not pushed is not
            log.warning("CRL push lock unusable (pushing anyway): %s", exc.strerror)
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held = fd
        return True

    def once(self) -> None:
        if not self.leading():
            return
        seen = _stat(self.path)
        if seen is None or seen == self.pushed:
            return
        try:
            done = push(self.settings)
        except PushRefused as exc:  # the renderer holds a newer one: nothing to retry
            log.warning("%s", exc.message)
        except CityGridError as exc:
            log.warning("CRL not pushed yet (retrying): %s", exc.message)
            return
        else:
            if done.installed:
                log.warning("CRL %d pushed to the renderer", done.number)
        self.pushed = seen

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.once()
            except Exception:  # noqa: BLE001 - the watcher outlives any one failure
                log.exception("CRL push failed")
            self._stop.wait(self.poll)


_watcher: Watcher | None = None
_lock = threading.Lock()


def watch(settings: Settings) -> Watcher:
    """This process's watcher, started once (a gateway of two zones, from create_app)."""
    global _watcher
    with _lock:
        if _watcher is None or _watcher.settings != settings:
            if _watcher is not None:
                _watcher.stop()
            _watcher = Watcher(settings)
            _watcher.start()
        return _watcher


def stop_watching() -> None:
    """Stop this process's watcher, if one runs: an app made in a process that outlives it
    (an embedding program, a test) stops its pushes with the app."""
    global _watcher
    with _lock:
        if _watcher is not None:
            _watcher.stop()
            _watcher = None
