"""It keeps running for years: with the server's clock moved 25 h and 10 days ahead
(libfaketime), valid certificates still get in and revoked ones are still refused, because
the CRL is republished before its next update; `pki renew` (the timer) renews the CRL,
server certificates and the token key; `config check` and GET /health warn in time."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from auth import accounts, certs, pki, renewal
from auth.ca_store import CaStore
from auth.tokens import KeySet
from mapserver import db
from mapserver.settings import Settings

from .conftest import empty_database
from .tls import REFUSED, Server, request

SECRET = "renewal test passphrase"
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)


class Install:
    def __init__(self, settings: Settings, out: Path):
        self.settings, self.out = settings, out
        self.store = CaStore(settings.pki_dir)
        self.store.init(SECRET.encode())
        with db.transaction(settings) as conn:
            for name, role in (("rn-alice", "viewer"), ("rn-bob", "viewer"), ("rn-admin", "admin")):
                accounts.add(conn, name, [role])
                issued = certs.issue(conn, self.store, SECRET.encode(), name, pki.Kind.PERSON, out)
                if name == "rn-bob":
                    certs.revoke(conn, issued.serial, "key_compromise")
            certs.publish_crl(conn, self.store, SECRET.encode())
        KeySet(settings.pki_dir / "jwt").rotate()

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "CITYGRID_DATABASE_URL": self.settings.database_url,
            "CITYGRID_DATA_DIR": str(self.settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            **extra,
        }

    def get(self, port: int, path: str, who: str):  # type: ignore[no-untyped-def]
        crt, key = self.out / f"{who}.crt", self.out / f"{who}.key"
        return request(port, path, self.store.cert_path, crt, key)

    def citygrid(self, ahead: str, *args: str) -> subprocess.CompletedProcess[str]:
        """A CLI command run with libfaketime's clock `ahead` (e.g. +25h). The library is
        preloaded directly: the `faketime` wrapper keeps a named semaphore per process id,
        and one left by a killed run makes a later wrapper with that id refuse to start."""
        assert LIBFAKETIME is not None, "needs Debian's faketime (deploy/setup.sh installs it)"
        return subprocess.run(
            [sys.executable, "-m", "mapserver.cli", *args],
            env={
                **os.environ,
                **self.env(),
                "LD_PRELOAD": str(LIBFAKETIME),
                "FAKETIME": ahead,
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    settings = empty_database("citygrid_renew", tmp_path / "var")
    yield Install(settings, tmp_path / "certs")
    db.drop_database(settings)


def _crl(install: Install) -> x509.CertificateRevocationList:
    crl = install.store.crl()
    assert crl is not None
    return crl


def _wait_for_crl_after(install: Install, when: dt.datetime, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crl = install.store.crl()
        if crl is not None and crl.last_update_utc > when:
            return
        time.sleep(0.2)
    raise AssertionError(f"no CRL published after {when}: {_crl(install).last_update_utc}")


def _wait_for_server_clock(install: Install, port: int, after: dt.datetime) -> None:
    """Until every worker's clock has moved: each process re-reads the faketime file at most
    once a second, so for that second a freshly published CRL is 'not yet valid' to it."""
    deadline = time.monotonic() + 30
    settled = 0
    while settled < 6:
        assert time.monotonic() < deadline, "the server's clock did not move"
        try:
            health = install.get(port, "/health", "rn-admin")
            # Within that second a worker may also refuse the request itself (JSON, not 200).
            now = health.json().get("now") if health.status == 200 else None
            moved = now is not None and dt.datetime.fromisoformat(now) > after
        except REFUSED:
            moved = False
        settled = settled + 1 if moved else 0
        time.sleep(0.1)


def test_clock_ahead_25h_and_10d_keeps_valid_users_in_and_revoked_out(
    install: Install, tmp_path: Path
) -> None:
    assert LIBFAKETIME is not None, "needs Debian's faketime (deploy/setup.sh installs it)"
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    # The running server and signer read their clock offset from `clock` (re-read every
    # second), so the clock moves under processes that are already serving.
    faked = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_CACHE_DURATION": "1",
    }
    server = Server(install.env(**faked), signer_args=["--interval", "1"])
    try:
        server.wait_ready()
        assert install.get(server.port, "/auth/whoami", "rn-alice").status == 200
        with pytest.raises(REFUSED):
            install.get(server.port, "/auth/whoami", "rn-bob")

        for ahead, shift in (("+25h", dt.timedelta(hours=25)), ("+10d", dt.timedelta(days=10))):
            real = pki.now()
            clock.write_text(ahead + "\n")
            # The signer's schedule republishes once the CRL is a day old (fake time).
            _wait_for_crl_after(install, real + shift - dt.timedelta(hours=1))
            _wait_for_server_clock(install, server.port, real + shift - dt.timedelta(hours=1))
            crl = _crl(install)
            assert crl.next_update_utc is not None
            assert crl.next_update_utc > real + shift + dt.timedelta(days=5)
            bob = x509.load_pem_x509_certificates((install.out / "rn-bob.crt").read_bytes())[0]
            assert crl.get_revoked_certificate_by_serial_number(bob.serial_number) is not None
            who = install.get(server.port, "/auth/whoami", "rn-alice")
            assert who.status == 200 and who.json()["account"] == "rn-alice", ahead
            with pytest.raises(REFUSED):
                install.get(server.port, "/auth/whoami", "rn-bob")
            health = install.get(server.port, "/health", "rn-admin")
            assert health.status == 200, health.body
            report = health.json()
            assert dt.datetime.fromisoformat(report["now"]) > real + shift - dt.timedelta(hours=1)
            assert dt.datetime.fromisoformat(report["crl_next_update"]) == crl.next_update_utc
            assert report["ca_not_after"] and "127.0.0.1" in report["server_certificates"]
            assert report["token_key_age_seconds"] >= shift.total_seconds() - 3600
            assert report["status"] == "ok", report["warnings"]
        assert install.get(server.port, "/health", "rn-alice").status == 403
    finally:
        server.stop()


def test_pki_renew_under_faketime(install: Install) -> None:
    """The timer's `citygrid pki renew`: nothing due now; a day later the CRL; a month
    later the token key and a server certificate about to expire."""
    first = install.citygrid("+0", "pki", "renew")
    assert first.returncode == 0 and "nothing due" in first.stdout, first.stderr
    number = _crl(install).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    day = install.citygrid("+25h", "pki", "renew")
    assert day.returncode == 0 and "CRL published" in day.stdout, day.stderr
    crl = _crl(install)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > number
    assert crl.last_update_utc > pki.now() + dt.timedelta(hours=24)

    with db.transaction(install.settings) as conn:
        certs.issue(
            conn,
            install.store,
            SECRET.encode(),
            "renew.test",
            pki.Kind.SERVER,
            install.settings.pki_dir / "server",
            days=40,
        )
    before = KeySet(install.settings.pki_dir / "jwt").current
    month = install.citygrid("+31d", "pki", "renew")
    assert month.returncode == 0, month.stderr
    assert "server certificate renew.test renewed" in month.stdout
    assert "token signing key rotated" in month.stdout
    keys = KeySet(install.settings.pki_dir / "jwt")
    assert keys.current != before and keys.public_key(before) is not None  # old stays valid
    server = renewal.server_certificates(install.settings)["renew.test"]
    assert server.not_valid_after_utc > pki.now() + dt.timedelta(days=31 + 700)


def test_config_check_warns_before_the_crl_runs_out(install: Install) -> None:
    ok = install.citygrid("+0", "config", "check")
    assert ok.returncode == 0 and ok.stdout.strip() == "ok" and not ok.stderr, ok.stderr
    soon = install.citygrid("+3d", "config", "check")
    assert soon.returncode == 0 and "warning: crl: the CRL runs out" in soon.stderr
    gone = install.citygrid("+8d", "config", "check")
    assert gone.returncode == 1 and "error: crl: the CRL has expired" in gone.stderr
    with db.transaction(install.settings) as conn:
        certs.issue(
            conn,
            install.store,
            SECRET.encode(),
            "short.test",
            pki.Kind.SERVER,
            install.settings.pki_dir / "server",
            days=10,
        )
    cert_soon = install.citygrid("+0", "config", "check")
    assert "warning: server_certificate: short.test: expires on" in cert_soon.stderr
    assert "/" not in cert_soon.stderr  # names, never server paths


def test_a_rotated_token_key_is_used_by_running_processes(tmp_path: Path) -> None:
    serving = KeySet(tmp_path / "jwt")
    first, _ = serving.signing_key()
    rotated = KeySet(tmp_path / "jwt").rotate()  # what `pki renew` does in another process
    assert rotated != first
    assert serving.signing_key()[0] == rotated
    assert serving.public_key(first) is not None  # tokens of the old key stay valid
