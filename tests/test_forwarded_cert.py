"""auth.gateway reads nginx's forwarded certificate ($ssl_client_escaped_cert): the DER of a
good one, the same on every request that repeats it (remembered, not parsed again), and a
refusal as `malformed` for anything else, however often it is sent."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from auth.gateway import _der_of_pem, der_from_header
from auth.identity import Unauthenticated


def _certificate(name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _escaped(cert: x509.Certificate) -> str:
    return quote(cert.public_bytes(serialization.Encoding.PEM).decode(), safe="")


def test_the_der_of_each_forwarded_certificate_is_its_own() -> None:
    first, second = _certificate("forwarded-a"), _certificate("forwarded-b")
    hits = _der_of_pem.cache_info().hits
    assert der_from_header(_escaped(first)) == first.public_bytes(serialization.Encoding.DER)
    assert der_from_header(_escaped(first)) == first.public_bytes(serialization.Encoding.DER)
    assert _der_of_pem.cache_info().hits == hits + 1  # the repeat was not parsed again
    assert der_from_header(_escaped(second)) == second.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        quote("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        "%E2%9C%93",
    ],
)
def test_anything_but_a_certificate_is_malformed_every_time(value: str) -> None:
    for _ in range(2):
        with pytest.raises(Unauthenticated) as refused:
            der_from_header(value)
        assert refused.value.reason == "malformed"
