"""Signed actions judged at the log's time: bundles carry the audit entry, its inclusion
proof and the signed (cosigned) checkpoint; offline verification needs a CRL current then;
a revocation at R voids acts logged after R, never before; CLI administrative acts are
signed and export verifiable bundles. Real database, CA, audit log and CLI throughout."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from audit import cosignature, cosigned
from audit.keys import signer as audit_signer
from audit.record import checkpoint_now, record
from auth import accounts, action_bundle, actions, certs, pki, signed_action
from auth.ca_store import CaStore
from auth.signed_action import SignatureRefused, Trust, verify_bundle
from mapserver import db
from mapserver.cli import main
from mapserver.commands import signing
from mapserver.settings import Settings

from .conftest import empty_database

SECRET = "evidence test passphrase"


class Install:
    """A database, a CA with a published CRL, and one person with a signing key on disk."""

    def __init__(self, settings: Settings, out: Path):
        self.settings, self.out = settings, out
        self.store = CaStore(settings.pki_dir)
        self.ca = self.store.init(SECRET.encode())
        self.log_key = audit_signer(settings.pki_dir)
        with db.transaction(settings) as conn:
            for name in ("ev-alice", "ev-dora"):
                accounts.add(conn, name, ["operator"])
                certs.issue(conn, self.store, SECRET.encode(), name, pki.Kind.SIGNING, out)
            certs.publish_crl(conn, self.store, SECRET.encode())
        self.keys = {
            name: signing.load(out / f"{name}.signing.key", out / f"{name}.signing.crt")
            for name in ("ev-alice", "ev-dora")
        }
        self.alice = self.keys["ev-alice"]

    def trust(self, **kw: Any) -> Trust:
        return Trust(self.ca, self.log_key.public_key(), **kw)

    def act(self, resource: str, name: str = "ev-alice") -> int:
        """An honest signed act, accepted and audited as the server does."""
        with db.transaction(self.settings) as conn:
            who = signing.identity(conn, name)
            signed = signing.sign_and_accept(
                conn, self.settings.pki_dir, who, self.keys[name], "case.record", resource, {}
            )
            entry = signing.cli_entry(name, "case.record", resource, signed, {})
            record(conn, entry, self.log_key)
        return signed.action_id

    def checkpoint(self) -> str | None:
        with db.transaction(self.settings) as conn:
            return checkpoint_now(conn, self.log_key)

    def bundle(self, action_id: int, witnesses: list[cosignature.Witness] | None = None) -> Any:
        with db.connect(self.settings) as conn:
            _, data, sig, cert = actions.stored(conn, action_id)  # type: ignore[misc]
            return action_bundle.for_action(
                conn, self.settings.pki_dir, witnesses or [], data, sig, cert
            )

    def revoke(self) -> dt.datetime:
        with db.transaction(self.settings) as conn:
            serial = certs.serial_hex(self.alice.cert.serial_number)
            certs.revoke(conn, serial, "key_compromise")
            certs.publish_crl(conn, self.store, SECRET.encode())
            row = conn.execute(
                "SELECT revoked_at FROM certificate WHERE serial = %s", (serial,)
            ).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    var = tmp_path_factory.mktemp("evidence-var")
    settings = empty_database("citygrid_evidence", var)
    out = var / "keys"
    out.mkdir()
    yield Install(settings, out)
    db.drop_database(settings)


@pytest.fixture(scope="module")
def history(install: Install) -> dict[str, Any]:
    """An act logged before the revocation, the revocation, then a back-dated act made with
    the stolen key and written straight into the tables (as a server under an attacker's
    control could), its payload time before the revocation."""
    for i in range(5):
        install.act(f"case warm-up {i}")  # a tree of several leaves: proofs are not empty
    before = install.act("case before")
    install.checkpoint()
    honest_bundle = install.bundle(before)
    _into_the_next_second()  # a CRL states revocation times to the second
    revoked_at = install.revoke()
    backdated = _forge(install, revoked_at - dt.timedelta(minutes=2))
    far_back = _forge(install, revoked_at - dt.timedelta(days=3))
    install.checkpoint()
    return {
        "before": before,
        "exported_before_revocation": honest_bundle,
        "revoked_at": revoked_at,
        "backdated": backdated,
        "far_back": far_back,
    }


def _into_the_next_second() -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    while dt.datetime.now(dt.UTC).replace(microsecond=0) == start:
        time.sleep(0.01)


def _forge(install: Install, when: dt.datetime) -> int:
    """Sign a payload dated `when` with the (stolen) key and store and log it directly."""
    with db.transaction(install.settings) as conn:
        nonce = base64.urlsafe_b64encode(os.urandom(18)).decode()
        conn.execute(
            "INSERT INTO action_nonce (nonce, account, issued_at, expires_at, used_at)"
            " VALUES (%s, 'ev-alice', %s, %s, %s)",
            (nonce, when, when + dt.timedelta(minutes=5), when),
        )
        thumb = pki.thumbprint(install.alice.cert)
        data = signed_action.payload("case.record", "cases", {}, nonce, when, thumb)
        sig = signed_action.sign(install.alice.key, data)
        sha = hashlib.sha256(sig).hexdigest()
        row = conn.execute(
            "INSERT INTO signed_action (at, account, action, resource, payload, signature,"
            " certificate, signature_sha256, nonce) VALUES (%s, 'ev-alice', 'case.record',"
            " 'cases', %s, %s, %s, %s, %s) RETURNING id",
            (when, data, sig, pki.pem(install.alice.cert).decode(), sha, nonce),
        ).fetchone()
        assert row is not None
        entry = signing.cli_entry(
            "ev-alice", "case.record", "cases", signing.Signed(int(row[0]), sha), {}
        )
        record(conn, entry, install.log_key)
    return int(row[0])


def test_act_logged_before_revocation_still_verifies(
    install: Install, history: dict[str, Any]
) -> None:
    for doc in (history["exported_before_revocation"], install.bundle(history["before"])):
        evidence = verify_bundle(doc, install.trust())
        assert evidence.action.resource == "case before"
        assert evidence.logged.at < history["revoked_at"]
    later = verify_bundle(install.bundle(history["before"]), install.trust())
    assert later.revoked_at is not None  # the newest CRL lists the later revocation
    assert abs(later.revoked_at - history["revoked_at"]) < dt.timedelta(seconds=1)


def test_backdated_signature_logged_after_revocation_fails(
    install: Install, history: dict[str, Any]
) -> None:
    doc = install.bundle(history["backdated"])
    payload = json.loads(base64.b64decode(doc["payload"]))
    assert payload["time"] < history["revoked_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(SignatureRefused, match="revoked at .*, before the act was logged at"):
        verify_bundle(doc, install.trust())
    with pytest.raises(SignatureRefused, match="payload time is too far from the log's time"):
        verify_bundle(install.bundle(history["far_back"]), install.trust())


def test_bundle_without_a_current_crl_is_refused(install: Install, history: dict[str, Any]) -> None:
    doc = install.bundle(history["before"])
    none = {**doc, "crls": []}
    with pytest.raises(SignatureRefused, match="no CRL in the bundle"):
        verify_bundle(none, install.trust())
    ca_key = install.store.key(SECRET.encode())
    at = verify_bundle(doc, install.trust()).logged.at
    later = pki.build_crl(ca_key, install.ca, [], 999, when=at + dt.timedelta(days=30))
    pem = later.public_bytes(Encoding.PEM)
    with pytest.raises(SignatureRefused, match="no bundled CRL was current at the log's time"):
        verify_bundle({**doc, "crls": [pem.decode()]}, install.trust())
    stranger = pki.build_crl(pki.new_key(), install.ca, [], 1000, when=at)
    strange_pem = stranger.public_bytes(Encoding.PEM)
    with pytest.raises(SignatureRefused, match="not signed by the CA"):
        verify_bundle({**doc, "crls": [*doc["crls"], strange_pem.decode()]}, install.trust())


def test_altered_entry_proof_or_checkpoint_is_refused(
    install: Install, history: dict[str, Any]
) -> None:
    doc = install.bundle(history["before"])
    assert len(doc["log"]["proof"]) >= 2

    def altered(change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(doc)
        change(copied["log"])
        return copied

    cases = {
        "entry": lambda log: log["entry"].update(resource="case other"),
        "entry time": lambda log: log["entry"].update(at="2020-01-01T00:00:00.000000Z"),
        "signature named": lambda log: log["entry"]["detail"].update(signature_sha256="0" * 64),
        "proof": lambda log: log["proof"].__setitem__(0, base64.b64encode(b"\0" * 32).decode()),
        "proof cut": lambda log: log["proof"].pop(),
        "index": lambda log: log.update(leaf_index=log["leaf_index"] + 1),
        "checkpoint": lambda log: log.update(
            checkpoint=re.sub(r"\n(\d+)\n", _bigger, log["checkpoint"], count=1)
        ),
    }
    for name, change in cases.items():
        with pytest.raises(SignatureRefused, match="audit evidence") as refused:
            verify_bundle(altered(change), install.trust())
        assert refused.value.message, name
    # A checkpoint signed by another key than the pinned one proves nothing.
    with pytest.raises(SignatureRefused, match="pinned log key"):
        verify_bundle(doc, Trust(install.ca, Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(SignatureRefused, match="no audit entry"):
        verify_bundle({**doc, "log": None}, install.trust())


def _bigger(m: re.Match[str]) -> str:
    return f"\n{int(m[1]) + 1}\n"


def test_cosigned_checkpoint_bounds_the_log_time(install: Install, history: dict[str, Any]) -> None:
    key = Ed25519PrivateKey.generate()
    witness = cosignature.witness_of("office/w1", key)
    plain = install.bundle(history["before"])
    size = plain["log"]["tree_size"]
    at = verify_bundle(plain, install.trust()).logged.at
    with db.transaction(install.settings) as conn:
        note = conn.execute(
            "SELECT note FROM audit_checkpoint WHERE size = %s", (size,)
        ).fetchone()[0]  # type: ignore[index]
        stamp = int(at.timestamp()) + 3
        cosigned.accept(
            conn,
            cosignature.cosign(note, key, "office/w1", stamp),
            [witness],
            install.log_key.public_key(),
        )
    doc = install.bundle(history["before"], [witness])
    evidence = verify_bundle(doc, install.trust(witnesses=[witness], require_witness=True))
    assert [c.witness for c in evidence.logged.cosigned] == ["office/w1"]
    assert evidence.logged.witnessed_by == dt.datetime.fromtimestamp(stamp, dt.UTC)
    with pytest.raises(SignatureRefused, match="not cosigned by a pinned witness"):
        verify_bundle(plain, install.trust(witnesses=[witness], require_witness=True))
    # An entry the witness first saw 3 s after its time passes a 120 s bound; the same entry
    # cosigned only an hour later looks back-dated by a server under an attacker's control.
    bounded = install.trust(witnesses=[witness], max_witness_delay=dt.timedelta(seconds=120))
    verify_bundle(doc, bounded)
    late = copy.deepcopy(plain)
    late["log"]["checkpoint"] = cosignature.cosign(note, key, "office/w1", stamp + 3600)
    verify_bundle(late, install.trust(witnesses=[witness]))  # no bound asked for
    with pytest.raises(SignatureRefused, match=r"s before a witness first saw it .*back-dated"):
        verify_bundle(late, bounded)
    # A witness that had seen the tree an hour before the entry's claimed time: false time.
    early = cosignature.cosign(note, key, "office/w1", stamp - 3600)
    doc_early = copy.deepcopy(plain)
    doc_early["log"]["checkpoint"] = early
    with pytest.raises(SignatureRefused, match="the log's time is false"):
        verify_bundle(doc_early, install.trust(witnesses=[witness]))


def test_export_waits_for_a_checkpoint(install: Install) -> None:
    install.checkpoint()
    action_id = install.act("case unchecked", "ev-dora")
    with pytest.raises(action_bundle.NotYetLogged, match="not under a signed checkpoint"):
        install.bundle(action_id)
    with db.connect(install.settings) as conn:
        _, data, sig, cert = actions.stored(conn, action_id)  # type: ignore[misc]
        pending = action_bundle.for_action(
            conn, install.settings.pki_dir, [], data, sig, cert, True
        )
    with pytest.raises(SignatureRefused, match="exported before the log's evidence"):
        verify_bundle(pending, install.trust())
    install.checkpoint()
    verify_bundle(install.bundle(action_id), install.trust())


# ---------------------------------------------------------------- the CLI


def _cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def _ok(env: dict[str, str], *args: str) -> str:
    result = _cli(env, *args)
    assert result.exit_code == 0, result.output
    return str(result.output)


def _one_line_error(env: dict[str, str], *args: str) -> str:
    result = _cli(env, *args)
    assert result.exit_code != 0
    assert result.output.startswith("citygrid: error: ") and "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    return str(result.output)


def test_cli_admin_acts_are_signed_and_verify_offline(install: Install, tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {
        "CITYGRID_DATABASE_URL": install.settings.database_url,
        "CITYGRID_DATA_DIR": str(data),
        "CITYGRID_CA_PASSPHRASE": SECRET,
    }
    _ok(env, "pki", "init")
    _ok(env, "pki", "crl")
    assert "administrative acts are signed" in _one_line_error(
        env, "account", "add", "ev-nobody", "--role", "viewer"
    )
    keys = tmp_path / "admin"
    out = _ok(env, "account", "bootstrap", "ev-root", "--out", str(keys))
    key, cert = keys / "ev-root.signing.key", keys / "ev-root.signing.crt"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert "CITYGRID_ADMIN_KEY" in out
    assert "already holds a signing certificate" in _one_line_error(
        env, "account", "bootstrap", "ev-root2", "--out", str(keys)
    )
    admin = {**env, "CITYGRID_ADMIN_KEY": str(key), "CITYGRID_ADMIN_CERT": str(cert)}
    acts = [int(re.findall(r"signed action (\d+)", out)[0])]
    for args in (
        ("account", "add", "ev-bob", "--role", "viewer"),
        ("account", "grant", "ev-bob", "inspector"),
        ("account", "revoke-role", "ev-bob", "inspector"),
        ("account", "disable", "ev-bob"),
        ("account", "enable", "ev-bob"),
        ("pki", "issue", "--account", "ev-bob", "--kind", "device", "--out", str(tmp_path)),
    ):
        acts.append(int(re.findall(r"signed action (\d+)", _ok(admin, *args))[0]))
    listed = [
        line.split()[0] for line in _ok(admin, "pki", "list").splitlines() if "ev-bob" in line
    ]
    revoked = _ok(admin, "pki", "revoke", listed[0], "--reason", "superseded")
    acts.append(int(re.findall(r"signed action (\d+)", revoked)[0]))
    _ok(admin, "audit", "checkpoint")
    ca, log_key = str(data / "pki" / "ca.crt"), str(data / "pki" / "audit-ed25519.pub")
    wanted = [
        "account.bootstrap on account ev-root",
        "account.add on accounts",
        "account.grant on account ev-bob",
        "account.revoke_role on account ev-bob",
        "account.disable on account ev-bob",
        "account.enable on account ev-bob",
        "pki.issue on account ev-bob",
        f"pki.revoke on certificate {listed[0]}",
    ]
    for action_id, text in zip(acts, wanted, strict=True):
        path = tmp_path / f"act-{action_id}.json"
        _ok(admin, "audit", "bundle", str(action_id), "-o", str(path))
        verified = _ok({}, "verify-action", str(path), "--ca", ca, "--log-key", log_key)
        assert verified.startswith(f"valid: {text} by ev-root, logged at "), verified

    # A bundle that could not be written is neither written nor audited as disclosed.
    def bundles_logged() -> int:
        with psycopg.connect(install.settings.database_url) as conn:
            query = "SELECT count(*) FROM audit_entry WHERE action = 'audit.bundle'"
            return int(conn.execute(query).fetchone()[0])  # type: ignore[index]

    logged = bundles_logged()
    for where, said in ((tmp_path / "no-such-dir" / "act.json", "no such directory"),
                        (tmp_path, "is a directory")):  # fmt: skip
        refused = _one_line_error(admin, "audit", "bundle", str(acts[0]), "-o", str(where))
        assert said in refused, refused
    assert bundles_logged() == logged
    strict = ("--ca", ca, "--log-key", log_key, "--require-witness", "--max-witness-delay", "120")
    unwitnessed = _one_line_error({}, "verify-action", str(path), *strict)
    assert "INVALID: audit evidence: the checkpoint is not cosigned" in unwitnessed
    # The CA and the log key swapped, or a file of another kind: the log key's refusal was a
    # traceback, the CA's a bare "ValueError"; each now names the file that is wrong.
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    for pins, wrong in (
        (("--ca", log_key, "--log-key", ca), f"{log_key} is not a CA certificate (PEM)"),
        (("--ca", ca, "--log-key", str(picture)), f"{picture} is not an Ed25519 public key"),
    ):
        refused = _one_line_error({}, "verify-action", str(path), *pins)
        assert wrong in refused, refused
    # Whatever made the change, the register and the log name the administrator.
    with psycopg.connect(install.settings.database_url) as conn:
        logged = conn.execute(
            "SELECT count(*) FROM audit_entry WHERE method = 'CLI' AND account = 'ev-root'"
            " AND detail ? 'signature_sha256'"
        ).fetchone()
    assert logged is not None and logged[0] == len(acts)


def test_cli_refuses_an_admin_key_others_can_read(install: Install, tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {
        "CITYGRID_DATABASE_URL": install.settings.database_url,
        "CITYGRID_DATA_DIR": str(data),
        "CITYGRID_CA_PASSPHRASE": SECRET,
    }
    _ok(env, "pki", "init")
    _ok(env, "account", "bootstrap", "ev-open", "--out", str(tmp_path))
    key = tmp_path / "ev-open.signing.key"
    admin = {
        **env,
        "CITYGRID_ADMIN_KEY": str(key),
        "CITYGRID_ADMIN_CERT": str(tmp_path / "ev-open.signing.crt"),
    }
    key.chmod(0o644)
    error = _one_line_error(admin, "account", "add", "ev-carol", "--role", "viewer")
    assert "is open to others (mode 0644)" in error and "chmod 600" in error
    with psycopg.connect(install.settings.database_url) as conn:
        assert conn.execute("SELECT 1 FROM account WHERE name = 'ev-carol'").fetchone() is None
    key.chmod(0o600)
    _ok(admin, "account", "add", "ev-carol", "--role", "viewer")
