"""Witnesses of the audit log: C2SP cosignatures, a witness over real mTLS, and the attacks of
the issue (a deleted tail, deleted checkpoints, a rewritten tree state) each reported by
`citygrid audit verify` and refused by the witness."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import checkpoint, cosignature, tree
from audit.cosignature import CosignatureError
from audit.keys import signer
from audit.record import Entry, append
from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db, migrate
from mapserver.cli import main
from mapserver.settings import Settings

from .conftest import database_url
from .sequenced import sequenced
from .tls import Server, request

SECRET = "witness test passphrase"
OFFICER = "wt-officer"
WITNESS = "security-office.example/w1"

# ---------------------------------------------------------------- the format, pure


def _checkpoint_note(key: Ed25519PrivateKey, size: int = 20852163) -> str:
    root = bytes(range(32))
    return checkpoint.sign(checkpoint.Checkpoint(checkpoint.ORIGIN, size, root), key)


def test_cosignature_line_layout_follows_the_spec_example() -> None:
    """The C2SP tlog-cosignature example: key id, then the time as a big-endian u64 (the
    example's message says `time 1679315147`), then the 64-byte Ed25519 signature."""
    line = (
        "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
        "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    )
    blob = base64.b64decode(line)
    assert len(blob) == 4 + 8 + 64
    assert struct.unpack(">Q", blob[4:12])[0] == 1679315147


def test_cosign_and_verify() -> None:
    log_key, key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = _checkpoint_note(log_key)
    cosigned = cosignature.cosign(note, key, WITNESS, 1679315147)
    witness = cosignature.witness_of(WITNESS, key)
    got = cosignature.verify(cosigned, witness)
    assert got.time == 1679315147 and got.checkpoint.size == 20852163
    body = note.partition("\n\n")[0] + "\n"
    assert cosignature.message(body, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + body.encode()
    )
    raw = cosignature.raw(key.public_key())
    want_id = hashlib.sha256(WITNESS.encode() + b"\n\x04" + raw).digest()[:4]
    assert base64.b64decode(got.line.split(" ")[2])[:4] == want_id
    # The log's own signature still verifies: the cosignature is one more line.
    assert checkpoint.verify(cosigned, log_key.public_key()).size == 20852163
    # The verifier key round-trips; a wrong key id or algorithm byte is refused.
    assert cosignature.parse_vkey(witness.vkey()) == witness
    name, key_id, blob = witness.vkey().split("+", 2)
    with pytest.raises(CosignatureError):
        cosignature.parse_vkey(f"{name}+00000000+{blob}")
    ed25519_note_key = base64.b64encode(b"\x01" + raw).decode()  # a log key, not a witness's
    with pytest.raises(CosignatureError):
        cosignature.parse_vkey(f"{name}+{key_id}+{ed25519_note_key}")


def test_forged_cosignatures_are_refused() -> None:
    log_key, key, other = (Ed25519PrivateKey.generate() for _ in range(3))
    note = _checkpoint_note(log_key)
    witness = cosignature.witness_of(WITNESS, key)
    # Another key under the witness's name: not its key id, so no cosignature of it at all.
    with pytest.raises(cosignature.NoCosignature):
        cosignature.verify(cosignature.cosign(note, other, WITNESS, 5), witness)
    good = cosignature.cosign(note, key, WITNESS, 1000)
    # The time changed in the line: the signature no longer covers it.
    body, line = good.rstrip("\n").rsplit("\n", 1)
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    blob[11] ^= 1
    forged = f"{body}\n{line.rsplit(' ', 1)[0]} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(CosignatureError, match="does not verify"):
        cosignature.verify(forged, witness)
    # The checkpoint changed under the cosignature.
    with pytest.raises(CosignatureError, match="does not verify"):
        cosignature.verify(good.replace("\n20852163\n", "\n20852164\n"), witness)


def test_witness_commands_refuse_bad_input_in_one_line_and_keep_nothing(tmp_path: Path) -> None:
    """`witness init` with a mistyped fingerprint wrote the witness's key before refusing,
    so every later init said the directory "already holds a witness"; `witness run` with a
    --cert, --key or --ca of another kind, or a --server that is no URL, was a traceback."""

    def cli(*args: str) -> Result:
        return CliRunner().invoke(main, ["audit", "witness", *args])

    def one_line(result: Result) -> str:
        assert result.exit_code == 1, result.output
        assert result.output.startswith("citygrid: error: ") and result.output.count("\n") == 1
        return str(result.output)

    state = tmp_path / "witness"
    fingerprint = "ab" * 32
    init = ["init", "--state", str(state), "--name", WITNESS, "--log-fingerprint"]
    assert "64 hexadecimal digits" in one_line(cli(*init, fingerprint[:-1]))
    assert not state.exists()
    assert cli(*init, fingerprint).exit_code == 0
    assert "already holds a witness" in one_line(cli(*init, fingerprint))
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    run = ["run", "--state", str(state), "--key", str(picture)]
    for server, cert, ca, said in (
        ("https://127.0.0.1:1", picture, picture, "not PEM files that fit"),
        ("127.0.0.1:1", picture, picture, "--server must be an https:// URL"),
    ):
        result = cli(*run, "--server", server, "--cert", str(cert), "--ca", str(ca))
        assert said in one_line(result), result.output
    under_a_file = ["init", "--state", str(picture / "w"), *init[3:], fingerprint]
    assert "Not a directory" in one_line(cli(*under_a_file))
    # A damaged state says so (it read as missing, "no witness state"), and is kept as it is.
    made = (state / "state.json").read_text()
    for damaged in ("[]", "{", '{"name": 7, "log_fingerprint": "x"}', made.replace("0", '"0"')):
        (state / "state.json").write_text(damaged)
        assert "is damaged" in one_line(cli("key", "--state", str(state)))
        assert (state / "state.json").read_text() == damaged
    (state / "state.json").unlink()
    assert "no witness state" in one_line(cli("key", "--state", str(state)))


def test_checkpoints_at_least_every_ten_seconds_while_entries_arrive(tmp_path: Path) -> None:
    """The window in which a tail can vanish unseen is bounded by this interval (README)."""
    seconds = Settings().audit_checkpoint_seconds
    assert seconds == 10.0
    settings = dataclasses.replace(
        Settings(), database_url=database_url("citygrid_interval"), data_dir=tmp_path
    )
    db.drop_database(settings)
    db.ensure_database(settings)
    try:
        with db.connect(settings) as conn:
            migrate.upgrade(conn, settings)
        key = signer(settings.pki_dir)

        def arrive(last_checkpoint_age: float | None) -> list[int]:
            with db.transaction(settings) as conn:
                if last_checkpoint_age is not None:  # as if that much time had passed
                    conn.execute(
                        "UPDATE audit_tree SET checkpoint_at = now() - make_interval(secs => %s)",
                        (last_checkpoint_age,),
                    )
                append(conn, [Entry(action="whoami")], key, every=1000, seconds=seconds)
                return [s for (s,) in conn.execute("SELECT size FROM audit_checkpoint")]

        assert arrive(None) == [1]  # the first entry of a log is signed at once
        assert arrive(seconds - 1) == [1]
        assert arrive(seconds + 0.5) == [1, 3]
    finally:
        db.drop_database(settings)


# ---------------------------------------------------------------- an install and its witness


@dataclasses.dataclass
class Install:
    settings: Settings
    server: Server
    certs: Path
    state: Path

    @property
    def ca(self) -> Path:
        return self.settings.pki_dir / "ca.crt"

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), env=dict(self.server.env))

    def verify(self) -> Result:
        return self.cli("audit", "verify")

    def witness(self) -> Result:
        return self.cli(
            "audit",
            "witness",
            "run",
            "--state",
            str(self.state),
            "--server",
            f"https://127.0.0.1:{self.server.port}",
            "--cert",
            str(self.certs / f"{OFFICER}.crt"),
            "--key",
            str(self.certs / f"{OFFICER}.key"),
            "--ca",
            str(self.ca),
        )

    def witnessed_size(self) -> int:
        return int(json.loads((self.state / "state.json").read_text())["size"])

    def fill(self, n: int, every: int = 100) -> None:
        """Entries as the gateway writes them, in batches of 10: a checkpoint every `every`."""
        key = signer(self.settings.pki_dir)
        with db.transaction(self.settings) as conn:
            for start in range(0, n, 10):
                batch = [
                    Entry(action="tiles.read", account="wt-viewer", resource=f"tile {i}")
                    for i in range(start, min(n, start + 10))
                ]
                append(conn, batch, key, every=every, seconds=3600)

    def intrude(self, cut: int, drop_checkpoints_from: int | None = None) -> None:
        """What an intruder with superuser rights does to hide entries from `cut` on: delete
        them and the checkpoints above the cut, and rewrite the tree state to match, so the
        server goes on appending as if nothing happened."""
        sequenced(self.settings.database_url)  # the witness's own requests are in the tree
        with psycopg.connect(self.settings.database_url) as conn:  # one transaction
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute("SELECT 1 FROM audit_tree FOR UPDATE")  # the sequencer waits meanwhile
            conn.execute("DELETE FROM audit_entry WHERE leaf_index >= %s", (cut,))
            conn.execute(
                "DELETE FROM audit_checkpoint WHERE size > %s",
                (cut if drop_checkpoints_from is None else drop_checkpoints_from,),
            )
            leaves = [
                bytes(h)
                for (h,) in conn.execute("SELECT leaf_hash FROM audit_entry ORDER BY leaf_index")
            ]
            size, frontier = tree.extend(0, [], leaves)
            last = conn.execute("SELECT coalesce(max(size), 0) FROM audit_checkpoint").fetchone()
            assert last is not None
            conn.execute(
                "UPDATE audit_tree SET size = %s, frontier = %s, checkpoint_size = %s,"
                " checkpoint_at = now()",
                (size, frontier, last[0]),
            )


