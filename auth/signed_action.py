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
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from audit import logged as logged_mod
from audit.cosignature import Witness
from audit.logged import Logged
from auth import pki
from mapserver.errors import CityGridError, InvalidInput

CLOCK_SKEW = dt.timedelta(minutes=5)
FORMAT = "citygrid-signed-action/2"
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
    except (ValueError, UnicodeEncodeError, x509.InvalidVersion):
        raise SignatureRefused("certificate is not a PEM certificate") from None
    return data, signature, cert


def check(
    data: bytes,
    signature: bytes,
    cert: x509.Certificate,
    ca: x509.Certificate,
    now: dt.datetime,
    revoked: bool,
    clock: str = "the server's time",
) -> Verified:
    """Everything that can be checked without state: signature, chain and validity at
    `now` (the server's time online, the log's time offline; never the time the signer
    wrote), key usage, the payload's form and its signer field."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise SignatureRefused("payload is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != set(FIELDS):
        raise SignatureRefused(f"payload must have exactly {', '.join(FIELDS)}")
    try:
        canonical = rfc8785.dumps(doc)
    except rfc8785.CanonicalizationError:  # a number out of its range, a lone surrogate
        raise SignatureRefused("payload has no canonical (RFC 8785) form") from None
    if canonical != data:
        raise SignatureRefused("payload is not in canonical (RFC 8785) form")
    if _holds_nul(doc):  # no text column or jsonb value can store one
        raise InvalidInput("a signed action must not hold a NUL control character")
    try:
        when = dt.datetime.strptime(str(doc["time"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SignatureRefused("payload time must be YYYY-MM-DDThh:mm:ssZ") from None
    if abs(now - when) > CLOCK_SKEW:
        raise SignatureRefused(f"payload time is too far from {clock}")
    try:
        public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):  # an altered key: parsed lazily, refused here
        raise SignatureRefused("the signing certificate's key is unreadable") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SignatureRefused("signing certificates hold P-256 keys")
    try:
        public.verify(_der(signature), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureRefused("signature does not verify") from None
    try:
        PolicyBuilder().store(Store([ca])).time(now).build_client_verifier().verify(cert, [])
    except (VerificationError, ValueError):
        raise SignatureRefused("signing certificate is not valid from CityGrid's CA") from None
    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if (
        usage is None
        or not (usage.digital_signature and usage.content_commitment)
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


def _holds_nul(value: Any) -> bool:
    """Whether a NUL is in any text of a parsed JSON value, its objects' names included."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


class Trust(NamedTuple):
    """What an offline verifier pins, taken from the security office, never from a bundle:
    CityGrid's CA, the audit log's checkpoint key, and the witnesses it trusts."""

    ca: x509.Certificate
    log_key: Ed25519PublicKey
    witnesses: list[Witness] = []
    require_witness: bool = False
    # With a witness's cosignature: the entry's time may lie at most this far before the
    # moment a witness first saw it (checkpoint interval + witness interval + slack), so a
    # server under an attacker's control cannot back-date an entry further than that.
    max_witness_delay: dt.timedelta | None = None


class Evidence(NamedTuple):
    action: Verified
    logged: Logged  # the log's entry for the act: its time is the act's time
    crl_number: int  # of the CRL current at that time
    revoked_at: dt.datetime | None  # a revocation after that time, which leaves it valid


def bundle(
    data: bytes, signature: bytes, cert_pem: str, crls: list[str], log: dict[str, Any]
) -> dict[str, Any]:
    """The offline bundle: the signed act, its audit entry with inclusion proof and signed
    checkpoint (`audit.logged.evidence`), and the CRLs to judge it by."""
    return {
        "format": FORMAT,
        "payload": base64.b64encode(data).decode(),
        "signature": base64.b64encode(signature).decode(),
        "certificate": cert_pem,
        "crls": crls,
        "log": log,
    }


