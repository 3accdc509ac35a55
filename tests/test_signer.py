"""The CA signer process: the only server process with the CA key, two narrow operations,
enrolment codes, and a `citygrid serve` whose gunicorn never sees the CA passphrase."""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import accounts, actions, certs, enrol, pki, signer
from auth.ca_store import CaStore
from auth.signer_protocol import (
    IssueSigning,
    ProtocolError,
    PublishCrl,
    decode_request,
    encode_request,
)
from mapserver import db
from mapserver.cli import main
from mapserver.settings import Settings

from .admin_key import admin_env
from .conftest import empty_database
from .tls import Server, Signer, request

SECRET = "signer test passphrase"


class Install:
    """A database, a CA and two accounts with person certificates."""

    def __init__(self, settings: Settings, out: Path):
        self.settings, self.out = settings, out
        self.store = CaStore(settings.pki_dir)
        self.store.init(SECRET.encode())
        with db.transaction(settings) as conn:
            for name, role in (("sg-alice", "viewer"), ("sg-admin", "admin")):
                accounts.add(conn, name, [role])
                certs.issue(conn, self.store, SECRET.encode(), name, pki.Kind.PERSON, out)
            certs.publish_crl(conn, self.store, SECRET.encode())

    def env(self) -> dict[str, str]:
        return {
            "CITYGRID_DATABASE_URL": self.settings.database_url,
            "CITYGRID_DATA_DIR": str(self.settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
        }

    def cli(self, *args: str) -> str:
        """The command line, as administrator sg-root (account and certificate acts are signed)."""
        env = admin_env(self.env(), "sg-root")
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    def get(self, port: int, path: str, who: str, **kw):  # type: ignore[no-untyped-def]
        crt, key = self.out / f"{who}.crt", self.out / f"{who}.key"
        return request(port, path, self.store.cert_path, crt, key, **kw)


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    settings = empty_database("citygrid_signer", tmp_path_factory.mktemp("sg-var"))
    yield Install(settings, tmp_path_factory.mktemp("sg-certs"))
    db.drop_database(settings)


@pytest.fixture
def running_signer(install: Install) -> Iterator[Signer]:
    proc = Signer(install.env())
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def _proof(
    account: str, nonce: str, code: str
) -> tuple[dict[str, str], ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    spki = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    signature = key.sign(enrol.proof_bytes(account, nonce, spki), ec.ECDSA(hashes.SHA256()))
    body = {
        "public_key": spki,
        "nonce": nonce,
        "proof": base64.b64encode(signature).decode(),
        "code": code,
    }
    return body, key


def _nonce(settings: Settings, account: str) -> str:
    with db.transaction(settings) as conn:
        return actions.new_nonce(conn, account)[0]


def test_protocol_has_two_typed_operations() -> None:
    issue = IssueSigning("a", "spki", "n", "p", "c")
    assert decode_request(encode_request(issue)) == issue
    assert decode_request(encode_request(PublishCrl("1f"))) == PublishCrl("1f")
    for bad in (
        b'{"op":"issue_server","account":"a"}\n',
        b'{"op":"publish_crl","serial":"1","extra":"x"}\n',
        b'{"op":"publish_crl","serial":1}\n',
        b'{"op":"publish_crl","serial":"1"}',  # unterminated
        b"[1]\n",
        b"not json\n",
    ):
        with pytest.raises(ProtocolError):
            decode_request(bad)


def test_signer_socket_is_private_and_refuses_unknown_operations(
    install: Install, running_signer: Signer
) -> None:
    import socket

    mode = running_signer.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(running_signer.socket))
        s.sendall(b'{"op":"sign_anything","data":"x"}\n')
        reply = json.loads(s.makefile("rb").readline())
    assert reply["ok"] is False and reply["error"] == "invalid"
    with pytest.raises(Exception, match="another signer"):
        from auth.signer import listening_socket

        listening_socket(running_signer.socket)


def test_enrolment_needs_a_one_time_code(install: Install, running_signer: Signer) -> None:
    s = install.settings
    # No code, a made-up code: refused by the signer, nothing issued.
    for code in ("", "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF"):
        body, _ = _proof("sg-alice", _nonce(s, "sg-alice"), code)
        with pytest.raises(signer.SignerRefused) as refused:
            signer.issue_signing(s, enrol.Proof("sg-alice", *body.values()))
        assert refused.value.status == 403
    # A code of another account does not work for alice.
    bobs = install.cli("pki", "enrol-code", "sg-admin").strip()
    body, _ = _proof("sg-alice", _nonce(s, "sg-alice"), bobs)
    with pytest.raises(signer.SignerRefused):
        signer.issue_signing(s, enrol.Proof("sg-alice", *body.values()))

    code = install.cli("pki", "enrol-code", "sg-alice", "--hours", "2").strip()
    body, key = _proof("sg-alice", _nonce(s, "sg-alice"), code.lower().replace("-", " "))
    cert = signer.issue_signing(s, enrol.Proof("sg-alice", *body.values()))
    assert pki.account_of(cert) == "sg-alice"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    cert.verify_directly_issued_by(install.store.certificate())
    # Single use.
    body, _ = _proof("sg-alice", _nonce(s, "sg-alice"), code)
    with pytest.raises(signer.SignerRefused, match="already used"):
        signer.issue_signing(s, enrol.Proof("sg-alice", *body.values()))
    # A proof over another account's name is refused before any code is spent.
    fresh = install.cli("pki", "enrol-code", "sg-alice").strip()
    body, _ = _proof("sg-admin", _nonce(s, "sg-alice"), fresh)
    with pytest.raises(signer.SignerRefused, match="does not verify"):
        signer.issue_signing(s, enrol.Proof("sg-alice", *body.values()))

    with psycopg.connect(s.database_url) as conn:
        stored = conn.execute(
            "SELECT code_sha256, used_at IS NOT NULL, certificate FROM enrolment_code"
            " WHERE code_sha256 = %s",
            (enrol.code_hash(code),),
        ).fetchone()
        assert stored == (enrol.code_hash(code), True, certs.serial_hex(cert.serial_number))
        assert not conn.execute(
            "SELECT count(*) FROM enrolment_code WHERE code_sha256 = %s", (code,)
        ).fetchone()[0]
        audited = [
            a
            for (a,) in conn.execute(
                "SELECT action FROM audit_entry WHERE action IN"
                " ('pki.enrol_code', 'signer.issue_signing') ORDER BY id"
            )
        ]
        assert audited.count("pki.enrol_code") == 3 and audited.count("signer.issue_signing") == 1
    # The serving role can neither read nor make codes.
    with (
        psycopg.connect(s.serving_database_url) as app,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        app.execute("SELECT count(*) FROM enrolment_code")


def test_expired_code_is_refused(install: Install, running_signer: Signer) -> None:
    code = install.cli("pki", "enrol-code", "sg-alice", "--hours", "1").strip()
    with psycopg.connect(install.settings.database_url) as conn:
        conn.execute(
            "UPDATE enrolment_code SET created_at = now() - interval '2 hours',"
            " expires_at = now() - interval '1 hour' WHERE code_sha256 = %s",
            (enrol.code_hash(code),),
        )
    body, _ = _proof("sg-alice", _nonce(install.settings, "sg-alice"), code)
    with pytest.raises(signer.SignerRefused, match="expired"):
        signer.issue_signing(install.settings, enrol.Proof("sg-alice", *body.values()))


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(p.split("=", 1) for p in raw.decode(errors="replace").split("\0") if "=" in p)


def _children(pid: int) -> list[int]:
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_file.parent.name))
    return found


