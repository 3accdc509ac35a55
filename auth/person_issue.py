"""Issuing a person's TLS client certificate from a certificate signing request, on an
administrator's signed `pki.issue` (the browser's /manage, mapserver.maintenance).

The person makes the key pair on their own machine and hands over only the CSR; the
administrator signs `pki.issue` on `account NAME` naming the CSR's SHA-256; the web process
stores that signed action and asks the signer, which alone holds the CA key. The signer
trusts nothing the web process says: it re-reads the stored signed action, verifies its
signature and certificate chain itself, checks that an active administrator signed it for
this account and this CSR and that it was never used (`maintenance_signed`, migration
0026), checks the CSR's own signature and key, and only then issues.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import psycopg
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from auth import accounts, certs, pki
from auth.policy import Forbidden
from auth.signed_action import check
from mapserver.errors import InvalidInput

MAX_CSR = 8192
MAX_DAYS = 3650


def load_csr(pem: Any) -> x509.CertificateSigningRequest:
    """A PEM CSR signed by its own P-256 key; 400 otherwise."""
    if not isinstance(pem, str) or not pem.strip() or len(pem) > MAX_CSR:
        raise InvalidInput("csr must be a PEM certificate signing request")
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError, x509.InvalidVersion):
        raise InvalidInput("csr must be a PEM certificate signing request") from None
    try:  # the key and the signature are parsed lazily: an unknown algorithm shows here
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise InvalidInput("the CSR's key must be ECDSA P-256")
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise InvalidInput("the CSR's signature does not verify")
    return csr


def days_of(params: Mapping[str, Any]) -> int | None:
    """The validity the administrator signed (`days`; None: the default), checked: by the web
    process before the signed action is kept, and by the signer again."""
    days = params.get("days")
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int):
        raise InvalidInput("days must be a whole number")
    if not 0 < days <= MAX_DAYS:
        raise InvalidInput(f"days must be between 1 and {MAX_DAYS}")
    return days


def csr_sha256(csr: x509.CertificateSigningRequest) -> str:
    return hashlib.sha256(csr.public_bytes(Encoding.DER)).hexdigest()


def issue(
    conn: psycopg.Connection,
    account: str,
    csr_pem: str,
    action_id: int,
    ca_key: Any,
    ca_cert: x509.Certificate,
) -> x509.Certificate:
    """The signer's side, in the caller's transaction: verify, then issue and register."""
    csr = load_csr(csr_pem)
    row = conn.execute(
        "SELECT s.payload, s.signature, s.certificate, c.revoked_at FROM signed_action s"
        " LEFT JOIN certificate c ON c.pem = s.certificate WHERE s.id = %s",
        (action_id,),
    ).fetchone()
    if row is None:
        raise Forbidden("no such signed action")
    data, signature, cert_pem, revoked_at = bytes(row[0]), bytes(row[1]), row[2], row[3]
    signer_cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
    verified = check(data, signature, signer_cert, ca_cert, pki.now(), revoked_at is not None)
    if verified.action != "pki.issue" or verified.resource != f"account {account}":
        raise Forbidden("the signed action is not pki.issue for this account")
    params = json.loads(data)["parameters"]
    if params.get("csr_sha256") != csr_sha256(csr) or params.get("kind") != "person":
        raise Forbidden("the signed action names another CSR")
    try:  # an active administrator's act, used once (the database decides)
        with conn.transaction():
            conn.execute(
                "SELECT maintenance_signed(%s, 'pki.issue', %s)", (action_id, f"account {account}")
            )
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UniqueViolation):
        raise Forbidden("the signed action is not an administrator's, or was used") from None
    holder = accounts.get(conn, account)
    if not holder.active:
        raise InvalidInput(f"account {account!r} is disabled")
    days = days_of(params)
    key = csr.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # load_csr made sure
    cert = pki.issue(ca_key, ca_cert, key, pki.Kind.PERSON, account, days)
    certs.register(conn, cert, pki.Kind.PERSON, holder.id)
    return cert
