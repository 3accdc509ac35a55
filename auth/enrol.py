"""Enrolling a browser's signing key: the web client makes a non-extractable WebCrypto
P-256 key, proves it holds it by signing a server nonce over the mTLS session, and
CityGrid's CA issues a signing certificate for that key to the authenticated account."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import accounts, certs, pki
from auth.actions import use_nonce
from auth.ca_store import CaStore
from auth.identity import Identity
from auth.signed_action import SignatureRefused, _der

PURPOSE = "citygrid-signing-enrolment"


def proof_bytes(account: str, nonce: str, public_key_b64: str) -> bytes:
    """What the browser signs to prove possession of the key."""
    return rfc8785.dumps(
        {"account": account, "nonce": nonce, "public_key": public_key_b64, "purpose": PURPOSE}
    )


def enrol(
    conn: psycopg.Connection, who: Identity, body: Any, store: CaStore, secret: bytes
) -> x509.Certificate:
    if not isinstance(body, dict):
        raise SignatureRefused("send {public_key, nonce, proof}")
    spki_b64, nonce, proof_b64 = body.get("public_key"), body.get("nonce"), body.get("proof")
    if not all(isinstance(v, str) and v for v in (spki_b64, nonce, proof_b64)):
        raise SignatureRefused("public_key, nonce and proof are required")
    spki_b64, nonce, proof_b64 = str(spki_b64), str(nonce), str(proof_b64)
    try:
        public = serialization.load_der_public_key(base64.b64decode(spki_b64, validate=True))
        proof = base64.b64decode(proof_b64, validate=True)
    except ValueError:
        raise SignatureRefused("public_key must be base64 SPKI and proof base64") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise SignatureRefused("signing keys are ECDSA P-256")
    try:
        public.verify(
            _der(proof), proof_bytes(who.account, nonce, spki_b64), ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, ValueError):
        raise SignatureRefused("proof of possession does not verify") from None
    use_nonce(conn, who.account, nonce)
    account = accounts.get(conn, who.account)
    ca_key = store.key(secret)
    cert = pki.issue(ca_key, store.certificate(), public, pki.Kind.SIGNING, who.account)
    certs.register(conn, cert, pki.Kind.SIGNING, account.id)
    return cert
