"""CityGrid's certificate authority: pure X.509 building blocks over `cryptography` objects.

No files and no database here; `auth.ca_store` keeps the CA on disk and `auth.certs`
records what was issued. Keys are EC P-256 throughout.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORG = "CityGrid"
CA_DAYS = 3650
ACCOUNT_URI = "urn:citygrid:account:"
SERVICE_URI = "urn:citygrid:service:"  # never an account: the gateway maps it to none


class Kind(StrEnum):
    """What a certificate is for."""

    PERSON = "person"  # a person's browser: TLS client authentication
    DEVICE = "device"  # an inspector's handheld: TLS client authentication
    SERVER = "server"  # CityGrid's own TLS endpoint
    SIGNING = "signing"  # signs workflow actions (non-repudiation), never used for TLS
    SERVICE = "service"  # one of CityGrid's own services as a TLS client (gateway → renderer)


DEFAULT_DAYS = {
    Kind.PERSON: 365, Kind.DEVICE: 365, Kind.SERVER: 825, Kind.SIGNING: 730, Kind.SERVICE: 825,
}  # fmt: skip


class Revoked(NamedTuple):
    serial: int
    revoked_at: dt.datetime
    reason: x509.ReasonFlags


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: the identity the gateway and tokens key on."""
    return cert.fingerprint(hashes.SHA256()).hex()


def make_ca(
    key: ec.EllipticCurvePrivateKey, name: str, when: dt.datetime | None = None
) -> x509.Certificate:
    """A self-signed CA that may sign end-entity certificates and CRLs only."""
    when = when or now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - dt.timedelta(minutes=5))
        .not_valid_after(when + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(kind: Kind) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=kind is Kind.SIGNING,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _san(kind: Kind, name: str) -> x509.SubjectAlternativeName:
    if kind is Kind.SERVER:
        try:
            return x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(name))])
        except ValueError:
            return x509.SubjectAlternativeName([x509.DNSName(name)])
    if kind is Kind.SERVICE:
        return x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SERVICE_URI + name)])
    return x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ACCOUNT_URI + name)])


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    kind: Kind,
    name: str,
    days: int | None = None,
    when: dt.datetime | None = None,
) -> x509.Certificate:
    """An end-entity certificate for an account (person, device, signing) or a host (server).

    The account name is the subject CN and, as a URI SAN, what the gateway maps to an account.
    """
    when = when or now()
    days = days if days is not None else DEFAULT_DAYS[kind]
    if days <= 0:
        raise ValueError("days must be positive")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind.value),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(when - dt.timedelta(minutes=5))
        .not_valid_after(min(when + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(kind), critical=True)
        .add_extension(_san(kind, name), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if kind is Kind.SERVER:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    elif kind is Kind.SIGNING:
        usages = []
    else:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def build_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    revoked: Iterable[Revoked],
    number: int,
    valid_for: dt.timedelta = dt.timedelta(days=1),
    when: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A signed CRL listing `revoked`, valid from now until now + `valid_for` (next update)."""
    when = when or now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(when - dt.timedelta(minutes=1))
        .next_update(when + valid_for)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(entry.reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(item)
    return builder.sign(ca_key, hashes.SHA256())


def service_of(cert: x509.Certificate) -> str | None:
    """The service a service certificate was issued to (from its URI SAN), else None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(SERVICE_URI):
            return uri[len(SERVICE_URI) :]
    return None


def account_of(cert: x509.Certificate) -> str | None:
    """The account name a client or signing certificate was issued to (from its URI SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(ACCOUNT_URI):
            return uri[len(ACCOUNT_URI) :]
    return None


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
