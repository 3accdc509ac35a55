"""Whether a CRL may replace the one a service holds: pure checks over a CRL, the CA and a
time, no I/O.

A renderer in the secure zone gets its CRLs pushed by the gateway (the renderer may not be
allowed to connect out). Whoever delivers it, a CRL is accepted only if CityGrid's CA
signed it, its CRL number grows (an older CRL would un-revoke certificates), and it is
current (issued, and not yet past its next update). An equal number with the same bytes is
the one already held: nothing to do.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization

SKEW = dt.timedelta(minutes=5)  # the publisher's clock may run a little ahead


class CrlRefused(ValueError):
    """A CRL that may not replace the current one; `code` names the failed check."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Held(NamedTuple):
    """A CRL that passed the checks, with what services decide on."""

    crl: x509.CertificateRevocationList
    number: int
    next_update: dt.datetime
    revoked: frozenset[int]  # serial numbers
    last_update: dt.datetime  # thisUpdate (read once: every request asks `current`)

    @property
    def pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)


def parse(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER bytes; CrlRefused("malformed") otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CrlRefused("malformed", "not a CRL (PEM or DER)") from None


def signed(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> Held:
    """`crl` if CityGrid's CA signed it and it has a number and a next update."""
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise CrlRefused("foreign", "the CRL is not signed by CityGrid's CA")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise CrlRefused("malformed", "the CRL has no CRL number") from None
    if crl.next_update_utc is None:
        raise CrlRefused("malformed", "the CRL has no next update")
    revoked = frozenset(r.serial_number for r in crl)
    return Held(crl, int(number), crl.next_update_utc, revoked, crl.last_update_utc)


def current(held: Held, now: dt.datetime) -> bool:
    return held.last_update <= now + SKEW and now < held.next_update


def replaces(
    new: x509.CertificateRevocationList, ca: x509.Certificate, old: Held | None, now: dt.datetime
) -> Held | None:
    """The checked `new` CRL if it replaces `old`, None if it is the one `old` already is;
    CrlRefused naming the reason otherwise."""
    held = signed(new, ca)
    if held.crl.last_update_utc > now + SKEW:
        raise CrlRefused("not_current", "the CRL is not valid yet (this update in the future)")
    if held.next_update <= now:
        raise CrlRefused("not_current", "the CRL is past its next update")
    if old is not None:
        if held.number == old.number and held.pem == old.pem:
            return None
        if held.number <= old.number:
            raise CrlRefused(
                "not_newer", f"CRL number {held.number} is not above the current {old.number}"
            )
    return held
