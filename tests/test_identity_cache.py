"""The identity cache follows the register: a change is heard (LISTEN/NOTIFY) and empties
it at once, and while the listener is not connected the cache is not used at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from auth.identity import Authenticator, Holder, Unauthenticated, lookup
from mapserver import db
from mapserver.settings import Settings

from .conftest import BASE_URL, empty_database

SECRET = b"identity cache test passphrase"


class Register:
    """A database of its own with a CA, one account and its certificate."""

    def __init__(self, settings: Settings, out: Path):
        self.settings = settings
        self.store = CaStore(settings.pki_dir)
        self.store.init(SECRET)
        with db.transaction(settings) as conn:
            accounts.add(conn, "ic-alice", ["viewer"], None)
            issued = certs.issue(conn, self.store, SECRET, "ic-alice", pki.Kind.PERSON, out)
        self.serial = issued.serial
        cert = x509.load_pem_x509_certificate((out / "ic-alice.crt").read_bytes())
        self.der = cert.public_bytes(serialization.Encoding.DER)
        self.lookups = 0
        self.made: list[Authenticator] = []
        self._conn = psycopg.connect(settings.database_url, autocommit=True)

    def holder(self, sha256: str) -> Holder | None:
        """The gateway's register lookup, counted (one kept connection)."""
        self.lookups += 1
        return lookup(self._conn, sha256)

    def change(self, sql: str, *params: object) -> None:
        with psycopg.connect(self.settings.database_url) as conn:
            conn.execute(sql, params)

    def authenticator(self, ttl: float = 3600.0) -> Authenticator:
        auth = Authenticator(self.store.certificate(), self.holder, ttl, self.settings.database_url)
        self.made.append(auth)
        auth.listener.start()  # type: ignore[union-attr]
        assert auth.listener.wait_live(10)  # type: ignore[union-attr]
        return auth


@pytest.fixture
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Register]:
    settings = empty_database("citygrid_idcache", tmp_path_factory.mktemp("ic-var"))
    reg = Register(settings, tmp_path_factory.mktemp("ic-certs"))
    yield reg
    for auth in reg.made:
        auth.listener.stop()  # type: ignore[union-attr]
    reg._conn.close()
    _allow_connections(settings, True)
    _terminate(settings, "")
    db.drop_database(settings)


def _allow_connections(settings: Settings, allow: bool) -> None:
    name = settings.database_url.rsplit("/", 1)[1]
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')


def _terminate(settings: Settings, application_name: str) -> None:
    name = settings.database_url.rsplit("/", 1)[1]
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND (%s = '' OR application_name = %s)",
            (name, application_name, application_name),
        )


def _wait(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _refused(auth: Authenticator, der: bytes) -> str | None:
    try:
        auth.identify(der)
    except Unauthenticated as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE account SET active = false WHERE name = 'ic-alice'", "account_disabled"),
        ("UPDATE certificate SET revoked_at = now(), revocation_reason = 'x'", "revoked"),
        ("DELETE FROM account_role", None),
    ],
    ids=["account", "certificate", "account_role"],
)
def test_a_change_to_the_register_empties_the_cache(
    register: Register, sql: str, reason: str | None
) -> None:
    auth = register.authenticator(ttl=3600)  # only a notification can end the cached answer
    assert auth.identify(register.der).roles == ("viewer",)
    assert auth.identify(register.der).roles == ("viewer",)
    assert register.lookups == 1  # the cache is used while nothing changes
    register.change(sql)
    _wait(lambda: register.lookups == 1 and not auth._cache)
    assert _refused(auth, register.der) == reason
    if reason is None:
        assert auth.identify(register.der).roles == ()
    assert register.lookups == 2


def test_organisation_change_is_heard(register: Register) -> None:
    auth = register.authenticator()
    auth.identify(register.der)
    register.change("INSERT INTO organisation (code, name, kind) VALUES ('ic-org', 'x', 'other')")
    _wait(lambda: not auth._cache)


def test_no_cache_while_the_listener_is_disconnected(register: Register) -> None:
    """Fail closed: a change made while nobody listens is never hidden by the cache."""
    auth = register.authenticator()
    auth.identify(register.der)
    assert register.lookups == 1
    _allow_connections(register.settings, False)  # the listener cannot come back yet
    _terminate(register.settings, "citygrid-identity-listener")
    _wait(lambda: not auth.listener.live)  # type: ignore[union-attr]
    register.lookups = 0
    auth.identify(register.der)
    auth.identify(register.der)
    assert register.lookups == 2  # every request asks the register
    # A change nobody hears (the register's own connection is still open):
    register._conn.execute("UPDATE account SET active = false WHERE name = 'ic-alice'")
    assert _refused(auth, register.der) == "account_disabled"
    _allow_connections(register.settings, True)
    assert auth.listener.wait_live(10)  # type: ignore[union-attr]
    assert _refused(auth, register.der) == "account_disabled"
    register._conn.execute("UPDATE account SET active = true WHERE name = 'ic-alice'")
    _wait(lambda: _refused(auth, register.der) is None)


def test_without_a_listener_nothing_is_cached(register: Register) -> None:
    auth = Authenticator(register.store.certificate(), register.holder, ttl=3600)
    for _ in range(3):
        auth.identify(register.der)
    assert register.lookups == 3
