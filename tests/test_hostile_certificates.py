"""Certificates, CRLs, CSRs and keys altered in their structure (an unknown X.509 version,
a key of an unknown algorithm) are refused as bad input: a 4xx JSON problem over HTTP and
one line from `verify-action`, never a 500 or a traceback. cryptography raises
`InvalidVersion` and `UnsupportedAlgorithm` for them, which are not ValueErrors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mapserver import db
from mapserver.cli import main
from mapserver.settings import Settings

from .app_client import Install
from .conftest import empty_database
from .test_action_evidence import Install as Evidence

EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # the OID id-ecPublicKey, DER content


def _altered(der: bytes, find: bytes, offset: int, value: int) -> bytes:
    at = der.index(find) + offset
    return der[:at] + bytes([value]) + der[at + 1 :]


def _pem(der: bytes, label: str) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


def _version_5(cert_pem: str) -> str:
    """The certificate with its version field saying 5 (X.509 knows 1 to 3)."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return _pem(_altered(der, bytes([0xA0, 3, 2, 1, 2]), 4, 5), "CERTIFICATE")


def _unknown_key(cert_pem: str) -> str:
    """The certificate with its key's algorithm an OID no library knows."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return _pem(_altered(der, EC_PUBLIC_KEY, 6, 9), "CERTIFICATE")


def _crl_version_5(crl_pem: str) -> str:
    der = x509.load_pem_x509_crl(crl_pem.encode()).public_bytes(serialization.Encoding.DER)
    return _pem(_altered(der, bytes([2, 1, 1]), 2, 5), "X509 CRL")


# ---------------------------------------------------------------- offline: verify-action


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Evidence, Any]]:
    var = tmp_path_factory.mktemp("hostile-evidence-var")
    settings = empty_database("citygrid_hostile_evidence", var)
    out = var / "keys"
    out.mkdir()
    try:
        install = Evidence(settings, out)
        for i in range(3):
            install.act(f"case hostile {i}")
        act = install.act("case hostile")
        install.checkpoint()
        yield install, install.bundle(act)
    finally:
        db.drop_database(settings)


def _verify(install: Evidence, doc: Any, tmp_path: Path) -> Any:
    bundle = tmp_path / "act.json"
    bundle.write_text(json.dumps(doc), "utf-8")
    pki_dir = install.settings.pki_dir
    (tmp_path / "log.pub").write_bytes(
        install.log_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    args = ["verify-action", str(bundle), "--ca", str(pki_dir / "ca.crt")]
    return CliRunner().invoke(main, [*args, "--log-key", str(tmp_path / "log.pub")])


def test_the_honest_bundle_verifies(evidence: tuple[Evidence, Any], tmp_path: Path) -> None:
    install, doc = evidence
    result = _verify(install, doc, tmp_path)
    assert result.exit_code == 0 and result.output.startswith("valid: case.record"), result.output


@pytest.mark.parametrize(
    ("what", "change", "said"),
    [
        ("certificate version", lambda d: d.update(certificate=_version_5(d["certificate"])), ""),
        ("certificate key", lambda d: d.update(certificate=_unknown_key(d["certificate"])), ""),
        ("CRL version", lambda d: d["crls"].__setitem__(0, _crl_version_5(d["crls"][0])), "CRL"),
    ],
)
def test_an_altered_bundle_is_one_line_invalid(
    evidence: tuple[Evidence, Any], tmp_path: Path, what: str, change: Any, said: str
) -> None:
    install, doc = evidence
    altered = json.loads(json.dumps(doc))
    change(altered)
    result = _verify(install, altered, tmp_path)
    assert isinstance(result.exception, SystemExit), (what, result.exception)
    assert result.exit_code == 1, (what, result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "INVALID" in lines[0] and said in lines[0], (what, result.output)


# ---------------------------------------------------------------- online: 4xx, never 500


@pytest.fixture(scope="module")
def app(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    install = Install(
        demo_settings,
        tmp_path_factory.mktemp("hostile-pki-certs"),
        data_dir=tmp_path_factory.mktemp("hostile-pki-var"),
        rate_limit_api="*=100000/hour",
    )
    install.account("qs-admin", ["admin"])
    install.account("qs-viewer", ["viewer"], "street-001")
    try:
        yield install
    finally:
        install.close()


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert isinstance(body, dict) and body.get("error") and body.get("message"), body
    return body


def test_a_signing_certificate_of_an_unknown_version_is_400(app: Install) -> None:
    envelope = app.envelope("qs-admin", "account.add", "accounts", {"name": "qs-x", "roles": []})
    for forged in (_version_5(envelope["certificate"]), _unknown_key(envelope["certificate"])):
        response = app.client("qs-admin").post(
            "/admin/accounts", json={**envelope, "certificate": forged}
        )
        assert _problem(response, 400)["error"] == "signature_refused"


def test_an_enrolment_key_of_an_unknown_algorithm_is_400(app: Install) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unknown = base64.b64encode(_altered(spki, EC_PUBLIC_KEY, 6, 9)).decode()
    body = {"public_key": unknown, "nonce": "n", "proof": "AAAA", "code": "ABCD-EFGH"}
    response = app.client("qs-viewer").post("/auth/signing/enrol", json=body)
    assert _problem(response, 400)["error"] == "signature_refused"


def test_a_csr_of_an_unknown_version_or_key_algorithm_is_400(app: Install) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qs-viewer")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    der = csr.public_bytes(serialization.Encoding.DER)
    for forged in (_altered(der, bytes([2, 1, 0]), 2, 5), _altered(der, EC_PUBLIC_KEY, 6, 9)):
        response = app.client("qs-admin").post(
            "/maintenance/accounts/qs-viewer/certificates",
            json={"csr": _pem(forged, "CERTIFICATE REQUEST")},
        )
        assert _problem(response, 400)["error"] == "invalid"
