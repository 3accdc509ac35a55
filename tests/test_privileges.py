"""Least privilege in the serving processes, the change register and separation of duties.

The serving role (citygrid_app) does what requests do and nothing more; the map role
(citygrid_map) only reads map tables; every change to accounts, roles, certificates and
organisations is recorded in a hash chain that `citygrid audit verify` checks; and no
account ever holds two incompatible roles, whoever tries to give them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from auth import accounts, certs, pki
from auth.accounts import SeparationOfDuties
from auth.ca_store import CaStore
from auth.policy import INCOMPATIBLE_ROLES
from mapserver import db, migrate
from mapserver.cli import main
from mapserver.settings import Settings

from .admin_key import admin_env
from .conftest import database_url

SECRET = b"privileges test passphrase"
MAP_TABLES = {
    "district", "street", "community", "unit_grid", "component", "component_class",
    "building", "road_surface", "road_line", "water", "green", "railway", "wall", "annotation",
    "address",  # the renderer places a case by its address (migration 0032)
    "event_class", "class_label",  # class names in the install's language (0035: identify)
}  # fmt: skip


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Settings]:
    """A database of its own with a CA, an admin, a viewer and the viewer's certificate."""
    s = dataclasses.replace(
        Settings(), database_url=database_url("citygrid_priv"), data_dir=tmp_path / "var"
    )
    db.drop_database(s)
    db.ensure_database(s)
    with db.connect(s) as conn:
        migrate.upgrade(conn, s)
    store = CaStore(s.pki_dir)
    store.init(SECRET)
    admin_env(_env(s), "pv-admin")  # the first administrator, with a signing key on disk
    with db.transaction(s) as conn:
        accounts.add(conn, "pv-viewer", ["viewer"])
        certs.issue(conn, store, SECRET, "pv-viewer", pki.Kind.PERSON, tmp_path)
    yield s
    db.drop_database(s)


def _env(settings: Settings) -> dict[str, str]:
    return {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
    }


def _cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    """The command line, as administrator pv-admin (its acts are signed)."""
    return CliRunner().invoke(main, list(args), env=admin_env(_env(settings), "pv-admin"))


def _app(settings: Settings) -> psycopg.Connection:
    conn = psycopg.connect(settings.serving_database_url, autocommit=True)
    assert conn.execute("SELECT current_user").fetchone()[0] == "citygrid_app"  # type: ignore[index]
    return conn


def _register(settings: Settings) -> list[dict[str, Any]]:
    with db.connect(settings) as conn:
        return [b for (b,) in conn.execute("SELECT body FROM register_change ORDER BY id")]


def _serial(settings: Settings, name: str) -> str:
    with db.connect(settings) as conn:
        return conn.execute(  # type: ignore[index]
            "SELECT c.serial FROM certificate c JOIN account a ON a.id = c.account_id"
            " WHERE a.name = %s",
            (name,),
        ).fetchone()[0]


# ---------------------------------------------------------------- the serving role


