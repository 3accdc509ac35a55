"""Enrolling a browser's signing key: the web client makes a non-extractable WebCrypto
P-256 key, proves it holds it by signing a server nonce over the mTLS session, and
CityGrid's CA issues a signing certificate for that key to the authenticated account.

A stolen TLS key alone is not enough: enrolment also spends a one-time code that an
administrator issued out of band (`citygrid pki enrol-code ACCOUNT`). Only the code's hash
is stored; it expires and works once. The web side checks the proof (`parse`); the signer
process checks it again, spends the nonce and the code, and issues (`enrol`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from typing import Any, NamedTuple

import psycopg
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import accounts, certs, pki
from auth.actions import use_nonce
from auth.policy import Forbidden
from auth.signed_action import SignatureRefused, _der
from mapserver import text_limits
from mapserver.errors import InvalidInput

PURPOSE = "citygrid-signing-enrolment"
CODE_TTL = dt.timedelta(hours=24)
MAX_CODE_TTL = dt.timedelta(days=14)
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud or typed


class EnrolmentRefused(Forbidden):
    code = "enrolment_refused"


class Proof(NamedTuple):
    """An enrolment request whose proof of possession verified for `account`."""

    account: str
    public_key: str  # base64 DER SubjectPublicKeyInfo, P-256
    nonce: str
    proof: str  # base64 ECDSA signature (raw r||s or DER) over proof_bytes
    code: str


def proof_bytes(account: str, nonce: str, public_key_b64: str) -> bytes:
    """What the browser signs to prove possession of the key."""
    return rfc8785.dumps(
        {"account": account, "nonce": nonce, "public_key": public_key_b64, "purpose": PURPOSE}
    )


def new_code() -> str:
    """24 characters from a 32-letter alphabet (120 bits), in groups of four."""
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    return "-".join(raw[i : i + 4] for i in range(0, 24, 4))


def code_hash(code: str) -> str:
    normal = "".join(c for c in code.upper() if c.isalnum())
    return hashlib.sha256(normal.encode("ascii", "replace")).hexdigest()


def issue_code(conn: psycopg.Connection, account_name: str, ttl: dt.timedelta = CODE_TTL) -> str:
    """A fresh enrolment code for an active account; only its hash is stored."""
    if not dt.timedelta(minutes=1) <= ttl <= MAX_CODE_TTL:
        raise InvalidInput("an enrolment code lives between 1 minute and 14 days")
    account = accounts.get(conn, account_name)
    if not account.active:
        raise InvalidInput(f"account {account_name!r} is disabled")
    code = new_code()
    conn.execute(
        "INSERT INTO enrolment_code (account_id, code_sha256, expires_at)"
        " VALUES (%s, %s, now() + %s)",
        (account.id, code_hash(code), ttl),
    )
    return code


def spend_code(conn: psycopg.Connection, account_id: int, code: str) -> int:
    """Mark the account's unexpired, unused code as used; refuse anything else."""
    row = conn.execute(
        "UPDATE enrolment_code SET used_at = now() WHERE account_id = %s AND code_sha256 = %s"
        " AND used_at IS NULL AND expires_at > now() RETURNING id",
        (account_id, code_hash(code)),
    ).fetchone()
    if row is None:
        raise EnrolmentRefused("enrolment code unknown, expired or already used")
    return int(row[0])


def _public_key(spki_b64: str) -> ec.EllipticCurvePublicKey:
    try:
        public = serialization.load_der_public_key(base64.b64decode(spki_b64, validate=True))
    except (ValueError, UnsupportedAlgorithm):  # not SPKI, or a key of an unknown algorithm
        raise SignatureRefused("public_key must be base64 SPKI") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise SignatureRefused("signing keys are ECDSA P-256")
    return public


def verify(p: Proof) -> ec.EllipticCurvePublicKey:
    """The enrolled public key, once the proof of possession verifies."""
    public = _public_key(p.public_key)
    try:
        proof = base64.b64decode(p.proof, validate=True)
    except ValueError:
        raise SignatureRefused("proof must be base64") from None
    try:
        public.verify(
            _der(proof), proof_bytes(p.account, p.nonce, p.public_key), ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError):
        raise SignatureRefused("proof of possession does not verify") from None
    return public


def parse(account: str, body: Any) -> Proof:
    """The web side's check of an enrolment request from `account`."""
    if not isinstance(body, dict):
        raise SignatureRefused("send {public_key, nonce, proof, code}")
    fields = [body.get(k) for k in ("public_key", "nonce", "proof")]
    if not all(isinstance(v, str) and v for v in fields):
        raise SignatureRefused("public_key, nonce and proof are required")
    code = body.get("code")
    if not isinstance(code, str) or not code.strip() or len(code) > 64:
        raise EnrolmentRefused("an enrolment code from an administrator is required")
    text_limits.Limit("enrolment code", 64).check(code.strip())
    p = Proof(account, str(fields[0]), str(fields[1]), str(fields[2]), code.strip())
    verify(p)
    return p


def enrol(
    conn: psycopg.Connection, p: Proof, ca_key: Any, ca_cert: x509.Certificate
) -> x509.Certificate:
    """The signer's side, in one transaction: proof, nonce, code, then the certificate."""
    public = verify(p)
    account = accounts.get(conn, p.account)
    if not account.active:
        raise EnrolmentRefused(f"account {p.account!r} is disabled")
    use_nonce(conn, p.account, p.nonce)
    code_id = spend_code(conn, account.id, p.code)
    cert = pki.issue(ca_key, ca_cert, public, pki.Kind.SIGNING, p.account)
    certs.register(conn, cert, pki.Kind.SIGNING, account.id)
    conn.execute(
        "UPDATE enrolment_code SET certificate = %s WHERE id = %s",
        (certs.serial_hex(cert.serial_number), code_id),
    )
    return cert
