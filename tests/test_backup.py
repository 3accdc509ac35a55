"""Backups: `citygrid backup create` on a serving install, `verify`, and `restore` into an
empty database and data directory, from which the same people get in with the same
certificates and the audit log verifies."""

from __future__ import annotations

import dataclasses
import re
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import backup, db
from mapserver.cli import main
from mapserver.settings import Settings

from .app_client import Install
from .conftest import database_url, demo_database
from .evidence import checkpoint
from .sequenced import sequenced


@dataclasses.dataclass
class Source:
    install: Install
    settings: Settings


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    settings = demo_database("citygrid_backup", tmp_path_factory.mktemp("backup-var"))
    install = Install(settings, tmp_path_factory.mktemp("backup-certs"))
    install.account("bk-viewer", ["viewer"], "street-001")
    install.account("bk-officer", ["security_officer"])
    for _ in range(3):  # entries in the log
        assert install.client("bk-viewer").get("/auth/whoami").status_code == 200
    (settings.tile_dir / "topo500" / "9").mkdir(parents=True, exist_ok=True)
    (settings.tile_dir / "topo500" / "9" / "x.png").write_bytes(b"a rendered tile")
    sequenced(settings.database_url)
    checkpoint(settings)
    yield Source(install, settings)
    install.close()
    db.drop_database(settings)


def _cli(settings: Settings, *args: str) -> Any:
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
    }
    return CliRunner().invoke(main, list(args), env=env)


def _count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]  # noqa: S608


def test_roles_are_those_the_migrations_make() -> None:
    root = Path(__file__).parent.parent / "mapserver" / "migrations"
    made = {m for f in root.glob("*.sql") for m in re.findall(r"CREATE ROLE (\w+)", f.read_text())}
    assert made == set(backup.ROLES)


def test_a_backup_restores_into_a_new_install(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "backup"
    made = _cli(source.settings, "backup", "create", str(out))
    assert made.exit_code == 0, made.output
    manifest = backup.verify(out)
    assert manifest.checkpoint is not None and manifest.checkpoint["size"] >= 3
    assert re.match(rf"{out}: database citygrid_backup\w* at 0042_", made.output), made.output
    # Owner-only: it holds the CA key and the checkpoint key.
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    with tarfile.open(out / backup.DATA) as tar:
        names = tar.getnames()
    assert "data/pki" in names and not any(n.startswith(("data/tiles", "data/run")) for n in names)
    assert not any(n.startswith("data/audit-spool") for n in names)
    assert _cli(source.settings, "backup", "verify", str(out)).output.startswith(f"{out}: intact")

    target = dataclasses.replace(
        source.settings, database_url=database_url("citygrid_restored"), data_dir=tmp_path / "var"
    )
    db.drop_database(target)
    try:
        restored = _cli(target, "backup", "restore", str(out))
        assert restored.exit_code == 0, restored.output
        assert "a witness that cosigned a larger one will report it as cut" in restored.output
        for table in ("account", "certificate", "signed_action", "unit_grid", "component"):
            assert _count(target, table) == _count(source.settings, table), table
        assert _count(target, "audit_entry") >= manifest.checkpoint["size"]
        verified = _cli(target, "audit", "verify")
        assert verified.exit_code == 0, verified.output
        # The same person gets in with the same certificate, checked against the restored CA.
        again = Install(target, tmp_path / "certs")
        try:
            again.der["bk-viewer"] = source.install.der["bk-viewer"]
            who = again.client("bk-viewer").get("/auth/whoami")
            assert who.status_code == 200 and who.get_json()["account"] == "bk-viewer"
        finally:
            again.close()

        # Never over an install: the database and the data directory are no longer empty.
        twice = _cli(target, "backup", "restore", str(out))
        assert twice.exit_code == 1 and "is not empty" in twice.output
        assert len(twice.output.splitlines()) == 1
    finally:
        db.drop_database(target)


def test_a_changed_backup_is_refused(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    with (out / backup.DATA).open("ab") as fh:
        fh.write(b"\0")
    checked = _cli(source.settings, "backup", "verify", str(out))
    assert checked.exit_code == 1
    said = f"{out / backup.DATA} is not the file the backup made (its SHA-256 differs)"
    assert checked.output == f"citygrid: error: {said}\n"
    target = dataclasses.replace(
        source.settings, database_url=database_url("citygrid_unrestored"), data_dir=tmp_path / "v"
    )
    refused = _cli(target, "backup", "restore", str(out))
    assert refused.exit_code == 1 and "SHA-256 differs" in refused.output
    with psycopg.connect(db.admin_conninfo(target)) as conn:  # nothing made
        assert not conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'citygrid_unrestored'"
        ).fetchone()
    assert not target.data_dir.exists()
    # Into a directory that holds something: refused, and nothing written there.
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("kept")
    busy = _cli(source.settings, "backup", "create", str(tmp_path / "full"))
    assert busy.exit_code == 1 and "is not an empty directory" in busy.output
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]


def test_a_data_directory_reached_by_a_link_is_backed_up_whole(
    source: Source, tmp_path: Path
) -> None:
    """A data directory given as a symbolic link is archived as the directory, not as the
    link (which held nothing); one without the install's keys makes no backup at all."""
    link = tmp_path / "var-link"
    link.symlink_to(source.settings.data_dir)
    linked = dataclasses.replace(source.settings, data_dir=link)
    out = tmp_path / "linked"
    assert _cli(linked, "backup", "create", str(out)).exit_code == 0
    with tarfile.open(out / backup.DATA) as tar:
        assert set(backup.REQUIRED) <= set(tar.getnames())
    bare = dataclasses.replace(source.settings, data_dir=tmp_path / "empty-var")
    (tmp_path / "empty-var").mkdir()
    made = _cli(bare, "backup", "create", str(tmp_path / "none"))
    assert made.exit_code == 1 and "lacks pki/audit-ed25519.key, pki/ca.crt" in made.output
    assert not any((tmp_path / "none").iterdir())  # no dump left behind without its keys
    inside = _cli(source.settings, "backup", "create", str(source.settings.data_dir / "b"))
    assert inside.exit_code == 1 and "inside the data directory" in inside.output


def test_no_restore_into_a_database_that_holds_tables(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    target = dataclasses.replace(
        source.settings, database_url=database_url("citygrid_occupied"), data_dir=tmp_path / "v"
    )
    db.drop_database(target)
    db.ensure_database(target)
    try:
        with psycopg.connect(target.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (note text)")
        refused = _cli(target, "backup", "restore", str(out))
        assert refused.exit_code == 1 and "is not empty" in refused.output
        assert not target.data_dir.exists()
    finally:
        db.drop_database(target)