def test_revocation_is_permanent_for_everyone(install: Settings) -> None:
    serial = _serial(install, "pv-viewer")
    with _app(install) as app:
        with app.transaction():
            certs.revoke(app, serial, "key_compromise")  # what pki.revoke over HTTP does
        for sql in (  # the revoked certificate (the administrator's signing one is not)
            "UPDATE certificate SET revoked_at = NULL, revocation_reason = NULL"
            " WHERE revoked_at IS NOT NULL",
            "UPDATE certificate SET revocation_reason = 'superseded' WHERE revoked_at IS NOT NULL",
            "UPDATE certificate SET not_after = now() + interval '10 years'",
            "DELETE FROM certificate",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)
    with psycopg.connect(install.database_url, autocommit=True) as owner:
        for sql in (
            "UPDATE certificate SET revoked_at = NULL, revocation_reason = NULL"
            " WHERE revoked_at IS NOT NULL",
            "DELETE FROM certificate",
            "TRUNCATE certificate CASCADE",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute(sql)
    listed = {c.serial: c for c in certs.listing(psycopg.connect(install.database_url))}
    assert listed[serial].status == "revoked" and listed[serial].reason == "key_compromise"
    revocation = [
        b for b in _register(install) if b["table"] == "certificate" and b["op"] == "update"
    ]
    assert [(b["db_user"], b["account"], b["new"]["revocation_reason"]) for b in revocation] == [
        ("citygrid_app", "pv-viewer", "key_compromise")
    ]
    assert "pem" not in revocation[0]["new"] and revocation[0]["new"]["serial"] == serial


def test_issued_certificate_changes_only_by_revocation(install: Settings) -> None:
    serial = _serial(install, "pv-viewer")
    with psycopg.connect(install.database_url, autocommit=True) as owner:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            owner.execute("UPDATE certificate SET account_id = NULL, kind = 'server'")
        owner.execute("UPDATE certificate SET revoked_at = now(), revocation_reason = 'superseded'")
    assert {c.serial: c.status for c in certs.listing(psycopg.connect(install.database_url))}[
        serial
    ] == "revoked"


def test_app_role_cannot_grant_reenable_or_reorganise(install: Settings) -> None:
    with _app(install) as app:
        for sql in (
            "INSERT INTO account_role (account_id, role)"
            " SELECT id, 'security_officer' FROM account WHERE name = 'pv-viewer'",
            "UPDATE account_role SET role = 'security_officer'",
            "DELETE FROM account_role",
            "UPDATE account SET active = true",
            "UPDATE account SET name = 'pv-other' WHERE name = 'pv-viewer'",
            "INSERT INTO account (name) VALUES ('pv-sneaky')",
            "INSERT INTO organisation (code, name, kind) VALUES ('o', 'o', 'other')",
            "INSERT INTO incompatible_role VALUES ('leader', 'viewer')",
            "DELETE FROM incompatible_role",
            "INSERT INTO register_change VALUES (99, '{}', '\\x00', '\\x00')",
            "UPDATE register_head SET size = 0",
            "INSERT INTO audit_tree (one, size, frontier) VALUES (false, 0, '{}')",
            "SELECT setval('crl_number', 1)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(sql)
        # The database functions are its only way to add and disable accounts: adding
        # roles to an existing account through them fails, and disabling is one-way.
        with pytest.raises(psycopg.errors.UniqueViolation):
            app.execute("SELECT account_create('pv-viewer', '', NULL, '{security_officer}')")
        with app.transaction():
            accounts.set_active(app, "pv-viewer", False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app.transaction():
            accounts.set_active(app, "pv-viewer", True)
        assert not accounts.get(app, "pv-viewer").active


def test_every_change_is_recorded_and_verified(install: Settings) -> None:
    with _app(install) as app, app.transaction():
        accounts.act_as(app, "pv-admin")
        accounts.add(app, "pv-new", ["viewer"])
        accounts.set_active(app, "pv-new", False)
    # The owner (command line) re-activates and grants: recorded too, with who did it.
    assert _cli(install, "account", "enable", "pv-new").exit_code == 0
    assert _cli(install, "account", "grant", "pv-new", "security_officer").exit_code == 0
    with psycopg.connect(install.database_url, autocommit=True) as owner:
        owner.execute("UPDATE organisation SET name = name")  # no change, nothing recorded
    about = [b for b in _register(install) if b["account"] == "pv-new"]
    assert [(b["table"], b["op"], b["db_user"], b["actor"]) for b in about] == [
        ("account", "insert", "citygrid_app", "pv-admin"),
        ("account_role", "insert", "citygrid_app", "pv-admin"),
        ("account", "update", "citygrid_app", "pv-admin"),
        ("account", "update", "postgres", "pv-admin"),  # signed by pv-admin on the CLI
        ("account_role", "insert", "postgres", "pv-admin"),
    ]
    assert about[2]["old"]["active"] is True and about[2]["new"]["active"] is False
    assert about[3]["new"]["active"] is True and about[4]["new"]["role"] == "security_officer"
    result = _cli(install, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"; {len(_register(install))} register changes" in result.output


def _superuser_sql(settings: Settings, sql: str) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql)


def test_register_is_append_only_and_tamper_evident(install: Settings) -> None:
    with psycopg.connect(install.database_url, autocommit=True) as owner:
        for sql in (
            "UPDATE register_change SET body = '{}'",
            "DELETE FROM register_change",
            "TRUNCATE register_change",
            "DELETE FROM register_head",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute(sql)
    assert _cli(install, "audit", "verify").exit_code == 0
    # An intruder with superuser rights switches the triggers off and hides a grant.
    change = next(
        i
        for i, b in enumerate(_register(install), start=1)
        if b["table"] == "account_role" and b["new"]["role"] == "admin"
    )
    _superuser_sql(
        install,
        "UPDATE register_change SET body = jsonb_set(body, '{new,role}', '\"viewer\"')"
        f" WHERE id = {change}",
    )
    result = _cli(install, "audit", "verify")
    assert result.exit_code == 1
    assert f"register change {change} was altered after it was written" in result.output


def test_deleted_register_tail_is_named(install: Settings) -> None:
    n = len(_register(install))
    _superuser_sql(install, f"DELETE FROM register_change WHERE id = {n}")
    result = _cli(install, "audit", "verify")
    assert result.exit_code == 1
    assert f"the register head (size {n}) differs from the {n - 1} recorded changes" in (
        result.output
    )


# ---------------------------------------------------------------- the map role


def test_map_role_reads_map_tables_only(install: Settings) -> None:
    url = install.map_reader_database_url
    assert "citygrid_map@" in url and "citygrid_app" not in url
    with psycopg.connect(url, autocommit=True) as m:
        assert m.execute("SELECT current_user").fetchone()[0] == "citygrid_map"  # type: ignore[index]
        for table in sorted(MAP_TABLES):
            m.execute(f"SELECT count(*) FROM {table}")
        for sql in (
            "INSERT INTO annotation (scale, text, geom) VALUES (500, 'x', 'SRID=4548;POINT(0 0)')",
            "UPDATE component SET state = 'missing'",
            "DELETE FROM building",
            "TRUNCATE road_line",
            "SELECT * FROM account",
            "SELECT * FROM account_role",
            "SELECT * FROM certificate",
            "SELECT * FROM audit_entry",
            "SELECT * FROM audit_checkpoint",
            "SELECT * FROM signed_action",
            "SELECT * FROM action_nonce",
            "SELECT * FROM register_change",
            "SELECT account_create('x', '', NULL, '{viewer}')",
            "SELECT account_disable('pv-viewer')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                m.execute(sql)
        # Nothing beyond SELECT on the map tables, on any table there is now or later.
        granted = m.execute(
            "SELECT c.relname, p.kind FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'"
            " CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',"
            "                         'REFERENCES', 'TRIGGER']) AS p(kind)"
            " WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')"
            "   AND has_table_privilege('citygrid_map', c.oid, p.kind)"
        ).fetchall()
    postgis = {"spatial_ref_sys", "geometry_columns", "geography_columns"}
    tile_grid = {"tile_matrix"}  # the secret tile origin (migration 0010)
    assert {t for t, _ in granted} - postgis == MAP_TABLES | tile_grid
    assert {k for t, k in granted if t not in postgis} == {"SELECT"}


def test_tiles_render_through_the_map_role(demo_settings: Settings, tmp_path: Path) -> None:
    from tiles.service import TileService

    settings = dataclasses.replace(demo_settings, data_dir=tmp_path / "var")
    svc = TileService.from_settings(settings)
    assert svc.source.database_url == settings.map_reader_database_url  # type: ignore[union-attr]
    product = svc.product("topo500")
    z = svc.grid.z_of_scale(500)
    served = svc.served_range(product, z)
    assert served is not None
    png = svc.tile("topo500", z, (served.x0 + served.x1) // 2, (served.y0 + served.y1) // 2)
    assert png.startswith(b"\x89PNG")
    with db.connect(settings) as conn:
        users = {
            u
            for (u,) in conn.execute(
                "SELECT usename FROM pg_stat_activity WHERE datname = current_database()"
            )
        }
    assert "citygrid_map" in users  # Mapnik's persistent connection


def test_mapnik_xml_never_holds_a_password(demo_settings: Settings) -> None:
    from tiles.products import PRODUCTS
    from tiles.renderer import MapnikRenderer
    from tiles.service import grid_from, proj_string

    secret = "pw-Zq81-never-on-disk"
    url = demo_settings.map_reader_database_url.replace("citygrid_map@", f"citygrid_map:{secret}@")
    with psycopg.connect(url) as conn:  # the cluster trusts loopback: any password passes
        srs = proj_string(conn, demo_settings.srid)
    renderer = MapnikRenderer(grid_from(demo_settings), srs, url, demo_settings.srid, 2)
    for product in PRODUCTS:
        xml = renderer.style_xml(product)
        assert secret not in xml and "password" not in xml.lower()
        assert "citygrid_map" not in xml and "<Datasource" not in xml
        # The password reaches Mapnik in memory only, with every layer's datasource.
        m = renderer.map_for(product)
        assert len(m.layers) > 0
        for layer in m.layers:
            assert dict(layer.datasource.parameters().items())["password"] == secret
    z = renderer.grid.z_of_scale(2000)
    tiles = renderer.render_metatile("topo2000", z, 0, 0)
    assert tiles and all(t.startswith(b"\x89PNG") for t in tiles.values())


# ---------------------------------------------------------------- separation of duties


def test_incompatible_roles_are_one_table_the_database_enforces(install: Settings) -> None:
    with db.connect(install) as conn:
        stored = {
            frozenset(row)
            for row in conn.execute("SELECT role_a, role_b FROM incompatible_role").fetchall()
        }
    assert stored == INCOMPATIBLE_ROLES
    assert accounts.incompatible_pair(["viewer", "security_officer", "admin"]) == (
        "admin",
        "security_officer",
    )
    assert accounts.incompatible_pair(["viewer", "leader"]) is None


def test_separation_of_duties_in_code_and_database(install: Settings) -> None:
    with db.connect(install) as conn:
        for a, b in sorted(sorted(p) for p in INCOMPATIBLE_ROLES):
            with pytest.raises(SeparationOfDuties, match=f"roles {a} and {b}"):
                accounts.add(conn, "pv-both", [a, "viewer", b])
        with pytest.raises(SeparationOfDuties):
            accounts.grant(conn, "pv-admin", "security_officer")
        conn.rollback()
    # A direct INSERT by the app role (through its function) or by the owner is refused.
    refused = pytest.raises(psycopg.errors.CheckViolation, match="separation of duties")
    with _app(install) as app, refused:
        app.execute("SELECT account_create('pv-both', '', NULL, '{admin,security_officer}')")
    with psycopg.connect(install.database_url, autocommit=True) as owner:
        owner.execute(
            "INSERT INTO account_role (account_id, role)"
            " SELECT id, 'security_officer' FROM account WHERE name = 'pv-viewer'"
        )
        for statement in (
            "INSERT INTO account_role (account_id, role)"
            " SELECT id, 'security_officer' FROM account WHERE name = 'pv-admin'",
            "UPDATE account_role SET role = 'admin' WHERE account_id ="
            " (SELECT id FROM account WHERE name = 'pv-viewer')",
        ):
            with pytest.raises(psycopg.errors.CheckViolation, match="separation of duties"):
                owner.execute(statement)
    with db.connect(install) as conn:
        assert not conn.execute("SELECT 1 FROM account WHERE name = 'pv-both'").fetchall()
        assert accounts.get(conn, "pv-admin").roles == ("admin",)


def test_separation_of_duties_on_the_command_line(install: Settings) -> None:
    added = _cli(
        install, "account", "add", "pv-both", "--role", "admin", "--role", "security_officer"
    )
    assert added.exit_code == 1
    assert added.output == (
        "citygrid: error: separation of duties: roles admin and security_officer may not be "
        "held by one account\n"
    )
    granted = _cli(install, "account", "grant", "pv-admin", "security_officer")
    assert granted.exit_code == 1 and granted.output.startswith(
        "citygrid: error: separation of duties: roles admin and security_officer"
    )
    with db.connect(install) as conn:
        assert not conn.execute("SELECT 1 FROM account WHERE name = 'pv-both'").fetchall()
        assert accounts.get(conn, "pv-admin").roles == ("admin",)
        assert not any(b["account"] == "pv-both" for b in _register(install))


# ---------------------------------------------------------------- over HTTPS


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """An install of its own served over mutual TLS (the gateway tests' world)."""
    from .conftest import demo_database
    from .test_gateway import World
    from .tls import Server

    settings = demo_database("citygrid_privgw", tmp_path_factory.mktemp("priv-var"))
    world = World(settings, tmp_path_factory.mktemp("priv-certs"))
    server = Server(world.env())
    try:
        server.wait_ready()
        yield world, server
    finally:
        server.stop()
        db.drop_database(settings)


def test_separation_of_duties_over_https(https: tuple[Any, Any]) -> None:
    from .test_gateway import _accounts, _envelope, _post, _signing

    world, server = https
    cert, key = _signing(world, "gw-admin")
    before = _accounts(world)
    params = {"name": "gw-both", "roles": ["admin", "security_officer"]}
    env = _envelope(world, server, "gw-admin", cert, key, "account.add", "accounts", params)
    reply = _post(world, server, "gw-admin", "/admin/accounts", env)
    assert reply.status == 409, reply.body
    assert reply.json()["error"] == "separation_of_duties"
    assert "admin and security_officer" in reply.json()["message"]
    assert _accounts(world) == before
    with psycopg.connect(world.settings.database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM register_change WHERE body ->> 'account' = 'gw-both'"
        ).fetchone() == (0,)

    # The admin's allowed acts still work through the app role, and are recorded.
    params = {"name": "gw-fresh", "roles": ["viewer"]}
    env = _envelope(world, server, "gw-admin", cert, key, "account.add", "accounts", params)
    assert _post(world, server, "gw-admin", "/admin/accounts", env).status == 201
    env = _envelope(world, server, "gw-admin", cert, key, "account.disable", "account gw-fresh", {})
    reply = _post(world, server, "gw-admin", "/admin/accounts/gw-fresh/disable", env)
    assert reply.status == 200 and reply.json()["active"] is False
    # Security officers review the register; the administrator may not.
    review = world.get(server.port, "/audit/register?account=gw-fresh", "gw-officer")
    assert review.status == 200, review.body
    recorded = [
        (c["table"], c["op"], c["db_user"], c["actor"]) for c in reversed(review.json()["changes"])
    ]
    assert recorded == [
        ("account", "insert", "citygrid_app", "gw-admin"),
        ("account_role", "insert", "citygrid_app", "gw-admin"),
        ("account", "update", "citygrid_app", "gw-admin"),
    ]
    assert world.get(server.port, "/audit/register", "gw-admin").status == 403
    assert world.get(server.port, "/audit/register?limit=0", "gw-officer").status == 400


def test_a_settings_file_with_a_password_must_be_private(tmp_path: Path) -> None:
    from mapserver import settings as settings_mod

    config = tmp_path / "citygrid.toml"
    config.write_text(
        'database_url = "postgresql://owner:pw-in-file@127.0.0.1:5432/citygrid"\n'
        'map_database_url = "postgresql://citygrid_map@127.0.0.1:5432/citygrid"\n'
    )
    config.chmod(0o644)
    with pytest.raises(settings_mod.SettingsError, match="database_url: holds a password"):
        settings_mod.load(config, environ={})
    result = CliRunner().invoke(main, ["--config", str(config), "config", "check"], env={})
    assert result.exit_code != 0 and "readable by others" in result.output
    assert "pw-in-file" not in result.output
    config.chmod(0o600)
    assert settings_mod.load(config, environ={}).database_url.endswith("/citygrid")