def _setup(tmp: Path) -> tuple[Settings, Path, str]:
    settings = dataclasses.replace(
        Settings(), database_url=database_url("citygrid_witness"), data_dir=tmp / "var"
    )
    db.drop_database(settings)
    db.ensure_database(settings)
    with db.connect(settings) as conn:
        migrate.upgrade(conn, settings)
    out = tmp / "certs"
    out.mkdir()
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    with db.transaction(settings) as conn:
        accounts.add(conn, OFFICER, ["security_officer"])
        certs.issue(conn, store, SECRET.encode(), OFFICER, pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    env = {"CITYGRID_DATABASE_URL": settings.database_url, "CITYGRID_DATA_DIR": str(tmp / "var")}
    # The security office reads the log key's fingerprint once, out of band, and makes its
    # witness on its own machine; the server is then configured with the witness's key.
    printed = CliRunner().invoke(main, ["audit", "key", "--fingerprint"], env=env)
    assert printed.exit_code == 0, printed.output
    made = CliRunner().invoke(
        main,
        [
            "audit",
            "witness",
            "init",
            "--state",
            str(tmp / "witness"),
            "--name",
            WITNESS,
            "--log-fingerprint",
            printed.output.strip(),
        ],
    )
    assert made.exit_code == 0, made.output
    return settings, out, made.output.strip()


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    """A fresh install per test: each attack leaves its log broken for good."""
    settings, out, vkey = _setup(tmp_path)
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
            "CITYGRID_AUDIT_CHECKPOINT_ENTRIES": "5",
            "CITYGRID_AUDIT_WITNESSES": vkey,
        },
        workers=1,
    )
    try:
        server.wait_ready()
        yield Install(settings, server, out, tmp_path / "witness")
    finally:
        server.stop()
        db.drop_database(settings)


