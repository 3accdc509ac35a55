"""The bureau's component page in headless Chromium over mutual TLS: a bureau's person
enrols a WebCrypto signing key with a one-time code, changes a component's state, moves it
by clicking its map picture, sees the history and the component as it stood before, meets a
409 when another page changed it first, adds a component (its code by the standard's
rules), and uploads bulk files: one refused with its report, one applied whole. No response
the page receives carries a coordinate."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.settings import Settings

from .conftest import demo_database
from .test_browser import LEAKS, _browser, _context, _enrol_code, _needs_chromium, wait_until
from .tls import Server

SECRET = "component browser test passphrase"


@dataclasses.dataclass
class Site:
    server: Server
    settings: Settings
    out: Path
    dept: str

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def sql(self, query: str, *args: Any) -> Any:
        with psycopg.connect(self.settings.database_url) as conn:
            return conn.execute(query, args).fetchall()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _needs_chromium()
    settings = demo_database("citygrid_component_browser", tmp_path_factory.mktemp("cpb-var"))
    out = tmp_path_factory.mktemp("cpb-certs")
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    with db.transaction(settings) as conn:
        bureau, dept = conn.execute(
            "SELECT o.code, o.name FROM organisation o JOIN component c ON c.owner_dept = o.name"
            " WHERE o.kind = 'bureau' GROUP BY 1, 2 ORDER BY count(*) DESC, 1 LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        accounts.add(conn, "cpb-bureau", ["bureau_handler"], bureau)
        certs.issue(conn, store, SECRET.encode(), "cpb-bureau", pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            "CITYGRID_RATE_LIMIT_TILES": "*=100000/hour",
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
        }
    )
    try:
        server.wait_ready()
        yield Site(server, settings, out, dept)
    finally:
        server.stop()
        db.drop_database(settings)


def _text(page: Any, selector: str) -> str:
    return str(page.inner_text(selector))


def test_bureau_walks_the_component_page(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    bodies: list[tuple[str, bytes]] = []
    errors: list[str] = []
    unread: list[str] = []

    def keep(response: Any) -> None:
        kind = response.headers.get("content-type", "")
        if kind.startswith(("application/json", "text/html")):
            try:
                bodies.append((response.url, response.body()))
            except Exception:  # Chromium may drop a body already read by the page (scanned
                unread.append(response.url)  # below through what the page shows instead)

    with sync_playwright() as p:
        browser = _browser(p)
        # The browser's computer in UTC: the page's times are the install's zone's.
        context = _context(browser, site.origin, site.out, "cpb-bureau", timezone_id="UTC")
        page = context.new_page()
        page.on("response", keep)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.origin + "/bureau/components")
        wait_until(page, "document.body.dataset.ready === '1'")
        wait_until(page, "document.querySelectorAll('#components tbody tr').length > 0")
        assert "共" in _text(page, "#list-status")
        # More than a page: the pager walks them, each page the next 50 by code.
        total = int(re.sub(r"[^0-9]", "", _text(page, "#list-status")))
        assert total > 50, total
        codes = "rs => rs.map(r => r.dataset.code)"
        first = page.locator("#components tbody tr").evaluate_all(codes)
        assert len(first) == 50 and first == sorted(first)
        pages = -(-total // 50)
        assert _text(page, "#page-at") == f"第 1 / {pages} 页"
        assert page.is_disabled("#page-prev") and not page.is_disabled("#page-next")
        page.click("#page-next")
        wait_until(page, "document.getElementById('components').dataset.page === '2'")
        second = page.locator("#components tbody tr").evaluate_all(codes)
        assert second and second[0] > first[-1] and second == sorted(second)
        page.click("#page-prev")
        wait_until(page, "document.getElementById('components').dataset.page === '1'")
        assert page.locator("#components tbody tr").count() == 50
        page.fill("#enrol-code", _enrol_code(site.settings, site.server, "cpb-bureau"))
        page.click("#enrol")
        wait_until(page, "document.getElementById('signer-status').textContent.includes('已登记')")

        # One component: its picture, attributes and history; change its state.
        page.fill('#filter input[name="code"]', "")
        code = page.get_attribute("#components tbody tr:nth-child(3)", "data-code")
        assert code
        page.click(f'#components tbody tr[data-code="{code}"] a')
        wait_until(page, "document.body.dataset.version === '1'")
        assert page.get_attribute("#minimap-tile", "src").startswith("/tiles/topo500/")
        page.select_option('#edit-form select[name="state"]', "damaged")
        page.click('#edit-form button[type="submit"]')
        wait_until(page, "document.body.dataset.version === '2'")
        assert "已保存（版本 2）" in _text(page, "#detail-result")
        assert site.sql("SELECT state FROM component WHERE code = %s", code) == [("damaged",)]
        rows = page.locator("#history tbody tr")
        assert rows.count() == 2 and "修改" in rows.nth(1).inner_text()
        assert "cpb-bureau" in rows.nth(1).inner_text()

        # Its history says when, in the install's zone.
        ended = site.sql(
            "SELECT to_char(valid_to AT TIME ZONE %s, 'YYYY-MM-DD HH24:MI:SS')"
            " FROM component_history WHERE code = %s AND version = 1",
            site.settings.work_timezone,
            code,
        )[0][0]
        assert ended in rows.nth(0).inner_text(), (ended, rows.nth(0).inner_text())

        # As it stood before the change, asked as a time of the install's zone.
        first = site.sql(
            "SELECT to_char((valid_to - interval '1 second') AT TIME ZONE %s,"
            " 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM component_history WHERE code = %s AND version = 1",
            site.settings.work_timezone,
            code,
        )[0][0]
        page.fill("#as-of", first)
        page.click("#show-as-of")
        wait_until(page, "document.getElementById('as-of-result').textContent.length > 0")
        assert "版本 1" in _text(page, "#as-of-result"), _text(page, "#as-of-result")

        # Move: click the picture next to the marker, then sign the move.
        left = int(page.evaluate("parseInt(document.getElementById('marker').style.left)"))
        top = int(page.evaluate("parseInt(document.getElementById('marker').style.top)"))
        target = (left + 12 if left < 200 else left - 12, top + 9 if top < 200 else top - 9)
        at = {"x": target[0] + 0.5, "y": target[1] + 0.5}  # the middle of the picture's pixel
        page.click("#minimap-tile", position=at)
        assert page.is_enabled("#move")
        page.click("#move")
        wait_until(page, "document.body.dataset.version === '3'")
        marker = page.evaluate(
            "[parseInt(document.getElementById('marker').style.left),"
            " parseInt(document.getElementById('marker').style.top)]"
        )
        assert tuple(marker) == target
        page.screenshot(path=str(tmp_path / "components.png"))

        # A second page of the same person changes it first: this page's edit is refused.
        other = context.new_page()
        other.goto(site.origin + "/bureau/components")
        wait_until(other, "document.body.dataset.ready === '1'")
        other.fill('#filter input[name="code"]', code)
        other.click('#filter button[type="submit"]')
        wait_until(other, f"!!document.querySelector('#components tbody tr[data-code=\"{code}\"]')")
        other.click(f'#components tbody tr[data-code="{code}"] a')
        wait_until(other, "document.body.dataset.version === '3'")
        other.fill('#edit-form input[name="name"]', "另一页面的修改")
        other.click('#edit-form button[type="submit"]')
        wait_until(other, "document.body.dataset.version === '4'")
        page.fill('#edit-form input[name="name"]', "本页面的修改")
        page.click('#edit-form button[type="submit"]')
        wait_until(page, "document.getElementById('detail-result').textContent.includes('冲突')")
        assert "请刷新后重试" in _text(page, "#detail-result")  # another's version: reload
        assert site.sql("SELECT name, version FROM component WHERE code = %s", code) == [
            ("另一页面的修改", 4)
        ]

        # Add one: its code by the standard's rules.
        grid = site.sql("SELECT grid_code FROM component WHERE code = %s", code)[0][0]
        major, minor = code[6:8], code[8:10]
        top_serial = site.sql(
            "SELECT max(right(code, 6)::int) FROM component WHERE major = %s AND minor = %s",
            major,
            minor,
        )[0][0]
        page.select_option('#add-form select[name="cls"]', f"{major}/{minor}")
        page.fill('#add-form input[name="name"]', "新设部件")
        page.fill('#add-form input[name="grid"]', grid)
        page.click('#add-form button[type="submit"]')
        wait_until(page, "document.getElementById('add-result').textContent.length > 0")
        added = f"{site.settings.district_code}{major}{minor}{top_serial + 1:06d}"
        assert f"已新增部件 {added}" in _text(page, "#add-result"), _text(page, "#add-result")

        # Bulk: a file with a problem is refused whole, with its report; a good one applies.
        bad = tmp_path / "bad.csv"
        bad.write_text(f"op,code,state\nedit,{added},damaged\nedit,{added},lost\n", "utf-8")
        page.set_input_files('#bulk-form input[name="file"]', str(bad))
        page.click('#bulk-form button[type="submit"]')
        wait_until(page, "document.getElementById('bulk-status').textContent.includes('未通过')")
        assert page.locator("#bulk-report td.bad").count() == 1
        assert page.is_hidden("#bulk-apply")
        good = tmp_path / "good.csv"
        good.write_text(f"op,code,state\nedit,{added},occupied\n", "utf-8")
        page.set_input_files('#bulk-form input[name="file"]', str(good))
        page.click('#bulk-form button[type="submit"]')
        wait_until(page, "document.getElementById('bulk-status').textContent.includes('校验通过')")
        page.click("#bulk-apply")
        wait_until(
            page, "document.getElementById('bulk-status').textContent.includes('已全部应用')"
        )
        assert site.sql("SELECT state FROM component WHERE code = %s", added) == [("occupied",)]
        page.screenshot(path=str(tmp_path / "components-bulk.png"))
        bodies.append(("the page as shown", page.content().encode("utf-8")))
        page.wait_for_load_state("networkidle")
        browser.close()

    assert not errors, errors
    assert all("/components/imports" in url for url in unread), unread
    signed = site.sql("SELECT action FROM signed_action WHERE account = 'cpb-bureau' ORDER BY id")
    assert [a for (a,) in signed] == [  # the refused edit kept nothing
        "component.edit", "component.move", "component.edit", "component.add", "component.import",
    ]  # fmt: skip
    for url, body in bodies:
        for pattern in LEAKS:
            assert not pattern.search(body), (url, pattern.pattern)
