"""Certificate-bound ES256 tokens: the attacks the gateway must refuse, and key rotation."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from auth import tokens
from auth.identity import Identity, Unauthenticated

ALICE = Identity("alice", ("viewer",), (), "1a", "ab" * 32, "person")
BOB_SHA = "cd" * 32


@pytest.fixture
def keys(tmp_path: Path) -> tokens.KeySet:
    return tokens.KeySet(tmp_path / "jwt")


def _b64(data: dict) -> str:  # type: ignore[type-arg]
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(**changes: object) -> dict:  # type: ignore[type-arg]
    now = int(time.time())
    claims = {
        "iss": tokens.ISSUER,
        "aud": tokens.AUDIENCE,
        "sub": "alice",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "cnf": {"x5t#S256": tokens.x5t_s256(ALICE.cert_sha256)},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(keys: tokens.KeySet, claims: dict) -> str:  # type: ignore[type-arg]
    kid, key = keys.signing_key()
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def test_valid_token_round_trip(keys: tokens.KeySet) -> None:
    claims = tokens.validate(keys, tokens.issue(keys, ALICE), ALICE.cert_sha256)
    assert claims["sub"] == "alice" and claims["roles"] == ["viewer"]


def test_alg_none(keys: tokens.KeySet) -> None:
    token = f"{_b64({'alg': 'none', 'kid': keys.current})}.{_b64(_claims())}."
    with pytest.raises(Unauthenticated):
        tokens.validate(keys, token, ALICE.cert_sha256)


def test_hs256_signed_with_public_key(keys: tokens.KeySet) -> None:
    kid, key = keys.signing_key()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated):
        tokens.validate(keys, token, ALICE.cert_sha256)


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(time.time()) - 10},
        {"exp": None},
        {"aud": "someone-else"},
        {"iss": "evil"},
        {"nbf": None},
        {"cnf": None},
        {"sub": None},
        {"iat": None},
    ],
    ids=[
        "expired",
        "missing-exp",
        "wrong-aud",
        "wrong-iss",
        "missing-nbf",
        "missing-cnf",
        "missing-sub",
        "missing-iat",
    ],
)
def test_bad_claims(keys: tokens.KeySet, changes: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(Unauthenticated):
        tokens.validate(keys, _signed(keys, _claims(**changes)), ALICE.cert_sha256)


def _failed_check(keys: tokens.KeySet, token: str, sha256: str = ALICE.cert_sha256) -> str:
    with pytest.raises(Unauthenticated) as refused:
        tokens.validate(keys, token, sha256)
    assert refused.value.reason == "bad_token"
    return refused.value.detail["check"]


def test_refusal_names_the_failed_check(keys: tokens.KeySet, tmp_path: Path) -> None:
    """The audit entry of a refused token says which check failed, not just `bad_token`."""
    now = int(time.time())
    assert _failed_check(keys, _signed(keys, _claims(exp=now - 10))) == "expired"
    assert _failed_check(keys, _signed(keys, _claims(nbf=now + 100))) == "not_yet_valid"
    assert _failed_check(keys, _signed(keys, _claims(aud="other"))) == "wrong_audience"
    assert _failed_check(keys, _signed(keys, _claims(iss="evil"))) == "wrong_issuer"
    assert _failed_check(keys, _signed(keys, _claims(cnf=None))) == "missing_claim:cnf"
    assert _failed_check(keys, tokens.issue(keys, ALICE), BOB_SHA) == "wrong_binding"
    assert _failed_check(keys, "not-a-token") == "malformed"
    other = tokens.KeySet(tmp_path / "other")
    assert _failed_check(keys, tokens.issue(other, ALICE)) == "unknown_kid"
    head, payload, _ = tokens.issue(keys, ALICE).split(".")
    _, _, foreign_sig = _signed(other, _claims()).split(".")
    assert _failed_check(keys, f"{head}.{payload}.{foreign_sig}") == "bad_signature"
    none = f"{_b64({'alg': 'none', 'kid': keys.current})}.{_b64(_claims())}."
    assert _failed_check(keys, none) == "algorithm"


class CountingKeySet(tokens.KeySet):
    """A real key set that counts how often it reads its directory."""

    loads = 0

    def reload(self) -> None:
        self.loads += 1
        super().reload()


def test_unknown_kids_do_not_reload_the_key_directory_each_time(keys: tokens.KeySet) -> None:
    keys.rotate()
    worker = CountingKeySet(keys.dir)
    loaded = worker.loads
    for n in range(200):
        forged = jwt.encode(_claims(), keys.signing_key()[1], "ES256", headers={"kid": f"x{n}"})
        with pytest.raises(Unauthenticated, match="unknown key"):
            tokens.validate(worker, forged, ALICE.cert_sha256)
    assert worker.loads == loaded  # the directory did not change: no reload at all
    # A real rotation by another process changes the directory and is picked up at once.
    elsewhere = tokens.KeySet(keys.dir)
    elsewhere.rotate()
    token = tokens.issue(elsewhere, ALICE)
    assert tokens.validate(worker, token, ALICE.cert_sha256)["sub"] == "alice"
    assert worker.loads == loaded + 1


def test_unknown_kid_reloads_at_most_once_per_interval(keys: tokens.KeySet) -> None:
    """Even if a change hid inside one timestamp tick, the directory is re-read — but no
    more often than `min_interval`."""
    keys.rotate()
    worker = CountingKeySet(keys.dir, min_interval=3600)
    worker._loaded_at -= 3600  # the last load is an interval old
    forged = jwt.encode(_claims(), keys.signing_key()[1], "ES256", headers={"kid": "nope"})
    for _ in range(50):
        with pytest.raises(Unauthenticated):
            tokens.validate(worker, forged, ALICE.cert_sha256)
    assert worker.loads == 2  # the first load, and one re-read after the interval


def test_token_over_another_clients_certificate(keys: tokens.KeySet) -> None:
    token = tokens.issue(keys, ALICE)
    with pytest.raises(Unauthenticated, match="not bound"):
        tokens.validate(keys, token, BOB_SHA)


def test_tampered_payload(keys: tokens.KeySet) -> None:
    head, _, sig = tokens.issue(keys, ALICE).split(".")
    forged = f"{head}.{_b64(_claims(sub='admin', roles=['admin']))}.{sig}"
    with pytest.raises(Unauthenticated):
        tokens.validate(keys, forged, ALICE.cert_sha256)


def test_garbage_and_unknown_kid(keys: tokens.KeySet, tmp_path: Path) -> None:
    for junk in ["", "a.b", "not-a-token", "a.b.c"]:
        with pytest.raises(Unauthenticated):
            tokens.validate(keys, junk, ALICE.cert_sha256)
    other = tokens.KeySet(tmp_path / "other")
    with pytest.raises(Unauthenticated, match="unknown key"):
        tokens.validate(keys, tokens.issue(other, ALICE), ALICE.cert_sha256)


def test_rotation_keeps_valid_tokens(keys: tokens.KeySet) -> None:
    before = tokens.issue(keys, ALICE)
    old_kid = keys.current
    new_kid = keys.rotate()
    assert new_kid != old_kid and keys.current == new_kid
    after = tokens.issue(keys, ALICE)
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    assert tokens.validate(keys, before, ALICE.cert_sha256)["sub"] == "alice"
    assert tokens.validate(keys, after, ALICE.cert_sha256)["sub"] == "alice"
    for _ in range(keys.keep):
        keys.rotate()
    with pytest.raises(Unauthenticated, match="unknown key"):
        tokens.validate(keys, before, ALICE.cert_sha256)


def test_other_process_rotation_is_picked_up(keys: tokens.KeySet, tmp_path: Path) -> None:
    """A worker that loaded its keys before another process rotated still validates tokens
    signed with the new key."""
    worker = tokens.KeySet(keys.dir)
    rotated_elsewhere = tokens.KeySet(keys.dir)
    rotated_elsewhere.rotate()
    token = tokens.issue(rotated_elsewhere, ALICE)
    assert tokens.validate(worker, token, ALICE.cert_sha256)["sub"] == "alice"
