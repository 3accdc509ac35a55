"""From a client certificate to a CityGrid identity: verified again in the app, then mapped
to an active account with its roles.

TLS already checked the chain and the CRL during the handshake; the app checks again
(chain, validity, clientAuth, revocation in the register) so that a misconfigured front
can never let a certificate through on its own say-so.
"""

from __future__ import annotations

import datetime as dt
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


class Authenticator:
    """Certificate → Identity, with the register's answer cached for a few seconds.

    The cache keeps the tile path to one dictionary lookup; revocation still takes effect
    at once in the TLS handshake (CRL), and here within `ttl` seconds.
    """

    def __init__(
        self,
        ca: x509.Certificate,
        lookup_holder: Callable[[str], Holder | None],
        ttl: float = 5.0,
    ):
        self.ca = ca
        self.lookup_holder = lookup_holder
        self.ttl = ttl
        self._cache: dict[bytes, tuple[float, Identity | Unauthenticated]] = {}
        self._lock = threading.Lock()

    def identify(self, der: bytes | None) -> Identity:
        if der:
            with self._lock:
                hit = self._cache.get(der)
            if hit and hit[0] > time.monotonic():
                if isinstance(hit[1], Unauthenticated):
                    raise hit[1]
                return hit[1]
        try:
            result: Identity | Unauthenticated = self._identify(der)
        except Unauthenticated as exc:
            result = exc
        if der:
            with self._lock:
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
