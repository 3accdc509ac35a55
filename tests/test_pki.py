"""CityGrid's CA through the CLI: init, issue, list, revoke, CRL; every act audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from auth import pki
from mapserver.cli import main
from mapserver.settings import Settings

from .admin_key import admin_env

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(tmp_path / "var"),
        "CITYGRID_CA_PASSPHRASE": PASSPHRASE,
    }


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def fails(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code != 0
    assert result.output.startswith("citygrid: error: ") and "Traceback" not in result.output
    assert result.output.count("\n") == 1
    return result.output


def test_ca_issue_verify_revoke(
    env: dict[str, str], settings: Settings, conn, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    run(env, "pki", "init")
    ca_path = Path(env["CITYGRID_DATA_DIR"]) / "pki" / "ca.crt"
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    key_pem = (ca_path.parent / "ca.key").read_bytes()
    assert b"ENCRYPTED" in key_pem and (ca_path.parent / "ca.key").stat().st_mode & 0o077 == 0
    fails(env, "pki", "init")  # a second CA is refused
    env = admin_env(env, "pki-root")  # account and certificate acts are signed

    run(env, "account", "add", "pki-alice", "--role", "viewer")
    run(env, "account", "add", "pki-handheld", "--role", "inspector")
    out = tmp_path / "out"
    issued = run(
        env, "pki", "issue", "--account", "pki-alice", "--kind", "person", "--out", str(out)
    )
    run(env, "pki", "issue", "--account", "pki-handheld", "--kind", "device", "--out", str(out))
    run(env, "pki", "issue", "--account", "citygrid.local", "--kind", "server", "--out", str(out))
    password = issued.split("PKCS#12 password: ")[1].strip()

    alice = x509.load_pem_x509_certificates((out / "pki-alice.crt").read_bytes())[0]
    key, cert, extra = pkcs12.load_key_and_certificates(
        (out / "pki-alice.p12").read_bytes(), password.encode()
    )
    assert cert == alice and extra == [ca] and key is not None
    assert pki.account_of(alice) == "pki-alice"

    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    verified = verifier.verify(alice, [])
    assert verified.chain[-1] == ca
    eku = alice.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    server = x509.load_pem_x509_certificates((out / "citygrid.local.crt").read_bytes())[0]
    server_eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(server_eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    listing = run(env, "pki", "list")
    assert listing.count("valid") == 4  # and the administrator's signing certificate
    serial = format(alice.serial_number, "x")
    run(env, "pki", "revoke", serial, "--reason", "key_compromise")
    crl = x509.load_pem_x509_crl((ca_path.parent / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert crl.get_revoked_certificate_by_serial_number(alice.serial_number) is not None
    assert crl.next_update_utc is not None and crl.next_update_utc > pki.now()
    assert "revoked (key_compromise)" in run(env, "pki", "list")
    fails(env, "pki", "revoke", serial)  # already revoked
    fails(env, "pki", "revoke", "abc123")  # unknown
    fails(env, "pki", "revoke", serial[:8], "--reason", "bored")

    actions = conn.execute(
        "SELECT action FROM audit_entry WHERE action LIKE 'pki.%%' ORDER BY id"
    ).fetchall()
    assert [a for (a,) in actions] == [
        "pki.init",
        "pki.issue",
        "pki.issue",
        "pki.issue",
        "pki.revoke",
    ]


def test_passphrase_rules(env: dict[str, str], tmp_path: Path) -> None:
    no_secret = {k: v for k, v in env.items() if k != "CITYGRID_CA_PASSPHRASE"}
    assert "CITYGRID_CA_PASSPHRASE" in fails(no_secret, "pki", "init")
    assert "at least" in fails({**env, "CITYGRID_CA_PASSPHRASE": "short"}, "pki", "init")
    secret_file = tmp_path / "secret"
    secret_file.write_text(PASSPHRASE + "\n")
    binary = tmp_path / "secret.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + PASSPHRASE.encode())  # was a traceback
    out = fails({**no_secret, "CITYGRID_CA_PASSPHRASE_FILE": str(binary)}, "pki", "init")
    assert "CITYGRID_CA_PASSPHRASE_FILE: the file is not UTF-8 text" in out
    run({**no_secret, "CITYGRID_CA_PASSPHRASE_FILE": str(secret_file)}, "pki", "init")
    assert "wrong CA passphrase" in fails(
        {**env, "CITYGRID_CA_PASSPHRASE": "another long passphrase"}, "pki", "crl"
    )


def test_issue_refusals(env: dict[str, str], tmp_path: Path) -> None:
    assert "no CA yet" in fails(env, "pki", "issue", "--account", "x", "--kind", "device")
    run(env, "pki", "init")
    env = admin_env(env, "pki-root")
    assert "no account" in fails(env, "pki", "issue", "--account", "ghost", "--kind", "person")
    run(env, "account", "add", "pki-gone", "--role", "viewer")
    run(env, "account", "disable", "pki-gone")
    assert "disabled" in fails(env, "pki", "issue", "--account", "pki-gone", "--kind", "person")
    # An empty password file gave a PKCS#12 under a random password that was never shown
    # (exit 0); one that is no text was a traceback. Both are refused before any issue.
    run(env, "account", "add", "pki-p12", "--role", "viewer")
    out = tmp_path / "p12"
    listed = run(env, "pki", "list")
    for content, problem in ((b" \n", "is empty"), (b"\xff\xfe secret", "is not UTF-8 text")):
        password = tmp_path / "p12-password"
        password.write_bytes(content)
        issue = ["--account", "pki-p12", "--kind", "person", "--out", str(out)]
        said = fails(env, "pki", "issue", *issue, "--p12-password-file", str(password))
        assert f"--p12-password-file {problem}" in said, said
    assert run(env, "pki", "list") == listed
    assert not out.exists() or not any(out.iterdir())


def test_account_commands(env: dict[str, str]) -> None:
    run(env, "pki", "init")
    env = admin_env(env, "pki-root")
    assert "roles inspector" in run(env, "account", "add", "acct-bob", "--role", "inspector")
    assert "exists" in fails(env, "account", "add", "acct-bob", "--role", "viewer")
    assert "unknown role" in fails(env, "account", "add", "acct-x", "--role", "emperor")
    assert "bad account name" in fails(env, "account", "add", "Bad Name", "--role", "viewer")
    assert "no organisation" in fails(
        env, "account", "add", "acct-y", "--role", "viewer", "--org", "nope"
    )
    assert "inspector, viewer" in run(env, "account", "grant", "acct-bob", "viewer")
    assert "roles viewer" in run(env, "account", "revoke-role", "acct-bob", "inspector")
    assert "does not have" in fails(env, "account", "revoke-role", "acct-bob", "admin")
    assert "no account" in fails(env, "account", "disable", "nobody")


def test_pki_errors_never_name_server_paths(env: dict[str, str], tmp_path: Path) -> None:
    no_secret = {k: v for k, v in env.items() if k != "CITYGRID_CA_PASSPHRASE"}
    missing = tmp_path / "secret-dir" / "no-such-passphrase"
    out = fails({**no_secret, "CITYGRID_CA_PASSPHRASE_FILE": str(missing)}, "pki", "init")
    assert "CITYGRID_CA_PASSPHRASE_FILE" in out and str(tmp_path) not in out and "/" not in out
    short = tmp_path / "short"
    short.write_text("short\n")
    out = fails({**no_secret, "CITYGRID_CA_PASSPHRASE_FILE": str(short)}, "pki", "init")
    assert "at least" in out and str(tmp_path) not in out
    run(env, "pki", "init")
    out = fails(env, "pki", "init")
    assert "already exists" in out and env["CITYGRID_DATA_DIR"] not in out and "/" not in out
    (Path(env["CITYGRID_DATA_DIR"]) / "pki" / "crl.pem").write_text("garbage")
    out = fails(env, "pki", "renew")
    assert "CRL" in out and "/" not in out
