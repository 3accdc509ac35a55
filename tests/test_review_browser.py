"""The review page tells a check that could not run from a check that failed. A security
officer who clicks through entries soon meets the API's rate limit (each proof asks for the
checkpoint and a few tiles): a 429 (or a 5xx, or no answer) must read as "could not check
now (… 429)", not as "✗ the latest checkpoint's signature is invalid", "✗ invalid inclusion
proof" or
"✗ inconsistent with the previous checkpoint", which tell the officer the log was tampered
with. And such a visit must not move the last checkpoint this browser verified."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.settings import Settings

from .test_browser import _browser, _context, _fingerprint, _pin, wait_until
from .test_browser import chromium as chromium  # autouse: Chromium, or in CI a failure
from .tls import Server

SECRET = "review browser test passphrase"
OFFICER = "rv-officer"
DECIDED = "!['', '正在验证…'].includes(document.getElementById('proof-status').textContent)"
INTEGRITY_DONE = "!document.getElementById('integrity').textContent.startsWith('正在')"


@pytest.fixture(scope="module")
def site(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    settings = dataclasses.replace(demo_settings, data_dir=tmp_path_factory.mktemp("rv-var"))
    out = tmp_path_factory.mktemp("rv-certs")
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    with db.transaction(settings) as conn:
        accounts.add(conn, OFFICER, ["security_officer"])
        certs.issue(conn, store, SECRET.encode(), OFFICER, pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
            "CITYGRID_AUDIT_CHECKPOINT_ENTRIES": "1",
        }
    )
    try:
        server.wait_ready()
        yield server, out
    finally:
        server.stop()


def _busy(route: Any) -> None:
    """What the gateway answers a client over its rate limit."""
    route.fulfill(
        status=429,
        content_type="application/json",
        body='{"error": "rate_limited", "message": "too many requests"}',
    )


def _proof(page: Any, row: int) -> tuple[str, str]:
    page.evaluate("document.getElementById('proof-status').textContent = ''")
    page.locator("#entries tbody tr").nth(row).click()
    wait_until(page, DECIDED, 15)
    return page.inner_text("#proof-status"), str(page.get_attribute("#proof-status", "class"))


def test_a_rate_limited_check_is_not_reported_as_tampering(site: tuple[Server, Path]) -> None:
    from playwright.sync_api import sync_playwright

    server, out = site
    origin = f"https://127.0.0.1:{server.port}"
    with sync_playwright() as p:
        browser = _browser(p)
        page = _context(browser, origin, out, OFFICER).new_page()
        page.goto(origin + "/review")
        _pin(page, _fingerprint(server))
        wait_until(page, "document.getElementById('integrity').className.includes('good')")
        wait_until(page, "document.querySelectorAll('#entries tbody tr').length > 2")
        oldest = page.locator("#entries tbody tr").count() - 1  # under a signed checkpoint

        page.route("**/audit/checkpoint", _busy)
        said, cls = _proof(page, oldest)
        assert "暂时无法检查" in said and "429" in said and "bad" not in cls, said
        page.unroute("**/audit/checkpoint")

        page.route("**/audit/tile/**", _busy)
        said, cls = _proof(page, oldest)
        assert "暂时无法检查" in said and "429" in said and "bad" not in cls, said

        # The next visit must prove the newest checkpoint consistent with the last one
        # verified here, and with the one before it: neither can be asked now.
        last = page.evaluate("localStorage.getItem('citygrid.audit.last')")
        kept = json.dumps({"size": 1, "root": json.loads(last)["root"]})
        page.evaluate(f"localStorage.setItem('citygrid.audit.last', {kept!r})")
        page.reload()
        wait_until(page, INTEGRITY_DONE)
        shown = page.inner_text("#integrity")
        cls = str(page.get_attribute("#integrity", "class"))
        assert "429" in shown and "✗" not in shown and "bad" not in cls, shown
        assert page.evaluate("localStorage.getItem('citygrid.audit.last')") == kept
        page.unroute("**/audit/tile/**")

        # Answered again, the same entry verifies.
        wait_until(page, "document.querySelectorAll('#entries tbody tr').length > 2")
        said, cls = _proof(page, oldest)
        assert said.startswith("✓ 已验证"), said
        browser.close()


def test_a_key_pinned_before_the_page_has_loaded_is_kept(site: tuple[Server, Path]) -> None:
    """Pinning needs nothing from the server: typed and saved while the page still waits for
    the log's key (a slow link), the fingerprint is kept and the page then judges by it.
    Before, the button did nothing until the key arrived, and the typed text was replaced."""
    from playwright.sync_api import sync_playwright

    server, out = site
    origin = f"https://127.0.0.1:{server.port}"
    with sync_playwright() as p:
        browser = _browser(p)
        page = _context(browser, origin, out, OFFICER).new_page()
        held: list[Any] = []

        def hold_the_first(route: Any) -> None:  # the first visit's key is not answered
            if held:
                route.continue_()
            else:
                held.append(route)

        page.route("**/audit/key", hold_the_first)
        page.goto(origin + "/review", wait_until="domcontentloaded")
        while not held:
            page.wait_for_timeout(20)
        page.fill("#pin-fingerprint", _fingerprint(server))
        with page.expect_navigation(timeout=5000):  # the page reloads, pinned
            page.click("#pin-save")
        wait_until(page, INTEGRITY_DONE)
        assert "good" in str(page.get_attribute("#integrity", "class")), page.inner_text(
            "#integrity"
        )
        browser.close()
