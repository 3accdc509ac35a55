"""The renderer's CRL: the one file (DATA_DIR/pki/crl.pem) that TLS and the app decide with,
replaced only by a CRL the gateway pushes (`PUT /crl`) that passes auth.crl_update.

Every request checks the presenting certificate against the CRL held now; a file replaced
by another worker of the renderer is read again on the next request (its stat changed),
so no reload is needed. The replacement is atomic (rename) and serialised across the
renderer's workers by a lock file, so the CRL number only grows. Fails closed: no CRL, a
CRL that does not verify, or one past its next update refuses every request (503) except
the push that brings a fresh one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509

from auth import pki
from auth.crl_update import CrlRefused, Held, current, parse, replaces, signed
from mapserver.errors import CityGridError, InvalidInput
from mapserver.files import atomic_write


class CrlUnusable(CityGridError):
    """The renderer holds no current CRL: it cannot tell a revoked certificate."""

    status = 503
    code = "crl_unusable"


class CrlNotNewer(CityGridError):
    status = 409
    code = "crl_not_newer"


class RendererCrl:
    def __init__(self, path: Path, ca: x509.Certificate):
        self.path = path
        self.ca = ca
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) read last
        self._held: Held | None = None
        self._problem = "no CRL yet: the gateway pushes one"

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            s = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (s.st_ino, s.st_size, s.st_mtime_ns)

    def held(self) -> Held | None:
        """The CRL on disk (read again when the file changed), None if unusable."""
        seen = self._stat()
        if seen != self._seen:
            with self._lock:
                if seen != self._seen:
                    self._load(seen)
        return self._held

    def _load(self, seen: tuple[int, int, int] | None) -> None:
        """Read the file; the new CRL is in place before the new stat, so a reader that
        sees the new stat without the lock never finds the old CRL or none."""
        held: Held | None = None
        if seen is None:
            self._problem = "no CRL yet: the gateway pushes one"
        else:
            try:
                held = signed(parse(self.path.read_bytes()), self.ca)
            except (OSError, CrlRefused) as exc:
                self._problem = f"the stored CRL is unusable ({exc})"
        self._held = held
        self._seen = seen

    def require_current(self, now: dt.datetime | None = None) -> Held:
        """The held CRL if it is current; CrlUnusable (503) naming the reason otherwise."""
        return self.current(self.held(), now)

    def current(self, held: Held | None, now: dt.datetime | None = None) -> Held:
        """`held` (what `held()` gave for this request) if it is current; else as above."""
        if held is None:
            raise CrlUnusable(self._problem)
        if not current(held, now or pki.now()):
            raise CrlUnusable(
                f"the renderer's CRL ran out at {held.next_update:%Y-%m-%d %H:%M:%S} UTC: "
                "refusing until the gateway pushes a fresh one"
            )
        return held

    def revoked(self, serial: int) -> bool:
        held = self.held()
        return held is not None and serial in held.revoked

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One installer at a time across the renderer's worker processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def install(self, data: bytes, now: dt.datetime | None = None) -> tuple[Held, bool]:
        """Store a pushed CRL if it replaces the held one; (the CRL now held, installed?).
        InvalidInput (400) or CrlNotNewer (409) leave the held CRL as it was."""
        when = now or pki.now()
        with self._exclusive():
            with self._lock:
                self._load(self._stat())  # under the lock file: what another worker stored
                old = self._held
            try:
                new = replaces(parse(data), self.ca, old, when)
            except CrlRefused as exc:
                error = CrlNotNewer if exc.code == "not_newer" else InvalidInput
                raise error(f"CRL refused: {exc}") from None
            if new is None:
                assert old is not None, "an unchanged CRL is the held one"
                return old, False
            atomic_write(self.path, new.pem, 0o644)
            with self._lock:
                self._held = new
                self._seen = self._stat()
        return new, True
