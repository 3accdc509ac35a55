"""Backups: `citygrid backup create` on a serving install, `verify`, and `restore` into an
empty database and data directory, from which the same people get in with the same
certificates and the audit log verifies."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg import conninfo, sql

from audit.keys import load_signer
from mapserver import backup, db, migrate, restore
from mapserver.cli import main
from mapserver.errors import CityGridError
from mapserver.settings import Settings

from . import pg_cluster
from .app_client import Install
from .conftest import BASE_URL, database_url, demo_database
from .evidence import checkpoint
from .sequenced import sequenced
from .tls import free_port


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


@pytest.fixture(scope="module")
def new_machine() -> Iterator[pg_cluster.Cluster]:
    """A cluster of its own, as on the machine a backup is restored onto: none of the roles
    an install makes exist there (1-2 s to make, a fifth of one to stop)."""
    try:
        with pg_cluster.throwaway_cluster(pg_cluster.binaries(BASE_URL)) as cluster:
            yield cluster
    except pg_cluster.Unavailable as exc:
        pytest.skip(f"no throwaway PostgreSQL cluster: {exc}")


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
    assert made == set(restore.ROLES)


def test_a_backup_restores_into_a_new_install(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "backup"
    made = _cli(source.settings, "backup", "create", str(out))
    assert made.exit_code == 0, made.output
    manifest = backup.verify(out).manifest
    assert manifest.checkpoint is not None and manifest.checkpoint["size"] >= 3
    newest = f"{migrate.available()[-1].version:04d}_"
    assert re.match(rf"{out}: database citygrid_backup\w* at {newest}", made.output), made.output
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


_MAIN_TABLES = ("account", "certificate", "signed_action", "unit_grid", "component", "street")


def test_a_backup_restores_onto_a_new_cluster(
    source: Source, new_machine: pg_cluster.Cluster, tmp_path: Path
) -> None:
    """On a new machine's server the roles and memberships the migrations made (cluster-wide,
    so in no dump) are missing: the restore makes them, and the serving roles read what they
    read on the install, no more, the audit log verifies and the same person gets in."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    with psycopg.connect(new_machine.url, autocommit=True) as admin:
        found = admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'citygrid%'")
        assert found.fetchall() == []
        available = "SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'"
        assert admin.execute(available).fetchone()  # installed; the dump creates it
        admin.execute("CREATE DATABASE citygrid")  # as `createdb citygrid` there
    target = dataclasses.replace(
        source.settings, database_url=new_machine.url_of("citygrid"), data_dir=tmp_path / "var"
    )
    try:
        restored = _cli(target, "backup", "restore", str(out))
        assert restored.exit_code == 0, restored.output
        said = f"Made the roles {', '.join(restore.ROLES)} on this cluster, without passwords"
        assert said in restored.output
        with psycopg.connect(target.database_url, autocommit=True) as conn:
            made = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname LIKE 'citygrid%'"
            ).fetchall()
            assert sorted(r for (r,) in made) == sorted(restore.ROLES)
            granted = conn.execute(
                "SELECT g.rolname, m.rolname FROM pg_auth_members a"
                " JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member"
            ).fetchall()
            assert set(restore.MEMBERSHIPS) <= set(granted)
            # Default privileges came with the dump: a later migration's table is the app's.
            with conn.transaction(force_rollback=True):
                conn.execute("CREATE TABLE a_later_migration (note text)")
                assert conn.execute(
                    "SELECT has_table_privilege('citygrid_app', 'a_later_migration', 'SELECT')"
                ).fetchone() == (True,)
        for table in _MAIN_TABLES:
            assert _count(target, table) == _count(source.settings, table), table
        log = backup.verify(out).manifest.checkpoint
        assert log is not None and _count(target, "audit_entry") >= log["size"]

        with psycopg.connect(target.serving_database_url) as app:
            assert app.execute("SELECT current_user").fetchone() == ("citygrid_app",)
            accounts = app.execute("SELECT count(*) FROM account").fetchone()
            assert accounts == (_count(source.settings, "account"),)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute("UPDATE audit_entry SET action = action")
        with psycopg.connect(target.component_editor_database_url) as editor:
            # city_case.closed_at: the map role's, read through the membership only.
            editor.execute("SELECT count(closed_at) FROM city_case")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                editor.execute("SELECT count(*) FROM account")
        with psycopg.connect(target.map_reader_database_url) as map_reader:
            assert map_reader.execute("SELECT count(*) FROM unit_grid").fetchone() == (
                _count(source.settings, "unit_grid"),
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                map_reader.execute("UPDATE component SET name = name")

        verified = _cli(target, "audit", "verify")
        assert verified.exit_code == 0, verified.output
        again = Install(target, tmp_path / "certs")  # the app's pools, as citygrid_app
        try:
            again.der["bk-viewer"] = source.install.der["bk-viewer"]
            who = again.client("bk-viewer").get("/auth/whoami")
            assert who.status_code == 200 and who.get_json()["account"] == "bk-viewer"
        finally:
            again.close()
    finally:
        db.drop_database(target)


def test_a_restore_by_a_role_that_may_not_make_roles_is_refused_in_one_line(
    source: Source, new_machine: pg_cluster.Cluster, tmp_path: Path
) -> None:
    """The install's roles missing from a new cluster, a restore run by an owner that may
    create databases but not roles fails before pg_restore, in one line that says to run it
    as a superuser, and leaves neither the database it made nor the data directory."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    with psycopg.connect(new_machine.url, autocommit=True) as admin:
        for role in restore.ROLES:  # as new, whichever test ran first
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute("CREATE ROLE install_owner LOGIN CREATEDB")
    url = new_machine.url_of("citygrid_owned").replace("//postgres@", "//install_owner@")
    target = dataclasses.replace(source.settings, database_url=url, data_dir=tmp_path / "var")
    try:
        refused = _cli(target, "backup", "restore", str(out))
        assert refused.exit_code == 1 and refused.output == (
            "citygrid: error: the role install_owner may not make the install's roles on this"
            " cluster (permission denied to create role): a restore makes roles and the PostGIS"
            " extension, so run it as a superuser\n"
        )
        assert not target.data_dir.exists() and not _left_beside(tmp_path)
        with psycopg.connect(new_machine.url) as admin:
            assert not admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'citygrid_owned'"
            ).fetchone()
            assert not admin.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = ANY(%s)", (list(restore.ROLES),)
            ).fetchone()
    finally:
        with psycopg.connect(new_machine.url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS citygrid_owned WITH (FORCE)")
            admin.execute("DROP ROLE install_owner")


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
    assert not (tmp_path / "none").exists()  # no dump left behind without its keys
    dated = _cli(bare, "backup", "create", "--under", str(tmp_path / "nightly"))
    assert dated.exit_code == 1 and not any((tmp_path / "nightly").iterdir())  # no empty one
    given = tmp_path / "given"
    given.mkdir()
    assert _cli(bare, "backup", "create", str(given)).exit_code == 1
    assert given.is_dir() and not any(given.iterdir())  # a directory it did not make stays
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


def _target(source: Source, tmp_path: Path, name: str) -> Settings:
    target = dataclasses.replace(
        source.settings, database_url=database_url(name), data_dir=tmp_path / "var"
    )
    db.drop_database(target)
    return target


def _dbname(settings: Settings) -> str:
    return str(conninfo.conninfo_to_dict(settings.database_url)["dbname"])


def _left_beside(tmp_path: Path) -> list[str]:
    return [p.name for p in tmp_path.iterdir() if ".restoring-" in p.name]


def test_a_failed_pg_restore_leaves_nothing_and_runs_again(source: Source, tmp_path: Path) -> None:
    """pg_restore meets a view where the dump has a table: the restore fails in its one
    transaction, the data directory is not written, and once the view is gone it runs."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    target = _target(source, tmp_path, "citygrid_conflicting")
    db.ensure_database(target)
    try:
        with psycopg.connect(target.database_url, autocommit=True) as conn:
            conn.execute("CREATE VIEW account AS SELECT 1 AS left_by_someone")
        failed = _cli(target, "backup", "restore", str(out))
        assert failed.exit_code == 1, failed.output
        assert failed.output.startswith("citygrid: error: pg_restore failed: ")
        assert len(failed.output.splitlines()) == 1 and '"account" already exists' in failed.output
        assert not target.data_dir.exists() and not _left_beside(tmp_path)
        assert (
            _count(
                target,
                "pg_class WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace",
            )
            == 0
        )  # the one transaction rolled back
        with psycopg.connect(target.database_url, autocommit=True) as conn:
            conn.execute("DROP VIEW account")
        again = _cli(target, "backup", "restore", str(out))
        assert again.exit_code == 0, again.output
        assert (target.data_dir / "pki" / "ca.crt").is_file() and not _left_beside(tmp_path)
        assert _cli(target, "audit", "verify").exit_code == 0
    finally:
        db.drop_database(target)


def test_a_data_archive_that_cannot_be_extracted_restores_nothing(
    source: Source, tmp_path: Path
) -> None:
    """A data.tar with a member that would land outside the data directory (its manifest
    rewritten to match, unsigned check): refused before pg_restore runs, leaving no database
    and no data directory; the intact archive then restores."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    intact = (out / backup.DATA).read_bytes()
    manifest = (out / backup.MANIFEST).read_bytes()
    with tarfile.open(out / backup.DATA, "a") as tar:
        escaping = tarfile.TarInfo("data/../escaped.txt")
        escaping.size = 4
        tar.addfile(escaping, io.BytesIO(b"out!"))
    doc = json.loads(manifest)
    doc["files"][backup.DATA] = hashlib.sha256((out / backup.DATA).read_bytes()).hexdigest()
    (out / backup.MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    target = _target(source, tmp_path, "citygrid_unextracted")
    try:
        refused = _cli(target, "backup", "restore", str(out))
        assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1
        assert refused.output.startswith(
            f"citygrid: error: {out / backup.DATA} cannot be extracted"
        )
        assert not target.data_dir.exists() and not _left_beside(tmp_path)
        assert not (tmp_path / "escaped.txt").exists()
        with psycopg.connect(db.admin_conninfo(target)) as conn:
            assert not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (_dbname(target),)
            ).fetchone()
        (out / backup.DATA).write_bytes(intact)
        (out / backup.MANIFEST).write_bytes(manifest)
        again = _cli(target, "backup", "restore", str(out))
        assert again.exit_code == 0, again.output
    finally:
        db.drop_database(target)


@pytest.mark.parametrize("existing", [False, True], ids=["database-made", "database-empty"])
def test_a_restore_whose_files_cannot_be_put_in_place_is_undone(
    source: Source, tmp_path: Path, existing: bool
) -> None:
    """Something writes into the data directory while pg_restore runs: the files cannot be
    renamed into place, so what pg_restore committed is taken out again (the database the
    restore made dropped, the empty one it found emptied) and the restore runs again."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    target = _target(source, tmp_path, "citygrid_intruded")
    schemas = "SELECT nspname, nspowner, nspacl::text FROM pg_namespace ORDER BY 1"
    if existing:
        db.ensure_database(target)
        with psycopg.connect(target.database_url) as conn:
            before = conn.execute(schemas).fetchall()

    def intrude(stage: str) -> None:
        if stage == "putting the data directory in place":
            target.data_dir.mkdir()
            (target.data_dir / "notes.txt").write_text("written meanwhile")

    try:
        with pytest.raises(CityGridError, match="could not be put in place"):
            restore.restore(target, out, intrude)
        assert [p.name for p in target.data_dir.iterdir()] == ["notes.txt"]
        assert not _left_beside(tmp_path)
        with psycopg.connect(db.admin_conninfo(target)) as conn:
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (_dbname(target),)
            ).fetchone()
        assert bool(found) == existing
        if existing:
            with psycopg.connect(target.database_url) as conn:
                assert conn.execute(schemas).fetchall() == before
                assert conn.execute("SELECT count(*) FROM pg_extension").fetchone() == (1,)
        (target.data_dir / "notes.txt").unlink()
        again = _cli(target, "backup", "restore", str(out))
        assert again.exit_code == 0, again.output
        assert _cli(target, "audit", "verify").exit_code == 0
    finally:
        db.drop_database(target)