def _refused(result: Result, *words: str) -> None:
    assert result.exit_code == 3, result.output
    assert "WITNESS REFUSES" in result.output, result.output
    for word in words:
        assert word in result.output, result.output


def _truncation(result: Result, size: int) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "TRUNCATED" in lines[0], result.output
    assert f"below the size {size} that witness {WITNESS} cosigned" in lines[0], lines


def test_consistent_growth_is_cosigned_and_stored(install: Install) -> None:
    install.fill(30, every=10)
    first = install.witness()
    assert first.exit_code == 0, first.output
    size1 = install.witnessed_size()
    assert size1 >= 30
    install.fill(200, every=10)
    second = install.witness()
    assert second.exit_code == 0, second.output
    size2 = install.witnessed_size()
    assert size2 > size1 + 200 - 1
    sequenced(install.settings.database_url)
    with psycopg.connect(install.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT witness, size, line FROM audit_cosignature ORDER BY size"
        ).fetchall()
        actions = [
            a
            for (a,) in conn.execute(
                "SELECT action FROM audit_entry WHERE account = %s ORDER BY leaf_index", (OFFICER,)
            )
        ]
    assert [(w, s) for w, s, _ in rows] == [(WITNESS, size1), (WITNESS, size2)]
    assert all(line.startswith(f"\u2014 {WITNESS} ") for _, _, line in rows)
    assert "audit.cosign" in actions  # the witness's own requests are audited too
    verified = install.verify()
    assert verified.exit_code == 0, verified.output
    assert f"cosigned up to size {size2} by {WITNESS}" in verified.output
    # Nothing new but its own requests' entries: another run cosigns again, consistently.
    assert install.witness().exit_code == 0
    assert install.witnessed_size() >= size2


def test_deleted_tail_after_a_witnessed_checkpoint(install: Install) -> None:
    """The issue's first attack: before witnesses, `ok: 12530 entries`."""
    install.fill(30, every=10)
    assert install.witness().exit_code == 0
    cosigned = install.witnessed_size()
    install.intrude(cosigned - 5)
    _truncation(install.verify(), cosigned)
    _refused(install.witness(), "ROLLBACK", f"the {cosigned} this witness already cosigned")
    # It stays refused, however the log goes on.
    install.fill(3, every=10)
    _refused(install.witness())
    assert "ROLLBACK" in (install.state / "refusals.log").read_text()


