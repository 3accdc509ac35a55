"""auth.crl_update: which CRL may replace the one a service holds (pure, real CRLs)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import crl_update, pki

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
CA = pki.make_ca(KEY, "CityGrid test CA", NOW - dt.timedelta(days=1))
DAY = dt.timedelta(days=1)


def _crl(number: int, when: dt.datetime = NOW, valid: dt.timedelta = DAY, key=KEY, ca=CA):  # type: ignore[no-untyped-def]
    return pki.build_crl(key, ca, [], number, valid, when)


def _code(new, old):  # type: ignore[no-untyped-def]
    with pytest.raises(crl_update.CrlRefused) as refused:
        crl_update.replaces(new, CA, old, NOW)
    return refused.value.code


def test_a_newer_current_crl_of_the_ca_replaces_the_held_one() -> None:
    held = crl_update.replaces(_crl(3), CA, None, NOW)
    assert held is not None and held.number == 3 and held.next_update == NOW + DAY
    newer = crl_update.replaces(_crl(4), CA, held, NOW)
    assert newer is not None and newer.number == 4
    assert crl_update.replaces(held.crl, CA, held, NOW) is None  # the one held: nothing to do
    assert _code(_crl(3, NOW - dt.timedelta(minutes=1)), held) == "not_newer"  # same number
    assert _code(_crl(2), held) == "not_newer"


def test_foreign_malformed_and_stale_crls_are_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    assert _code(_crl(9, key=other, ca=pki.make_ca(other, "Other CA")), None) == "foreign"
    assert _code(_crl(9, key=other), None) == "foreign"  # CityGrid's name, another key
    assert _code(_crl(9, NOW + dt.timedelta(hours=1)), None) == "not_current"
    assert _code(_crl(9, NOW - 2 * DAY), None) == "not_current"
    with pytest.raises(crl_update.CrlRefused) as refused:
        crl_update.parse(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    assert refused.value.code == "malformed"
    der = _crl(5).public_bytes(serialization.Encoding.DER)
    assert crl_update.signed(crl_update.parse(der), CA).number == 5


def test_current_allows_a_publisher_clock_slightly_ahead() -> None:
    held = crl_update.signed(_crl(1, NOW + dt.timedelta(minutes=2)), CA)
    assert crl_update.current(held, NOW)
    assert not crl_update.current(held, NOW + 2 * DAY)
