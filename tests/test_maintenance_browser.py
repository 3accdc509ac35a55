"""Street supervision and application maintenance in headless Chromium over mutual TLS:
a street office orders a bureau to act (signed in its browser), the bureau answers, an
order left unanswered shows escalated in the command centre's inbox and on the case; the
street statistics page, its CSV download and its printed form; an administrator on /manage
searches accounts, changes roles and state, issues an enrolment code, edits the
organisation tree, a class's limit and the work calendar, every change signed in the
browser."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import Error as PlaywrightError

from auth import accounts, actions, enrol
from auth.identity import Identity
from mapserver import db
from mapserver.cases import store
from mapserver.cases.calendar import WorkCalendar
from mapserver.maintenance import accounts_admin

from .app_client import SECRET, Install
from .conftest import demo_database
from .test_browser import (
    LEAKS,
    _browser,
    _context,
    _needs_chromium,
    harness_reset,
    visit,
    wait_until,
)
from .test_case_browser import _without_blobs
from .tls import Server

PROXY_ERROR = "<html><body><h1>502 Bad Gateway</h1></body></html>"
PEOPLE = {  # account → (role, organisation; "BUREAU" is the first bureau of the demo)
    "mb-operator": ("operator", None),
    "mb-leader": ("shift_leader", None),
    "mb-dispatcher": ("dispatcher", None),
    "mb-bureau": ("bureau_handler", "BUREAU"),
    "mb-street": ("street_supervisor", "street-001"),
    "mb-admin": ("admin", None),
}


@dataclasses.dataclass
class Site:
    install: Install
    server: Server
    bureau: str
    grid: str

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    @property
    def url(self) -> str:
        return self.install.settings.database_url

    def act(self, who: str, number: str, name: str, **params: Any) -> dict[str, Any]:
        """A signed step through the in-process app (setting the scene, not under test)."""
        with psycopg.connect(self.url) as conn:
            state = conn.execute(
                "SELECT state FROM city_case WHERE number = %s", (number,)
            ).fetchone()[0]
        body = {"from": state, **params}
        envelope = self.install.envelope(who, f"case.{name}", f"case {number}", body)
        reply = self.install.client(who).post(f"/cases/{number}/{name}", json=envelope)
        assert reply.status_code == 200, reply.get_json()
        return reply.get_json()  # type: ignore[no-any-return]

    def handling_case(self, description: str) -> str:
        body = {"source": "phone", "kind": "event", "major": "01", "minor": "02",
                "description": description, "place": {"grid": self.grid}}  # fmt: skip
        envelope = self.install.envelope("mb-operator", "case.record", "cases", body)
        reply = self.install.client("mb-operator").post("/cases/record", json=envelope)
        assert reply.status_code == 201, reply.get_json()
        number = str(reply.get_json()["number"])
        self.act("mb-operator", number, "accept")
        self.act("mb-leader", number, "file")
        self.act("mb-dispatcher", number, "dispatch", bureau=self.bureau)
        self.act("mb-bureau", number, "receive")
        return number


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _needs_chromium()
    settings = demo_database("citygrid_mb", tmp_path_factory.mktemp("mb-var"))
    install = Install(settings, tmp_path_factory.mktemp("mb-certs"), rate_limit_api="*=100000/hour")
    with psycopg.connect(settings.database_url) as conn:
        bureau, grid = (
            str(conn.execute(query).fetchone()[0])  # type: ignore[index]
            for query in (
                "SELECT code FROM organisation WHERE kind = 'bureau' AND active"
                " ORDER BY code LIMIT 1",
                "SELECT code FROM unit_grid WHERE code LIKE '110108001%' ORDER BY code LIMIT 1",
            )
        )
    for name, (role, org) in PEOPLE.items():
        install.account(name, [role], bureau if org == "BUREAU" else org)
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
            "CITYGRID_RATE_LIMIT_TILES": "*=100000/hour",
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
        }
    )
    try:
        server.wait_ready()
        yield Site(install, server, bureau, grid)
    finally:
        server.stop()
        install.close()
        db.drop_database(settings)


class People:
    """One browser context per person, every page error and 4xx/5xx kept."""

    def __init__(self, browser: Any, site: Site):
        self.site = site
        self.errors: list[str] = []
        self.resets: list[str] = []  # Playwright's own answers (test_browser.harness_reset)
        self.bodies: list[tuple[str, str, bytes]] = []
        self.pages: dict[str, Any] = {}
        for name in PEOPLE:
            page = _context(browser, site.origin, site.install.out, name).new_page()
            page.on("pageerror", lambda e: self.errors.append(str(e)))
            page.on("response", self._keep)
            self.pages[name] = page

    def _keep(self, response: Any) -> None:
        if harness_reset(response):
            self.resets.append(response.url)
            return
        if response.status >= 400:
            detail = ""
            if response.status >= 500:  # the server's own words, to tell why
                with contextlib.suppress(Exception):
                    detail = " " + response.body()[:200].decode(errors="replace")
            self.errors.append(f"{response.status} {response.url}{detail}")
        kind = response.headers.get("content-type", "")
        if kind.startswith(("application/json", "text/")):
            with contextlib.suppress(Exception):  # a response without a body
                self.bodies.append((response.url, kind, response.body()))

    def no_coordinates(self) -> None:
        """Nothing the pages received carries a coordinate or names the CRS."""
        assert any("/street/stats" in url or "/maintenance/" in url for url, _, _ in self.bodies)
        for url, _, body in self.bodies:
            body = _without_blobs(url, body)
            for leak in LEAKS:
                assert not leak.search(body), (url, leak.pattern, leak.search(body))

    def wait(self, page: Any, expression: str) -> None:
        try:
            wait_until(page, expression)
        except (AssertionError, PlaywrightError) as e:  # timed out, or the page is not ours
            log = self.site.server.output.text()[-4000:] if self.errors else ""
            raise AssertionError(
                f"{e}; page errors: {self.errors}; harness resets: {self.resets};"
                f" server log:\n{log}"
            ) from None

    def enrol(self, name: str, path: str) -> Any:
        with db.transaction(self.site.install.settings) as conn:
            code = enrol.issue_code(conn, name)
        page = self.pages[name]
        visit(page, self.site.origin + path)
        self.wait(page, "document.getElementById('signer-status').textContent.includes('尚未')")
        page.fill("#enrol-code", code)
        page.click("#enrol")
        self.wait(page, "document.getElementById('signer-status').textContent.includes('已登记')")
        return page

    def case(self, name: str, number: str) -> Any:
        page = self.pages[name]
        visit(page, f"{self.site.origin}/inbox/{number}")
        self.wait(page, "document.getElementById('chain-status').className !== 'status'")
        return page

    def act(self, name: str, number: str, transition: str, field: str, text: str) -> Any:
        page = self.case(name, number)
        before = page.evaluate("document.body.dataset.version")
        form = page.locator(f'form.action[data-transition="{transition}"]')
        assert form.count() == 1, (name, transition, page.inner_text("#actions"))
        form.locator(f'[name="{field}"]').fill(text)
        form.locator('button[type="submit"]').click()
        self.wait(page, f"document.body.dataset.version !== '{before}'")
        self.wait(page, "document.getElementById('chain-status').className !== 'status'")
        assert page.inner_text("#action-result").startswith("已"), page.inner_text("#action-result")
        return page


def test_street_supervision_in_the_browser(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    number = site.handling_case("人行道井盖松动")
    late = site.handling_case("路灯不亮")
    # An order given ten working days ago (store.act's clock, as the view uses it): its
    # answer is long overdue, so it stands escalated to the command centre.
    who = Identity("mb-street", ("street_supervisor",), ("110108001",), "", "", "person")
    params = {"from": "handling", "message": "请立即处置"}
    envelope = site.install.envelope("mb-street", "case.order", f"case {late}", params)
    with psycopg.connect(site.url) as conn, conn.transaction():
        _, action_id = actions.accept(
            conn, who, envelope, "case.order", f"case {late}", site.install.store.certificate()
        )
        store.act(conn, WorkCalendar.from_settings(site.install.settings), number=late,
                  name="order", params=params, account="mb-street", signed_action=action_id,
                  now=dt.datetime.now(dt.UTC) - dt.timedelta(days=14))  # fmt: skip

    with sync_playwright() as p:
        browser = _browser(p)
        people = People(browser, site)
        page = people.enrol("mb-street", "/inbox")
        people.wait(page, "document.querySelector('#inbox').dataset.loaded === '1'")
        assert page.locator(f'#inbox tr[data-number="{number}"]').count() == 1
        assert not page.locator("#street-link").is_hidden()

        page = people.act("mb-street", number, "order", "message", "请于时限内处置并回复")
        people.wait(page, "document.querySelectorAll('#supervision tbody tr').length === 1")
        row = page.locator("#supervision tbody tr")
        assert row.get_attribute("data-standing") == "waiting"
        assert "待回复" in row.inner_text() and "请于时限内处置并回复" in row.inner_text()
        people.wait(page, "document.getElementById('history').dataset.verified === '6'")
        assert page.locator('#history tr[data-transition="order"] td.sig').inner_text() == (
            "✓ 已验证"
        )
        page.screenshot(path=str(tmp_path / "order.png"), full_page=True)

        people.enrol("mb-bureau", "/inbox")
        page = people.act("mb-bureau", number, "answer", "reply", "已安排维修，今日完成")
        people.wait(page, "document.querySelector('#supervision tbody tr').dataset.standing"
                          " === 'answered'")  # fmt: skip
        assert "已安排维修，今日完成" in page.inner_text("#supervision")

        # The command centre: the late order's case waits in its inbox, marked.
        page = people.pages["mb-dispatcher"]
        visit(page, site.origin + "/inbox")
        people.wait(page, "document.querySelector('#inbox').dataset.loaded === '1'")
        flagged = page.locator(f'#inbox tr[data-number="{late}"]')
        assert flagged.get_attribute("data-escalated") == "1"
        assert "督办逾期" in flagged.inner_text()
        page.check("#escalated-only")
        only_late = (
            "document.querySelectorAll('#inbox tbody tr').length === 1 && "
            f"document.querySelector('#inbox tbody tr').dataset.number === '{late}'"
        )
        people.wait(page, only_late)
        page = people.case("mb-dispatcher", late)
        assert page.locator("#supervision tbody tr").get_attribute("data-standing") == "escalated"
        assert page.locator('#history tr[data-transition="escalate"]').count() == 1
        assert "升级至指挥中心" in page.inner_text("#history")
        page.screenshot(path=str(tmp_path / "escalated.png"), full_page=True)

        # Street statistics: the page, its download, its printed form.
        page = people.pages["mb-street"]
        visit(page, site.origin + "/street")
        people.wait(page, "document.body.dataset.loaded === '1'")
        shown = int(page.inner_text('.street-report table.total td[data-key="reported"]'))
        api = page.evaluate(
            "fetch(document.getElementById('csv').href.replace('format=csv', 'format=json'))"
            ".then(r => r.json())"
        )
        assert [s["street"]["code"] for s in api["streets"]] == ["110108001"]
        assert shown == api["streets"][0]["total"]["reported"] >= 2
        assert api["streets"][0]["total"]["orders"] >= 1
        with page.expect_download() as download:
            page.click("#csv")
        text = Path(download.value.path()).read_bytes().decode("utf-8-sig")
        assert text.splitlines()[0].startswith("street_code,street,breakdown")
        assert download.value.suggested_filename.endswith(".csv")
        page.emulate_media(media="print")
        assert page.locator("header").evaluate("e => getComputedStyle(e).display") == "none"
        assert page.locator(".controls").evaluate("e => getComputedStyle(e).display") == "none"
        assert not page.locator("#printed-at").is_hidden()
        page.pdf(path=str(tmp_path / "street-stats.pdf"))
        assert (tmp_path / "street-stats.pdf").stat().st_size > 1000
        page.emulate_media(media="screen")
        page.screenshot(path=str(tmp_path / "street.png"), full_page=True)
        browser.close()
    assert not people.errors, people.errors
    assert len(people.resets) <= 2, people.resets  # a race at keep-alive's end, not a pattern
    people.no_coordinates()


def test_manage_in_the_browser(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        people = People(browser, site)
        page = people.enrol("mb-admin", "/manage")
        people.wait(page, "document.body.dataset.ready === '1'")

        def said() -> str:
            people.wait(page, "document.getElementById('op-result').className !== 'status'")
            result = str(page.inner_text("#op-result"))
            page.evaluate("document.getElementById('op-result').className = 'status'")
            return result

        def done() -> None:
            result = said()
            assert result.startswith("已签名提交"), result

        def held_first(held: list[Any], route: Any) -> None:
            if held:
                route.continue_()
            else:
                held.append(route)

        def bad_gateway_once(failed: list[str], route: Any) -> None:
            if failed or route.request.method != "GET":
                route.continue_()
            else:
                failed.append(route.request.url)
                route.fulfill(status=502, content_type="text/html", body=PROXY_ERROR)

        # Accounts: search, grant and take a role, disable and enable, an enrolment code.
        page.fill('#account-search input[name="q"]', "mb-")
        page.click('#account-search button[type="submit"]')
        people.wait(page, "document.getElementById('account-list').dataset.loaded === '6'")
        assert page.locator("#account-truncated").is_hidden()
        # A search that fails says so and leaves the list as it was.
        page.route("**/maintenance/accounts?*", lambda route: route.abort())
        page.click('#account-search button[type="submit"]')
        assert said().startswith("失败")
        assert page.locator("#account-list tbody tr").count() == 6
        page.unroute("**/maintenance/accounts?*")
        # The account clicked last is the one shown, whichever answer comes last.
        held: list[Any] = []
        page.route("**/maintenance/accounts/mb-operator", lambda route: held_first(held, route))
        page.click('#account-list tr[data-name="mb-operator"]')
        page.click('#account-list tr[data-name="mb-dispatcher"]')
        people.wait(page, "document.getElementById('account-detail').dataset.loaded"
                          " === 'mb-dispatcher:true:dispatcher:0'")  # fmt: skip
        assert held
        with page.expect_response(lambda r: r.url.endswith("/mb-operator")):
            held[0].continue_()
        page.wait_for_timeout(500)
        page.unroute("**/maintenance/accounts/mb-operator")
        assert page.get_attribute("#account-detail", "data-loaded") == (
            "mb-dispatcher:true:dispatcher:0"
        )
        # A change made, whose account then cannot be read again, is said to be made (and not
        # shown yet), not to have failed: it would be signed a second time.
        failed: list[str] = []
        page.route("**/maintenance/accounts/mb-dispatcher", lambda r: bad_gateway_once(failed, r))
        page.select_option('#grant-role select[name="role"]', "leader")
        page.click('#grant-role button[type="submit"]')
        result = said()
        assert result.startswith("已签名提交") and "页面尚未显示此更改" in result, result
        page.unroute("**/maintenance/accounts/mb-dispatcher")
        people.errors.remove(f"502 {failed[0]} {PROXY_ERROR}")
        page.click('#account-list tr[data-name="mb-dispatcher"]')
        people.wait(page, "document.getElementById('account-detail').dataset.loaded"
                          " === 'mb-dispatcher:true:dispatcher,leader:0'")  # fmt: skip
        page.click('#detail-roles .chip[data-role="leader"] button')
        done()
        people.wait(page, "document.getElementById('account-detail').dataset.loaded"
                          " === 'mb-dispatcher:true:dispatcher:0'")  # fmt: skip
        page.click("#toggle-active")
        done()
        people.wait(page, "document.getElementById('account-detail').dataset.loaded"
                          " === 'mb-dispatcher:false:dispatcher:0'")  # fmt: skip
        page.click("#toggle-active")
        done()
        people.wait(page, "document.getElementById('account-detail').dataset.loaded"
                          " === 'mb-dispatcher:true:dispatcher:0'")  # fmt: skip
        page.click('#enrol-code-form button[type="submit"]')
        done()
        people.wait(page, "document.getElementById('issued-code').textContent.length > 0")
        code = page.inner_text("#issued-code")
        assert len(code) == 29 and code.count("-") == 5, code

        # A CSR that is not one is refused in the page, saying why.
        page.fill('#issue-form textarea[name="csr"]', "-----BEGIN-----\n@@@@\n-----END-----")
        page.click('#issue-form button[type="submit"]')
        assert said().startswith("失败")

        # A person certificate from the person's own CSR, then revoked: both signed.
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mb-dispatcher")]))
            .sign(key, hashes.SHA256())
        )
        page.fill('#issue-form textarea[name="csr"]',
                  csr.public_bytes(serialization.Encoding.PEM).decode())  # fmt: skip
        page.click('#issue-form button[type="submit"]')
        done()
        people.wait(page, "!document.getElementById('issued-certificate').hidden")
        issued = x509.load_pem_x509_certificates(page.inner_text("#issued-certificate").encode())
        assert issued[0].public_key().public_numbers() == key.public_key().public_numbers()
        serial = format(issued[0].serial_number, "x")
        people.wait(page, f"!!document.querySelector('#certificates tr[data-serial=\"{serial}\"]')")
        page.click(f'#certificates tr[data-serial="{serial}"] button')
        done()
        people.wait(page, "document.getElementById('account-detail').dataset.loaded"
                          " === 'mb-dispatcher:true:dispatcher:1'")  # fmt: skip
        assert "已吊销" in page.inner_text(f'#certificates tr[data-serial="{serial}"]')

        # Organisations: a department under the bureau.
        page.fill('#org-form input[name="code"]', f"{site.bureau}.lamps")
        page.fill('#org-form input[name="name"]', "路灯科")
        page.select_option('#org-form select[name="kind"]', "department")
        page.select_option('#org-form select[name="parent"]', site.bureau)
        page.click('#org-form button[type="submit"]')
        done()
        people.wait(page, f"!!document.querySelector('#org-tree li[data-code=\"{site.bureau}\"]"
                          f" li[data-code=\"{site.bureau}.lamps\"]')")  # fmt: skip

        # A class's handling limit: a new limits version.
        version = int(page.evaluate("document.getElementById('limits').dataset.version"))
        page.click('#class-table tr[data-code="01/02"]')
        page.fill('#class-form input[name="time_limit"]', "5")
        page.select_option('#class-form select[name="time_unit"]', "working_hours")
        page.click('#class-form button[type="submit"]')
        done()
        people.wait(page, f"document.getElementById('limits').dataset.version === '{version + 1}'")
        # The class table is loaded again beside the limits, each in its own time.
        people.wait(page, "(document.querySelector('#class-table tr[data-code=\"01/02\"]')"
                          " || {innerText: ''}).innerText.includes('5 工作小时')")  # fmt: skip

        # The work calendar: a local holiday.
        page.fill('#calendar-form input[name="day"]', "2031-03-03")
        page.select_option('#calendar-form select[name="kind"]', "holiday")
        page.fill('#calendar-form input[name="note"]', "区级活动")
        page.click('#calendar-form button[type="submit"]')
        done()
        people.wait(page, "!!document.querySelector('#overrides tr[data-day=\"2031-03-03\"]')")
        people.wait(page, "document.querySelectorAll('#change-log tbody tr').length >= 3")
        # The change log one a page: "older changes" adds each, newest first, to the first.
        shown = page.locator("#change-log tbody tr").count()
        page.evaluate("document.getElementById('change-log').dataset.page = '1'")
        page.evaluate("document.querySelector('#change-log tbody').textContent = ''")
        page.evaluate("document.getElementById('change-log-older').hidden = true")
        page.click('#calendar-form button[type="submit"]')  # the same day again: a change too
        done()
        people.wait(page, "document.querySelectorAll('#change-log tbody tr').length === 1")
        for n in range(2, shown + 3):
            if page.locator("#change-log-older").is_hidden():
                break
            page.click("#change-log-older")
            people.wait(page, f"document.querySelectorAll('#change-log tbody tr').length === {n}")
        versions = page.locator("#change-log tbody tr").evaluate_all(
            "rs => rs.map(r => Number(r.dataset.version))"
        )
        assert len(versions) == shown + 1 and versions == sorted(versions, reverse=True)
        page.screenshot(path=str(tmp_path / "manage.png"), full_page=True)

        # A search that finds more than the list holds says so.
        with db.transaction(site.install.settings) as conn:
            for i in range(accounts_admin.MAX_RESULTS + 1):
                accounts.add(conn, f"mbmany-{i:03d}", ["viewer"])
        page.fill('#account-search input[name="q"]', "mbmany-")
        page.click('#account-search button[type="submit"]')
        shown = accounts_admin.MAX_RESULTS
        people.wait(page, f"document.getElementById('account-list').dataset.loaded === '{shown}'")
        assert page.locator("#account-truncated").is_visible()
        browser.close()
    assert not people.errors, people.errors
    assert len(people.resets) <= 2, people.resets  # a race at keep-alive's end, not a pattern
    people.no_coordinates()

    with psycopg.connect(site.url) as conn:
        signed = conn.execute(
            """SELECT s.action, c.kind FROM signed_action s JOIN certificate c
               ON c.pem = s.certificate WHERE s.account = 'mb-admin' ORDER BY s.id"""
        ).fetchall()
        areas = [r[0] for r in conn.execute(
            "SELECT area FROM maintenance_change WHERE account = 'mb-admin' ORDER BY id"
        ).fetchall()]  # fmt: skip
    assert [a for a, _ in signed] == [
        "account.grant", "account.revoke_role", "account.disable", "account.enable",
        "pki.enrol_code", "pki.issue", "pki.revoke", "org.save", "class.update", "calendar.set",
        "calendar.set",  # the same day again, for the change log's paging
    ]  # fmt: skip
    assert {kind for _, kind in signed} == {"signing"}  # the browser's enrolled key
    assert areas == ["organisation", "limit", "calendar", "calendar"]