def test_deleted_entries_across_a_checkpoint_and_later_checkpoints(install: Install) -> None:
    """The issue's second attack: 600 entries across a checkpoint, the later checkpoints
    removed; before witnesses, `ok: 11930 entries, 18 checkpoints`."""
    install.fill(700, every=100)
    assert install.witness().exit_code == 0
    cosigned = install.witnessed_size()
    install.intrude(cosigned - 600)
    _truncation(install.verify(), cosigned)
    _refused(install.witness(), "ROLLBACK")


def test_deleted_checkpoints_alone(install: Install) -> None:
    install.fill(40, every=10)
    assert install.witness().exit_code == 0
    cosigned = install.witnessed_size()
    sequenced(install.settings.database_url)  # the witness's own requests are in the tree
    with psycopg.connect(install.settings.database_url) as conn:  # one transaction
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("SELECT 1 FROM audit_tree FOR UPDATE")  # the sequencer waits meanwhile
        conn.execute("DELETE FROM audit_checkpoint WHERE size > 20")
        # The tree's state names its own size as signed: the server's sequencer, which signs
        # a checkpoint once the tree has grown past the last one, has nothing to sign again
        # before the log is verified (with 20 there, it soon signed one over everything).
        conn.execute("UPDATE audit_tree SET checkpoint_size = size, checkpoint_at = now()")
    result = install.verify()
    assert result.exit_code == 1, result.output
    assert "TRUNCATED: the newest checkpoint is at size 20" in result.output
    assert f"below the size {cosigned}" in result.output
    _refused(install.witness())


def test_rewritten_tree_state_that_grows_again(install: Install) -> None:
    """The tail is cut, the tree state rewritten, and the log refilled past the cosigned
    size: the sizes look right, the tree does not."""
    install.fill(60, every=10)
    assert install.witness().exit_code == 0
    cosigned = install.witnessed_size()
    install.intrude(cosigned - 15)
    install.fill(100, every=10)  # signed by the server's own key: the intruder needs none
    result = install.verify()
    assert result.exit_code == 1, result.output
    assert f"the tree of size {cosigned} differs from the one witness {WITNESS} cosigned" in (
        result.output
    )
    refused = install.witness()
    _refused(refused)
    assert "INCONSISTENT" in refused.output or f"checkpoint of size {cosigned}" in refused.output


def test_cosignatures_are_checked_when_posted(install: Install, tmp_path: Path) -> None:
    install.fill(12, every=10)
    with psycopg.connect(install.settings.database_url) as conn:
        row = conn.execute("SELECT note FROM audit_checkpoint WHERE size = 10").fetchone()
    assert row is not None
    note = str(row[0])
    officer = (install.certs / f"{OFFICER}.crt", install.certs / f"{OFFICER}.key")

    def post(text: str) -> tuple[int, dict[str, str]]:
        reply = request(
            install.server.port,
            "/audit/cosignatures",
            install.ca,
            *officer,
            method="POST",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"checkpoint": text}).encode(),
        )
        return reply.status, reply.json()

    now = int(dt.datetime.now(dt.UTC).timestamp())
    stranger = Ed25519PrivateKey.generate()  # a key the server was never told of
    status, body = post(cosignature.cosign(note, stranger, WITNESS, now))
    assert status == 400 and "no cosignature by a configured witness" in body["message"], body
    # The real witness key, but over a checkpoint the log never signed.
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(
        (install.state / "witness-ed25519.key").read_bytes(), None
    )
    assert isinstance(key, Ed25519PrivateKey)
    fake = checkpoint.sign(
        checkpoint.Checkpoint(checkpoint.ORIGIN, 10, bytes(32)), Ed25519PrivateKey.generate()
    )
    status, body = post(cosignature.cosign(fake, key, WITNESS, now))
    assert status == 400 and "no signature by citygrid-audit" in body["message"], body
    # A genuine cosignature whose time was altered.
    genuine = cosignature.cosign(note, key, WITNESS, now)
    status, body = post(genuine.replace(genuine.rsplit(" ", 1)[1][:8], "AAAAAAAA", 1))
    assert status == 400, body
    with psycopg.connect(install.settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM audit_cosignature").fetchone() == (0,)
    status, body = post(genuine)
    assert status == 201 and body == {"size": 10, "witnesses": [WITNESS]}, body
    with psycopg.connect(install.settings.serving_database_url) as app:
        for sql in ("UPDATE audit_cosignature SET size = 1", "DELETE FROM audit_cosignature"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)
            app.rollback()