def logged_entry(log: Any, trust: Trust) -> Logged:
    """An entry shown to be in the pinned log (`audit.logged.evidence`), at the log's time,
    with the witnesses `trust` asks for; raises SignatureRefused naming what fails."""
    try:
        logged = logged_mod.verify(log, trust.log_key, trust.witnesses)
    except logged_mod.NotLogged as exc:
        raise SignatureRefused(f"audit evidence: {exc}") from None
    if trust.require_witness and not logged.cosigned:
        raise SignatureRefused("audit evidence: the checkpoint is not cosigned by a pinned witness")
    seen, allowed = logged.witnessed_by, trust.max_witness_delay
    if allowed is not None and seen is not None and seen - logged.at > allowed:
        raise SignatureRefused(
            f"audit evidence: the entry claims {_iso(logged.at)}, "
            f"{int((seen - logged.at).total_seconds())} s before a witness first saw it "
            f"(at most {int(allowed.total_seconds())} s allowed): back-dated"
        )
    return logged


def verify_bundle(doc: Any, trust: Trust) -> Evidence:
    """Offline: nothing but the bundle and what `trust` pins. The time of the act is the
    log's (its entry, under a checkpoint signed by the pinned key); the certificate is
    judged at that time by a CA-signed CRL current then. A certificate revoked at R makes
    every act logged after R worthless, and none logged before. A CRL states R to the
    second, so an act logged within that second counts as after it (fail closed)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SignatureRefused(f"not a CityGrid signed-action bundle ({FORMAT})")
    data, signature, cert = parse_envelope(doc)
    if doc.get("log") is None and isinstance(doc.get("pending"), str):
        raise SignatureRefused(f"exported before the log's evidence was complete: {doc['pending']}")
    logged = logged_entry(doc.get("log"), trust)
    at = logged.at
    detail = logged.entry.get("detail")
    if (
        not isinstance(detail, dict)
        or detail.get("signature_sha256") != hashlib.sha256(signature).hexdigest()
    ):
        raise SignatureRefused("audit evidence: the entry does not name this signature")
    if logged.entry.get("outcome") != "ok":
        raise SignatureRefused("audit evidence: the log recorded this act as not done")
    number, revoked_at = _revocation(doc.get("crls"), cert, trust.ca, at)
    revoked = revoked_at is not None and revoked_at <= at
    try:
        verified = check(data, signature, cert, trust.ca, at, False, "the log's time")
    except SignatureRefused as exc:
        raise SignatureRefused(f"{exc.message} (at the log's time {_iso(at)})") from None
    if revoked:
        assert revoked_at is not None
        raise SignatureRefused(
            f"signing certificate was revoked at {_iso(revoked_at)}, before the act was "
            f"logged at {_iso(at)}"
        )
    if logged.entry.get("action") != verified.action:
        raise SignatureRefused("audit evidence: the entry is of another action")
    return Evidence(verified, logged, number, revoked_at)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _revocation(
    pems: Any, cert: x509.Certificate, ca: x509.Certificate, at: dt.datetime
) -> tuple[int, dt.datetime | None]:
    """The number of a CA-signed CRL current at `at` (thisUpdate <= at <= nextUpdate), and
    the earliest revocation of `cert` that any bundled CRL lists; refuses without one."""
    if not isinstance(pems, list) or not pems:
        raise SignatureRefused(
            f"no CRL in the bundle: revocation at {_iso(at)} cannot be judged; refused"
        )
    current: int | None = None
    revoked: dt.datetime | None = None
    for pem in pems:
        try:
            crl = x509.load_pem_x509_crl(str(pem).encode("ascii"))
            signed = crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        except (ValueError, UnicodeEncodeError, x509.InvalidVersion, UnsupportedAlgorithm):
            raise SignatureRefused("a bundled CRL is unreadable") from None
        if not signed:
            raise SignatureRefused("a bundled CRL is not signed by the CA")
        nxt = crl.next_update_utc
        if crl.last_update_utc <= at and nxt is not None and at <= nxt:
            current = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        listed = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if listed is not None and (revoked is None or listed.revocation_date_utc < revoked):
            revoked = listed.revocation_date_utc
    if current is None:
        raise SignatureRefused(
            f"no bundled CRL was current at the log's time {_iso(at)} "
            "(thisUpdate <= time <= nextUpdate); revocation cannot be judged; refused"
        )
    return int(current), revoked
