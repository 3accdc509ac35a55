"""The device's own signing key: made on the device, kept 0600 in its directory, and
certified by CityGrid's CA through the enrolment every signing key goes through (POST
/auth/signing/enrol with a one-time code from an administrator and a proof of possession,
over the device's own TLS connection and token). The private key never leaves the device;
reports and check results are signed with it."""

from __future__ import annotations

import base64
import json
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import enrol, pki
from mapserver.device_client import config
from mapserver.device_client.link import Link
from mapserver.errors import InvalidInput


class Signer(NamedTuple):
    key: ec.EllipticCurvePrivateKey
    thumbprint: str
    certificate_pem: str


def load(paths: config.Paths) -> Signer:
    """The enrolled signing key and certificate (refused if the key is open to others)."""
    if not paths.signing_crt.exists():
        raise InvalidInput("no signing certificate yet: citygrid device enrol --code CODE")
    key = serialization.load_pem_private_key(config.private_bytes(paths.signing_key), None)
    cert = x509.load_pem_x509_certificate(paths.signing_crt.read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise InvalidInput("the signing key does not belong to the signing certificate")
    return Signer(key, pki.thumbprint(cert), pki.pem(cert).decode("ascii"))


def _account(paths: config.Paths) -> str:
    cert = x509.load_pem_x509_certificate(paths.device_crt.read_bytes())
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not names:
        raise InvalidInput("the device certificate names no account")
    return str(names[0].value)


def enrol_key(paths: config.Paths, link: Link, code: str) -> str:
    """Make the key (once; kept across a failed attempt), prove it and store the
    certificate CityGrid issues for it; the certificate's serial."""
    if not paths.signing_key.exists():
        made = ec.generate_private_key(ec.SECP256R1())
        pem = made.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        config.write_private(paths.signing_key, pem)
    key = serialization.load_pem_private_key(config.private_bytes(paths.signing_key), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    spki = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    answer = link.call("POST", "/auth/nonce")
    if answer.status != 200:
        raise InvalidInput(f"no nonce: {answer.error()[1] or answer.status}")
    nonce = str(answer.json()["nonce"])
    account = _account(paths)
    proof = key.sign(enrol.proof_bytes(account, nonce, spki), ec.ECDSA(hashes.SHA256()))
    body = {
        "public_key": spki,
        "nonce": nonce,
        "proof": base64.b64encode(proof).decode(),
        "code": code,
    }
    answer = link.call(
        "POST",
        "/auth/signing/enrol",
        {"Content-Type": "application/json"},
        json.dumps(body).encode(),
    )
    if answer.status != 201:
        raise InvalidInput(f"enrolment refused: {answer.error()[1] or answer.status}")
    doc = answer.json()
    cert = x509.load_pem_x509_certificate(str(doc["certificate"]).encode("ascii"))
    if cert.public_key() != key.public_key():
        raise InvalidInput("the server certified another key")
    paths.signing_crt.write_bytes(pki.pem(cert))
    return str(doc["serial"])
