"""Signed actions: what a person signs, how it is checked, and the offline bundle.

The signed payload is the RFC 8785 canonical JSON of {action, resource, parameters, nonce,
time, signer}, where `signer` is the SHA-256 thumbprint of the signing certificate. The
signature is ECDSA P-256 / SHA-256 (DER, or the raw r‖s form WebCrypto produces). The
checks here are pure; nonces and the certificate register live at the edge.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any, NamedTuple

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from auth import pki
from mapserver.errors import CityGridError

CLOCK_SKEW = dt.timedelta(minutes=5)
FIELDS = ("action", "nonce", "parameters", "resource", "signer", "time")


class SignatureRefused(CityGridError):
    status = 400
    code = "signature_refused"


class Verified(NamedTuple):
    action: str
    resource: str
    parameters: dict[str, Any]
    nonce: str
    time: dt.datetime
    account: str
    certificate: x509.Certificate
    signature_sha256: str


def payload(
    action: str,
    resource: str,
    parameters: dict[str, Any],
    nonce: str,
    when: dt.datetime,
    signer_sha256: str,
) -> bytes:
    return rfc8785.dumps(
        {
            "action": action,
            "resource": resource,
            "parameters": parameters,
            "nonce": nonce,
            "time": when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "signer": signer_sha256,
        }
    )


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _der(signature: bytes) -> bytes:
    if len(signature) == 64:  # WebCrypto's IEEE P1363 r‖s
        return encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
    return signature


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureRefused(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise SignatureRefused(f"{what} is not valid base64") from None


def parse_envelope(body: Any) -> tuple[bytes, bytes, x509.Certificate]:
    """(payload bytes, signature, certificate) from a request body
    {"payload": b64, "signature": b64, "certificate": PEM}."""
    if not isinstance(body, dict):
        raise SignatureRefused("send {payload, signature, certificate}")
    data = _b64(body.get("payload"), "payload")
    signature = _b64(body.get("signature"), "signature")
    pem = body.get("certificate")
    try:
        cert = x509.load_pem_x509_certificate(str(pem).encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SignatureRefused("certificate is not a PEM certificate") from None
    return data, signature, cert


def check(
    data: bytes,
    signature: bytes,
    cert: x509.Certificate,
    ca: x509.Certificate,
    now: dt.datetime,
    revoked: bool,
) -> Verified:
    """Everything that can be checked without state: signature, chain and validity at
    signing time, key usage, the payload's form and its signer field."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise SignatureRefused("payload is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        raise SignatureRefused(f"payload must have exactly {', '.join(FIELDS)}")
    if rfc8785.dumps(doc) != data:
        raise SignatureRefused("payload is not in canonical (RFC 8785) form")
    try:
        when = dt.datetime.strptime(str(doc["time"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SignatureRefused("payload time must be YYYY-MM-DDThh:mm:ssZ") from None
    if abs(now - when) > CLOCK_SKEW:
        raise SignatureRefused("payload time is too far from the server's time")
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureRefused("signing certificates hold P-256 keys")
    try:
        public.verify(_der(signature), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureRefused("signature does not verify") from None
    try:
        PolicyBuilder().store(Store([ca])).time(when).build_client_verifier().verify(cert, [])
    except VerificationError:
        raise SignatureRefused("signing certificate is not valid from CityGrid's CA") from None
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if (
        not (usage.digital_signature and usage.content_commitment)
        or not ou
        or ou[0].value != "signing"
    ):
        raise SignatureRefused("not a signing certificate")
    if revoked:
        raise SignatureRefused("signing certificate is revoked")
    if doc["signer"] != pki.thumbprint(cert):
        raise SignatureRefused("payload names another signer")
    account = pki.account_of(cert)
    if not account:
        raise SignatureRefused("signing certificate names no account")
    if not isinstance(doc["parameters"], dict):
        raise SignatureRefused("parameters must be an object")
    return Verified(
        str(doc["action"]),
        str(doc["resource"]),
        doc["parameters"],
        str(doc["nonce"]),
        when,
        account,
        cert,
        hashlib.sha256(signature).hexdigest(),
    )


def bundle(data: bytes, signature: bytes, cert_pem: str, crl_pem: str | None) -> dict[str, Any]:
    return {
        "format": "citygrid-signed-action/1",
        "payload": base64.b64encode(data).decode(),
        "signature": base64.b64encode(signature).decode(),
        "certificate": cert_pem,
        "crl": crl_pem,
    }


def verify_bundle(doc: Any, ca: x509.Certificate) -> Verified:
    """Offline: nothing but the bundle and the CA certificate. A certificate that the
    bundled CRL revoked before the signing time makes the signature worthless."""
    if not isinstance(doc, dict) or doc.get("format") != "citygrid-signed-action/1":
        raise SignatureRefused("not a CityGrid signed-action bundle")
    data, signature, cert = parse_envelope(doc)
    try:
        signed_at = dt.datetime.strptime(json.loads(data)["time"], "%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, KeyError, TypeError):
        raise SignatureRefused("payload is unreadable") from None
    signed_at = signed_at.replace(tzinfo=dt.UTC)
    revoked = False
    if doc.get("crl"):
        try:
            crl = x509.load_pem_x509_crl(str(doc["crl"]).encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise SignatureRefused("the bundled CRL is unreadable") from None
        if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
            raise SignatureRefused("the bundled CRL is not signed by the CA")
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        revoked = entry is not None and entry.revocation_date_utc <= signed_at
    return check(data, signature, cert, ca, signed_at, revoked)
