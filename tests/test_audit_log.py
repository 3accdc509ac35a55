"""The tamper-evident audit log in PostgreSQL: verify, tampering, truncation, the app role."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner

from audit import checkpoint, merkle
from audit.keys import signer, verifier
from audit.record import Entry, append, checkpoint_now
from audit.verify import verify
from mapserver import db
from mapserver.cli import main
from mapserver.settings import Settings

from .conftest import empty_database


@pytest.fixture
def log(tmp_path) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    s = empty_database("citygrid_audit", tmp_path)
    yield s
    db.drop_database(s)


def _fill(settings: Settings, n: int, every: int = 10) -> None:
    key = signer(settings.pki_dir)
    with db.transaction(settings) as conn:
        for i in range(n):
            append(
                conn,
                [
                    Entry(
                        action="tiles.read",
                        account=f"user{i % 3}",
                        resource=f"tile topo500/8/{i}/1",
                        status=200,
                        detail={"note": "line\nbreak" if i == 3 else i},
                    )
                ],
                key,
                every=every,
                seconds=3600,
            )


def _cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        main,
        list(args),
        env={
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
        },
    )


def _superuser_sql(settings: Settings, sql: str) -> None:
    """What an intruder with superuser rights could do: switch triggers off and write."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql)


def test_verify_passes_on_an_untouched_log(log: Settings) -> None:
    _fill(log, 35)
    result = _cli(log, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: 35 entries, 4 checkpoints")
    with db.connect(log) as conn:
        note = conn.execute(
            "SELECT note FROM audit_checkpoint ORDER BY size DESC LIMIT 1"
        ).fetchone()[0]
    signed = checkpoint.verify(note, verifier(log.pki_dir))
    assert signed.size == 30 and signed.origin == checkpoint.ORIGIN
    assert note.splitlines()[0] == "citygrid.audit/v1" and "\n\n\u2014 citygrid-audit " in note


def test_altered_row_is_named(log: Settings) -> None:
    _fill(log, 25)
    with db.connect(log) as conn:
        victim = conn.execute("SELECT id FROM audit_entry WHERE leaf_index = 12").fetchone()[0]
    _superuser_sql(log, f"UPDATE audit_entry SET account = 'someone-else' WHERE id = {victim}")
    result = _cli(log, "audit", "verify")
    assert result.exit_code == 1
    assert f"entry {victim} (leaf 12) was altered" in result.output


def test_deleted_tail_breaks_the_checkpoint(log: Settings) -> None:
    _fill(log, 25)  # checkpoints at 10 and 20
    _superuser_sql(log, "DELETE FROM audit_entry WHERE leaf_index >= 15")
    _superuser_sql(log, "UPDATE audit_tree SET size = 15")
    result = _cli(log, "audit", "verify")
    assert result.exit_code == 1
    assert "checkpoint at size 20 no longer matches: only 15 entries remain" in result.output


def test_rewritten_history_breaks_signatures(log: Settings) -> None:
    """Rewriting an entry and its leaf hash consistently still contradicts the checkpoints."""
    _fill(log, 12)
    from audit import entry as entry_mod

    with db.connect(log) as conn:
        row = conn.execute(
            "SELECT id, at, request_id, account, role, cert_serial, cert_sha256,"
            " client_addr, method, resource, action, outcome, status, bytes,"
            " latency_ms, detail FROM audit_entry WHERE leaf_index = 2"
        ).fetchone()
    values = dict(zip(["id", *entry_mod.FIELDS], row, strict=True))
    values["account"] = "nobody"
    forged = entry_mod.leaf(values).hex()
    _superuser_sql(
        log,
        f"UPDATE audit_entry SET account = 'nobody', leaf_hash = '\\x{forged}'"
        f" WHERE id = {values['id']}",
    )
    result = _cli(log, "audit", "verify")
    assert result.exit_code == 1
    assert "checkpoint at size 10 no longer matches the entries" in result.output


def test_app_role_cannot_change_the_audit(log: Settings) -> None:
    _fill(log, 3)
    with psycopg.connect(log.serving_database_url, autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone()[0] == "citygrid_app"
        for sql in (
            "UPDATE audit_entry SET account = 'x'",
            "DELETE FROM audit_entry",
            "TRUNCATE audit_entry",
            "UPDATE audit_checkpoint SET note = ''",
            "DELETE FROM audit_checkpoint",
            "TRUNCATE audit_checkpoint",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)
        # It may append (through the tree) and read.
        with app.transaction():
            append(app, [Entry(action="whoami")], signer(log.pki_dir))
        assert app.execute("SELECT count(*) FROM audit_entry").fetchone()[0] == 4
    # The triggers refuse even the owner unless they are switched off.
    with psycopg.connect(log.database_url, autocommit=True) as owner:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            owner.execute("DELETE FROM audit_entry")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            owner.execute("TRUNCATE audit_entry")
    assert _cli(log, "audit", "verify").exit_code == 0


def test_consistency_between_checkpoints(log: Settings) -> None:
    _fill(log, 7)
    key = signer(log.pki_dir)
    with db.transaction(log) as conn:
        checkpoint_now(conn, key)
    _fill(log, 30)
    with db.transaction(log) as conn:
        checkpoint_now(conn, key)
    with db.connect(log) as conn:
        first, last = conn.execute(
            "SELECT root FROM audit_checkpoint WHERE size IN (7, 37) ORDER BY size"
        ).fetchall()
        leaves = [
            bytes(h)
            for (h,) in conn.execute(
                "SELECT leaf_hash FROM audit_entry ORDER BY leaf_index"
            ).fetchall()
        ]
    old, new = bytes(first[0]), bytes(last[0])
    merkle.verify_consistency(7, 37, old, new, merkle.consistency_proof(leaves, 7))
    dropped = leaves[:3] + leaves[4:]
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(
            7, 36, old, merkle.root(dropped), merkle.consistency_proof(dropped, 7)
        )
    assert verify(psycopg.connect(log.database_url), verifier(log.pki_dir)).ok


def test_cli_tail_search_export(log: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    _fill(log, 12)
    tail = _cli(log, "audit", "tail", "-n", "5")
    assert tail.exit_code == 0 and len(tail.output.splitlines()) == 5
    found = _cli(log, "audit", "search", "--account", "user1", "--action", "tiles.read")
    lines = found.output.splitlines()
    assert found.exit_code == 0 and lines and all("user1" in line for line in lines)
    out = tmp_path / "audit.json"
    exported = _cli(log, "audit", "export", "--format", "json", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    doc = json.loads(out.read_text())
    assert doc["checkpoint"]["size"] >= 10 and len(doc["entries"]) == 12
    proven = [e for e in doc["entries"] if e["inclusion"]]
    assert proven and all(e["inclusion"]["tree_size"] == doc["checkpoint"]["size"] for e in proven)
    csv_out = tmp_path / "audit.csv"
    assert _cli(log, "audit", "export", "--format", "csv", "-o", str(csv_out)).exit_code == 0
    text = csv_out.read_text()
    # A header, the 12 entries and the JSON export's own entry; the newline stored in one
    # entry's detail is escaped, so it cannot start a line of its own.
    assert len(text.splitlines()) == 1 + 13
    assert "line\\nbreak" in text


def test_cli_pages_back_and_exports_every_entry(log: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A search shows a page and says how to see the one before; an export holds every
    matching entry, however many pages of the log's listing they take (it held the newest
    100 before, and said only '100 entries')."""
    import base64
    import csv
    import json

    _fill(log, 1203, every=500)  # checkpoints at 500 and 1000
    first = _cli(log, "audit", "search", "--limit", "500")
    shown = [int(line.split()[0]) for line in first.stdout.splitlines()]
    assert first.exit_code == 0 and shown == list(range(703, 1203)), shown[:3]
    assert first.stderr.strip() == "(older entries may match: add --before 703)"
    second = _cli(log, "audit", "search", "--limit", "500", "--before", "703")
    assert [int(line.split()[0]) for line in second.stdout.splitlines()] == list(range(203, 703))
    last = _cli(log, "audit", "search", "--limit", "500", "--before", "203")
    assert len(last.stdout.splitlines()) == 203 and last.stderr == ""

    out = tmp_path / "all.csv"
    exported = _cli(log, "audit", "export", "--format", "csv", "-o", str(out))
    assert exported.exit_code == 0 and exported.stdout == f"{out}: 1203 entries\n"
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [int(r["leaf_index"]) for r in rows] == list(range(1202, -1, -1))
    assert not list(tmp_path.glob(".*.part"))

    out = tmp_path / "user1.json"
    exported = _cli(log, "audit", "export", "--account", "user1", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    doc = json.loads(out.read_text())
    indexes = [e["entry"]["leaf_index"] for e in doc["entries"]]
    assert indexes == list(range(1201, -1, -3))  # user1: every third, newest first
    size, root = doc["checkpoint"]["size"], base64.b64decode(doc["checkpoint"]["root"])
    assert size == 1000 and sum(1 for e in doc["entries"] if e["inclusion"]) == 333
    for e in doc["entries"]:
        if e["inclusion"]:
            proof = [base64.b64decode(p) for p in e["inclusion"]["proof"]]
            leaf = base64.b64decode(e["entry"]["leaf_hash"])
            merkle.verify_inclusion(leaf, e["entry"]["leaf_index"], size, proof, root)

    newest = _cli(log, "audit", "export", "--limit", "700", "-o", str(out))
    assert newest.exit_code == 0 and newest.stdout == f"{out}: 700 entries\n"
    assert len(json.loads(out.read_text())["entries"]) == 700
