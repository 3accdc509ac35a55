"""From a client certificate to a CityGrid identity: verified again in the app, then mapped
to an active account with its roles.

TLS already checked the chain and the CRL during the handshake; the app checks again
(chain, validity, clientAuth, revocation in the register) so that a misconfigured front
can never let a certificate through on its own say-so.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import psycopg
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from auth import pki
from mapserver.errors import CityGridError


class Unauthenticated(CityGridError):
    """No usable client certificate; `reason` is a short machine-readable cause."""

    status = 401
    code = "unauthenticated"

    def __init__(self, reason: str, message: str | None = None, **detail: str):
        super().__init__(message or f"client certificate refused: {reason}")
        self.reason = reason
        self.detail = detail  # for the audit entry only (e.g. which token check failed)


class Identity(NamedTuple):
    account: str
    roles: tuple[str, ...]
    streets: tuple[str, ...]
    cert_serial: str
    cert_sha256: str
    kind: str


def parse_der(der: bytes | None) -> x509.Certificate:
    if not der:
        raise Unauthenticated("no_certificate", "a client certificate is required")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise Unauthenticated("malformed") from None


def verify_chain(cert: x509.Certificate, ca: x509.Certificate, when: dt.datetime) -> None:
    """Chain to CityGrid's CA, valid now, and made for TLS client authentication."""
    verifier = PolicyBuilder().store(Store([ca])).time(when).build_client_verifier()
    try:
        verifier.verify(cert, [])
    except VerificationError as exc:
        text = str(exc)
        if "not valid at validation time" in text:
            raise Unauthenticated("expired") from None
        if "EKU" in text:
            raise Unauthenticated("not_client_certificate") from None
        raise Unauthenticated("untrusted_issuer") from None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise Unauthenticated("not_client_certificate") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise Unauthenticated("not_client_certificate")


class Holder(NamedTuple):
    account: str
    active: bool
    revoked: bool
    kind: str
    roles: tuple[str, ...]
    streets: tuple[str, ...]


def lookup(conn: psycopg.Connection, sha256: str) -> Holder | None:
    """The register's view of a certificate: its account, roles, streets, revocation."""
    row = conn.execute(
        """SELECT a.name, a.active, c.revoked_at IS NOT NULL, c.kind,
                  coalesce(array_agg(DISTINCT r.role) FILTER (WHERE r.role IS NOT NULL), '{}'),
                  coalesce(array_agg(DISTINCT o.street_code)
                           FILTER (WHERE o.street_code IS NOT NULL), '{}')
           FROM certificate c
           JOIN account a ON a.id = c.account_id
           LEFT JOIN account_role r ON r.account_id = a.id
           LEFT JOIN organisation o ON o.code = a.org_code
           WHERE c.sha256 = %s
           GROUP BY a.name, a.active, c.revoked_at, c.kind""",
        (sha256,),
    ).fetchone()
    if row is None:
        return None
    return Holder(row[0], row[1], row[2], row[3], tuple(sorted(row[4])), tuple(sorted(row[5])))


CHANNEL = "citygrid_identity"  # notified by migration 0009's triggers on every change


class ChangeListener:
    """LISTENs on its own connection, in a thread of this process, for changes to accounts,
    roles, certificates and organisations, and calls `on_change` for each.

    `live` is true only while the LISTEN is in place and nothing can have been missed; when
    the connection is lost it turns false at once (and `on_change` is called), and after a
    reconnect `on_change` is called again before it turns true: changes made while nobody
    listened are never trusted to a cache.
    """

    def __init__(self, conninfo: str, on_change: Callable[[], None], retry: float = 1.0):
        self.conninfo = conninfo
        self.on_change = on_change
        self.retry = retry
        self._live = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def start(self) -> None:
        """Start the thread in this process (again after a fork: threads do not survive it)."""
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            self._live.clear()
            self._stop.clear()
            self._pid = pid
            threading.Thread(target=self._run, name="identity-listener", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def wait_live(self, timeout: float) -> bool:
        return self._live.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    application_name="citygrid-identity-listener",
                    connect_timeout=5,
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=2,
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.on_change()  # whatever changed while nobody listened
                    self._live.set()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=5.0):
                            self.on_change()
                        conn.execute("SELECT 1")  # a silent connection may be a dead one
            except psycopg.Error:
                pass
            finally:
                self._live.clear()
                self.on_change()
            self._stop.wait(self.retry)


class Authenticator:
    """Certificate → Identity, with the register's answer cached.

    The cache keeps the tile path to one dictionary lookup. It is used only while a
    `ChangeListener` is live, and every notified change empties it: a disabled account or
    revoked certificate is refused by the next request. Without a live listener (none given,
    or its connection lost) every request asks the register. `ttl` bounds an entry's age.
    """

    def __init__(
        self,
        ca: x509.Certificate,
        lookup_holder: Callable[[str], Holder | None],
        ttl: float = 5.0,
        listen: str | None = None,
    ):
        self.ca = ca
        self.lookup_holder = lookup_holder
        self.ttl = ttl
        self._cache: dict[bytes, tuple[float, Identity | Unauthenticated]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self.listener = ChangeListener(listen, self.invalidate) if listen else None

    def invalidate(self) -> None:
        """Forget every cached answer (the register changed, or may have)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def _caching(self) -> bool:
        if self.listener is None:
            return False
        self.listener.start()
        return self.listener.live

    def identify(self, der: bytes | None) -> Identity:
        caching = bool(der) and self._caching()
        with self._lock:
            generation = self._generation
            hit = self._cache.get(der) if caching and der else None
        if hit and hit[0] > time.monotonic():
            if isinstance(hit[1], Unauthenticated):
                raise hit[1]
            return hit[1]
        try:
            result: Identity | Unauthenticated = self._identify(der)
        except Unauthenticated as exc:
            result = exc
        if caching and der:
            with self._lock:
                # Keep the answer only if no change was notified while we asked the register.
                if generation == self._generation and self._caching():
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[der] = (time.monotonic() + self.ttl, result)
        if isinstance(result, Unauthenticated):
            raise result
        return result

    def _identify(self, der: bytes | None) -> Identity:
        cert = parse_der(der)
        verify_chain(cert, self.ca, pki.now())
        sha256 = pki.thumbprint(cert)
        holder = self.lookup_holder(sha256)
        if holder is None:
            raise Unauthenticated("unknown_certificate")
        if holder.revoked:
            raise Unauthenticated("revoked")
        if not holder.active:
            raise Unauthenticated("account_disabled")
        if holder.kind not in ("person", "device"):
            raise Unauthenticated("not_client_certificate")
        if pki.account_of(cert) != holder.account:
            raise Unauthenticated("account_mismatch")
        return Identity(
            holder.account,
            holder.roles,
            holder.streets,
            format(cert.serial_number, "x"),
            sha256,
            holder.kind,
        )