def _latest_entry(settings: Settings, action: str) -> dict[str, Any]:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT detail FROM audit_entry WHERE action = %s ORDER BY id DESC LIMIT 1", (action,)
        ).fetchone()
    assert row is not None
    return dict(row[0])


def test_the_manifest_is_signed_with_the_log_key(source: Source, tmp_path: Path) -> None:
    """`verify --log-key` proves that the install with that log key made the backup; a
    manifest changed since, or another install's key, is refused in one line."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    text = (out / backup.MANIFEST).read_bytes()
    detail = _latest_entry(source.settings, "backup.create")
    assert detail["manifest_sha256"] == hashlib.sha256(text).hexdigest()
    log_key = str(source.settings.pki_dir / "audit-ed25519.pub")
    proved = _cli(source.settings, "backup", "verify", str(out), "--log-key", log_key)
    assert proved.output.startswith(f"{out}: intact, signed by the log key; database ")
    unproved = _cli(source.settings, "backup", "verify", str(out))
    assert unproved.output.startswith(f"{out}: intact, signature not checked (no --log-key); ")

    # Another dump put in, and the manifest rewritten to match it: only the key tells.
    (out / backup.DUMP).write_bytes(b"another database")
    doc = json.loads(text)
    doc["files"][backup.DUMP] = hashlib.sha256(b"another database").hexdigest()
    (out / backup.MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    assert _cli(source.settings, "backup", "verify", str(out)).exit_code == 0
    refused = _cli(source.settings, "backup", "verify", str(out), "--log-key", log_key)
    said = f"{out / backup.MANIFEST} does not match its signature: it was changed after the"
    assert refused.exit_code == 1 and refused.output == f"citygrid: error: {said} backup was made\n"
    target = _target(source, tmp_path, "citygrid_unsigned")
    kept_out = _cli(target, "backup", "restore", str(out), "--log-key", log_key)
    assert kept_out.exit_code == 1 and "does not match its signature" in kept_out.output
    assert not target.data_dir.exists()

    # Another install's key, and a file that is no key.
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (out / backup.MANIFEST).write_bytes(text)
    stranger = _cli(source.settings, "backup", "verify", str(out), "--log-key", str(other))
    assert stranger.exit_code == 1 and stranger.output.endswith(
        "is signed by another key than the log key given\n"
    )
    noise = _cli(source.settings, "backup", "verify", str(out), "--log-key", str(out / "data.tar"))
    assert noise.exit_code == 1 and noise.output.endswith("is not an Ed25519 public key (PEM)\n")
    (out / backup.SIGNATURE).write_text("— citygrid-audit not-base64!\n")
    garbled = _cli(source.settings, "backup", "verify", str(out), "--log-key", log_key)
    assert garbled.exit_code == 1 and "has no signature in manifest.sig" in garbled.output


def test_an_unsigned_backup_of_format_1_still_verifies(source: Source, tmp_path: Path) -> None:
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    doc = json.loads((out / backup.MANIFEST).read_bytes())
    (out / backup.MANIFEST).write_text(json.dumps({**doc, "format": 1}, indent=1) + "\n")
    (out / backup.SIGNATURE).unlink()
    checked = _cli(source.settings, "backup", "verify", str(out))
    assert checked.exit_code == 0 and checked.output.startswith(
        f"{out}: intact, unsigned (format 1"
    )
    log_key = str(source.settings.pki_dir / "audit-ed25519.pub")
    refused = _cli(source.settings, "backup", "verify", str(out), "--log-key", log_key)
    assert refused.exit_code == 1
    assert refused.output == (
        f"citygrid: error: {out / backup.MANIFEST} is unsigned (format 1): no key can prove it\n"
    )
    # A signed format without its signature is damaged, key or not.
    (out / backup.MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
    missing = _cli(source.settings, "backup", "verify", str(out))
    assert missing.output == f"citygrid: error: {out / backup.SIGNATURE} is missing\n"


def _copy(made: Path, to: Path, created_at: str, damaged: bool = False) -> Path:
    """A copy of a backup dated `created_at` (its manifest rewritten: prune checks files
    against manifests, not signatures)."""
    shutil.copytree(made, to)
    doc = json.loads((to / backup.MANIFEST).read_bytes())
    (to / backup.MANIFEST).write_text(json.dumps({**doc, "created_at": created_at}, indent=1))
    if damaged:
        with (to / backup.DATA).open("ab") as fh:
            fh.write(b"\0")
    return to


def test_prune_keeps_the_newest_complete_backups(source: Source, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    made = _cli(source.settings, "backup", "create", "--under", str(root))
    assert made.exit_code == 0, made.output
    (newest,) = root.iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}Z", newest.name) and made.output.startswith(f"{newest}: ")
    oldest = _copy(newest, root / "oldest", "2025-12-31T02:30:00+00:00", damaged=True)
    older = _copy(newest, root / "older", "2026-01-01T02:30:00+00:00")
    kept = _copy(newest, root / "kept", "2026-01-02T02:30:00+00:00")
    damaged = _copy(newest, root / "damaged", "2026-01-03T02:30:00+00:00", damaged=True)
    (root / "under-way").mkdir()  # a backup being written: no manifest yet
    (root / "under-way" / backup.DUMP).write_bytes(b"half a dump")
    (root / "notes.txt").write_text("not a backup")
    (root / "link").symlink_to(kept)

    pruned = _cli(source.settings, "backup", "prune", str(root), "--keep", "2")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.splitlines() == [
        f"removed {oldest}",
        f"removed {older}",
        f"left {damaged}: {damaged / backup.DATA} is not the file the backup made (its SHA-256"
        " differs)",
        f"left {root / 'under-way'}: {root / 'under-way'} holds no manifest.json: not a CityGrid"
        " backup",
        f"{root}: 2 complete backups kept, newest {newest}",
    ]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [newest.name, "kept", "damaged", "under-way", "notes.txt", "link"]
    )
    again = _cli(source.settings, "backup", "prune", str(root), "--keep", "2")
    assert again.exit_code == 0 and "removed" not in again.output

    for args, said in (
        (["--keep", "0"], "Invalid value for '--keep'"),
        (["--keep", "x"], "Invalid value for '--keep'"),
    ):
        bad = _cli(source.settings, "backup", "prune", str(root), *args)
        assert bad.exit_code == 2 and len(bad.output.splitlines()) == 1 and said in bad.output
    nowhere = _cli(source.settings, "backup", "prune", str(tmp_path / "none"), "--keep", "1")
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.output
    both = _cli(source.settings, "backup", "create", str(tmp_path / "b"), "--under", str(root))
    assert both.exit_code == 1 and "not both" in both.output
    neither = _cli(source.settings, "backup", "create")
    assert neither.exit_code == 1 and len(neither.output.splitlines()) == 1


def _own_data_dir(source: Source, tmp_path: Path) -> Settings:
    """The source install with a copy of its data directory, for a test to change."""
    copy = tmp_path / "var-copy"
    shutil.copytree(
        source.settings.data_dir,
        copy,
        symlinks=True,
        ignore=shutil.ignore_patterns(*backup.LEFT_OUT),
    )
    return dataclasses.replace(source.settings, data_dir=copy)


def test_a_backup_reads_the_log_key_and_writes_nothing_beside_it(
    source: Source, tmp_path: Path
) -> None:
    """The nightly unit runs under ProtectSystem=strict: signing the manifest reads the key
    as it is and writes nothing (signer() wrote the public half, or made a key); a key that
    is not one is refused in one line, leaving no backup."""
    settings = _own_data_dir(source, tmp_path)
    public = settings.pki_dir / "audit-ed25519.pub"
    log_key = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(log_key, Ed25519PublicKey)
    public.unlink()
    before = sorted(p.name for p in settings.pki_dir.iterdir())
    out = tmp_path / "backup"
    made = backup.create(settings, out)  # the command's audit entry is signed as any other's
    assert sorted(p.name for p in settings.pki_dir.iterdir()) == before  # no .pub written
    assert backup.verify(out, log_key) == made._replace(signature="checked")

    key = settings.pki_dir / "audit-ed25519.key"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    refused = _cli(settings, "backup", "create", str(tmp_path / "none"))
    assert refused.exit_code == 1 and refused.output == (
        f"citygrid: error: {key} is not an Ed25519 private key (PEM, unencrypted)\n"
    )
    assert not (tmp_path / "none").exists()
    with pytest.raises(CityGridError, match="is missing: this install has no audit log key"):
        load_signer(tmp_path / "no-pki")
    assert not (tmp_path / "no-pki").exists()  # no key made where there was none


def test_a_backup_that_fails_after_its_archive_leaves_nothing(
    source: Source, tmp_path: Path
) -> None:
    """Writing the manifest fails (here its name leads nowhere): the dump, the archive of the
    key files and the signature go, and the directory the backup made; a directory it was
    given stays, empty."""
    out = tmp_path / "nightly" / "20260101T023000Z"
    given = tmp_path / "given"
    given.mkdir()
    for into in (out, given):

        def in_the_way(stage: str, into: Path = into) -> None:
            if stage == "archiving the data directory's key files":
                (into / backup.MANIFEST).symlink_to(tmp_path / "nowhere" / backup.MANIFEST)

        with pytest.raises(FileNotFoundError):
            backup.create(source.settings, into, in_the_way)
    assert not out.exists() and (tmp_path / "nightly").is_dir()
    assert given.is_dir() and list(given.iterdir()) == []


def test_links_in_the_data_directory_are_kept_as_their_files_or_refused(
    source: Source, tmp_path: Path
) -> None:
    """A token key, certificate or CRL that is a link was left out of the backup without a
    word. A symbolic link to a file in the data directory, and a hard link, are archived as
    that file (its bytes and its mode, under the link's name: a restore makes a file there);
    a symbolic link out of the data directory, to nothing, or to a directory is refused,
    naming it, and no backup is left."""
    settings = _own_data_dir(source, tmp_path)
    pki = settings.pki_dir
    (pki / "tokens").mkdir()
    config_key = pki / "tokens" / "key-2026.pem"
    config_key.write_bytes(b"a token key")
    config_key.chmod(0o600)
    (pki / "token.key").symlink_to("tokens/key-2026.pem")  # relative
    (pki / "server-current.crt").symlink_to(pki / "ca.crt")  # absolute, inside
    (pki / "token-hard.key").hardlink_to(config_key)
    out = tmp_path / "backup"
    made = _cli(settings, "backup", "create", str(out))
    assert made.exit_code == 0, made.output
    with tarfile.open(out / backup.DATA) as tar:
        for name, data in (
            ("token.key", b"a token key"),
            ("token-hard.key", b"a token key"),
            ("tokens/key-2026.pem", b"a token key"),
            ("server-current.crt", (pki / "ca.crt").read_bytes()),
        ):
            member = tar.getmember(f"data/pki/{name}")
            assert member.isfile(), name
            assert tar.extractfile(member).read() == data, name  # type: ignore[union-attr]
        assert stat.S_IMODE(tar.getmember("data/pki/token.key").mode) == 0o600
    staging = restore._extracted(out / backup.DATA, tmp_path / "restored" / "var")
    assert (staging / "pki" / "token.key").read_bytes() == b"a token key"
    assert (staging / "pki" / "server-current.crt").read_bytes() == (pki / "ca.crt").read_bytes()
    (tmp_path / "outside.key").write_bytes(b"kept elsewhere")
    for name, target, where in (
        ("elsewhere.key", tmp_path / "outside.key", "out of the data directory"),
        ("gone.crl", pki / "missing.crl", "to nothing"),
        ("old-tokens", pki / "tokens", "to a directory"),
    ):
        (pki / name).symlink_to(target)
        refused = _cli(settings, "backup", "create", str(tmp_path / "refused"))
        assert refused.exit_code == 1 and refused.output == (
            f"citygrid: error: the data directory's pki/{name} is a symbolic link {where}:"
            " a backup keeps the data directory's files; put the file itself there\n"
        )
        assert not (tmp_path / "refused").exists()
        (pki / name).unlink()


def test_a_cluster_that_refuses_mid_restore_is_one_line_naming_what_is_left(
    source: Source, new_machine: pg_cluster.Cluster, tmp_path: Path
) -> None:
    """The cluster stops taking the restoring role's connections after the restore made the
    database: the failure is one line, and so is the database the restore could not drop
    again, named in it; a cluster unreachable from the start is one line too."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    with psycopg.connect(new_machine.url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS restorer")
        admin.execute("CREATE ROLE restorer LOGIN CREATEDB")
    url = new_machine.url_of("citygrid_refused").replace("//postgres@", "//restorer@")
    target = dataclasses.replace(source.settings, database_url=url, data_dir=tmp_path / "var")
    port = conninfo.conninfo_to_dict(url)["port"]

    def refuse(stage: str) -> None:
        if stage == "extracting the data directory beside it":
            with psycopg.connect(new_machine.url, autocommit=True) as admin:
                admin.execute("ALTER ROLE restorer NOLOGIN")

    try:
        with pytest.raises(CityGridError) as failed:
            restore.restore(target, out, refuse)
        said = failed.value.message
        assert "\n" not in said and said.startswith(
            f"database 127.0.0.1:{port}/postgres unavailable: "
        )
        assert said.count('role "restorer" is not permitted to log in') == 2
        assert "; and the database citygrid_refused it made could not be dropped (" in said
        assert said.endswith("): do it by hand before another try")
        assert not target.data_dir.exists() and not _left_beside(tmp_path)
    finally:
        with psycopg.connect(new_machine.url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS citygrid_refused WITH (FORCE)")
            admin.execute("DROP ROLE restorer")

    closed = free_port()
    nowhere = f"postgresql://postgres@127.0.0.1:{closed}/citygrid_nowhere"
    unreachable = dataclasses.replace(target, database_url=nowhere)
    refused = _cli(unreachable, "backup", "restore", str(out))
    assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1, refused.output
    assert refused.output.startswith(f"citygrid: error: database 127.0.0.1:{closed}/citygrid_no")


def test_a_restore_that_cannot_take_out_what_it_put_in_says_so(
    source: Source, new_machine: pg_cluster.Cluster, tmp_path: Path
) -> None:
    """The files cannot be put in place and the empty database the restore found cannot be
    emptied again (the cluster no longer lets the role in): one line with both, the first
    failure first."""
    out = tmp_path / "backup"
    assert _cli(source.settings, "backup", "create", str(out)).exit_code == 0
    with psycopg.connect(new_machine.url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS restorer")
        admin.execute("CREATE ROLE restorer LOGIN SUPERUSER")
        admin.execute("CREATE DATABASE citygrid_half OWNER restorer")
    url = new_machine.url_of("citygrid_half").replace("//postgres@", "//restorer@")
    target = dataclasses.replace(source.settings, database_url=url, data_dir=tmp_path / "var")

    def intrude(stage: str) -> None:
        if stage == "putting the data directory in place":
            target.data_dir.mkdir()
            (target.data_dir / "notes.txt").write_text("written meanwhile")
            with psycopg.connect(new_machine.url, autocommit=True) as admin:
                admin.execute("ALTER ROLE restorer NOLOGIN")

    try:
        with pytest.raises(CityGridError) as failed:
            restore.restore(target, out, intrude)
        said = failed.value.message
        assert "\n" not in said and said.startswith(
            f"the data directory {target.data_dir} could not be put in place ("
        )
        assert "; and what pg_restore put in the database citygrid_half could not be taken" in said
        assert 'role "restorer" is not permitted to log in' in said
        assert "nothing is restored" not in said
        assert [p.name for p in target.data_dir.iterdir()] == ["notes.txt"]
        assert not _left_beside(tmp_path)
    finally:
        with psycopg.connect(new_machine.url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS citygrid_half WITH (FORCE)")
            admin.execute("DROP ROLE restorer")
            for role in restore.ROLES:  # as on a new machine for the tests after
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
