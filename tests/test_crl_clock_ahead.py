"""A CRL published while a clock ran ahead (then set right by NTP) is 'not yet valid' to TLS:
every client certificate is refused until a fresh one is published. The renewal (`pki
renew`, the signer's schedule) must see it as due, and `config check` must name it, not
say "nothing due" and "ok" while nobody gets in."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth import pki
from mapserver import db

from .conftest import empty_database
from .test_renewal import Install, _crl
from .tls import REFUSED, Server


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    settings = empty_database("citygrid_crl_ahead", tmp_path / "var")
    yield Install(settings, tmp_path / "certs")
    db.drop_database(settings)


def _published_ahead(install: Install) -> None:
    ahead = install.citygrid("+9d", "pki", "crl")
    assert ahead.returncode == 0, ahead.stderr
    assert _crl(install).last_update_utc > pki.now() + dt.timedelta(days=8)


def test_renew_and_config_check_see_a_crl_from_a_clock_ahead(install: Install) -> None:
    _published_ahead(install)
    check = install.citygrid("+0", "config", "check")
    assert check.returncode == 1, (check.stdout, check.stderr)
    assert "error: crl: the CRL is not valid before" in check.stderr, check.stderr
    renew = install.citygrid("+0", "pki", "renew")
    assert renew.returncode == 0 and "CRL published" in renew.stdout, (renew.stdout, renew.stderr)
    assert _crl(install).last_update_utc <= pki.now()
    again = install.citygrid("+0", "config", "check")
    assert again.returncode == 0 and again.stdout.strip() == "ok", again.stderr


def test_the_signer_republishes_it_and_people_get_in_again(install: Install) -> None:
    server = Server(install.env(), signer_args=["--interval", "1"])
    try:
        server.wait_ready()
        assert install.get(server.port, "/auth/whoami", "rn-alice").status == 200
        _published_ahead(install)
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                status = install.get(server.port, "/auth/whoami", "rn-alice").status
            except REFUSED:
                status = None
            if status == 200 and _crl(install).last_update_utc <= pki.now():
                break
            time.sleep(0.2)
        assert _crl(install).last_update_utc <= pki.now(), "the signer left the CRL from ahead"
        assert status == 200
    finally:
        server.stop()