def test_web_processes_never_get_the_passphrase_and_enrol_through_the_signer(
    install: Install,
) -> None:
    server = Server(install.env())
    try:
        server.wait_ready()
        assert server.signer is not None  # the test server runs the signer beside gunicorn
        # Ready means listening: the arbiter's socket takes connections before it forks.
        deadline = time.monotonic() + 30
        while not (workers := _children(server.proc.pid)):
            assert time.monotonic() < deadline, "gunicorn forked no worker"
            time.sleep(0.05)
        for pid in [server.proc.pid, *workers]:
            env = _environ(pid)
            assert "CITYGRID_CA_PASSPHRASE" not in env and "CITYGRID_CA_PASSPHRASE_FILE" not in env
            assert SECRET not in " ".join(env.values())

        def post(path: str, body: dict[str, str]):  # type: ignore[no-untyped-def]
            return install.get(
                server.port,
                path,
                "sg-admin",
                method="POST",
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )

        def nonce() -> str:
            reply = install.get(server.port, "/auth/nonce", "sg-admin", method="POST")
            return str(reply.json()["nonce"])

        body, _ = _proof("sg-admin", nonce(), "")
        del body["code"]
        refused = post("/auth/signing/enrol", body)
        assert refused.status == 403 and "code" in refused.json()["message"]
        body, _ = _proof("sg-admin", nonce(), install.cli("pki", "enrol-code", "sg-admin").strip())
        issued = post("/auth/signing/enrol", body)
        assert issued.status == 201, issued.body
        cert = x509.load_pem_x509_certificate(issued.json()["certificate"].encode())
        assert pki.account_of(cert) == "sg-admin"
        # The signer is gone: enrolment answers 503, never falls back to a key of its own.
        server.signer.stop()
        body, _ = _proof("sg-admin", nonce(), install.cli("pki", "enrol-code", "sg-admin").strip())
        down = post("/auth/signing/enrol", body)
        assert down.status == 503 and down.json()["error"] == "signer_unavailable"
    finally:
        server.stop()
