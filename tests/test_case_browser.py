"""The case workflow in headless Chromium over mutual TLS: one browser per person, each with
its own client certificate and a WebCrypto signing key enrolled with a one-time code, walks
one case from a phone complaint to its closing, with a rework, every step signed in the
browser and every signature shown verified by the browser against the CA."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rfc8785
from click.testing import CliRunner
from PIL import Image
from playwright.sync_api import Error as PlaywrightError

from audit.keys import PUBLIC_FILE
from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.cli import main as cli_main
from mapserver.settings import Settings
from tiles import png

from .conftest import demo_database
from .evidence import head_logged
from .test_browser import (
    LEAKS,
    _browser,
    _context,
    _enrol_code,
    _needs_chromium,
    harness_reset,
    visit,
    wait_until,
)
from .test_case_attachments import amr, mp3
from .tls import Server, request

SECRET = "case browser test passphrase"
SCAN = LEAKS  # test_browser's patterns
PEOPLE = {  # account → (role, organisation; "BUREAU" is the first bureau of the demo)
    "cb-operator": ("operator", None),
    "cb-inspector": ("inspector", "street-001"),
    "cb-leader": ("shift_leader", None),
    "cb-dispatcher": ("dispatcher", None),
    "cb-bureau": ("bureau_handler", "BUREAU"),
}


@dataclasses.dataclass
class Site:
    server: Server
    settings: Settings
    out: Path
    bureau: str
    grid: str
    address: str

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _needs_chromium()
    settings = demo_database("citygrid_case_browser", tmp_path_factory.mktemp("cb-var"))
    out = tmp_path_factory.mktemp("cb-certs")
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    with db.transaction(settings) as conn:
        bureau, grid, address = (
            str(conn.execute(query).fetchone()[0])  # type: ignore[index]
            for query in (
                "SELECT code FROM organisation WHERE kind = 'bureau' AND active"
                " ORDER BY code LIMIT 1",
                "SELECT code FROM unit_grid WHERE code LIKE '110108001%' ORDER BY code LIMIT 1",
                "SELECT full_text FROM address WHERE kind = 'house'"
                " AND grid_code LIKE '110108001%' ORDER BY id LIMIT 1",
            )
        )
        for name, (role, org) in PEOPLE.items():
            accounts.add(conn, name, [role], bureau if org == "BUREAU" else org)
            certs.issue(conn, store, SECRET.encode(), name, pki.Kind.PERSON, out)
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
        yield Site(server, settings, out, bureau, grid, address)
    finally:
        server.stop()
        db.drop_database(settings)


def _without_blobs(url: str, body: bytes) -> bytes:
    """A case bundle carries certificates, CRLs and signatures: random base64 that a pattern
    may match by chance. Scan what they sign instead: each payload, decoded."""
    if not url.endswith("/bundle"):
        return body
    doc = json.loads(body)
    for event in doc["events"]:
        signed = event.pop("bundle")
        event["payload"] = base64.b64decode(signed["payload"]).decode("utf-8") if signed else None
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


class Desk:
    """The people at their browsers, each page recording every response it receives."""

    def __init__(self, browser: Any, site: Site, shots: Path):
        self.site = site
        self.shots = shots
        self.pages: dict[str, Any] = {}
        self.bodies: list[tuple[str, str, bytes]] = []
        self.errors: list[str] = []
        self.resets: list[str] = []
        for name in PEOPLE:
            page = _context(browser, site.origin, site.out, name).new_page()
            page.on("response", self._keep)
            page.on("pageerror", lambda e: self.errors.append(str(e)))
            self.pages[name] = page

    def _keep(self, response: Any) -> None:
        if harness_reset(response):  # the harness's answer, not the server's (test_browser)
            self.resets.append(response.url)
            return
        if response.status >= 400:
            said = ""
            with contextlib.suppress(Exception):  # the JSON problem says which check refused
                said = " " + response.body()[:200].decode(errors="replace")
            self.errors.append(f"{response.status} {response.url}{said}")
        with contextlib.suppress(Exception):  # a response without a body (aborted, 304)
            self.bodies.append(
                (response.url, response.headers.get("content-type", ""), response.body())
            )

    def wait(self, page: Any, expression: str) -> None:
        try:
            wait_until(page, expression)
        except (AssertionError, PlaywrightError) as e:  # timed out, or the page is not ours
            raise AssertionError(
                f"{e}; page errors: {self.errors}; harness resets: {self.resets};"
                f" {self._refusals()}"
            ) from None

    def _refusals(self) -> str:
        """What the server said of its 5xx answers and refused connections: their audit
        entries and its log's tail. Playwright's client-certificate proxy answers a 503 of its
        own when its TLS connection to the server fails (and the browser may then show a
        cached body): a `tls.refused` entry names the server's side of that."""
        with psycopg.connect(self.site.settings.database_url) as conn:
            rows = conn.execute(
                "SELECT action, resource, status, detail FROM audit_queue"
                " WHERE status >= 500 OR action LIKE 'tls.%' ORDER BY id DESC LIMIT 10"
            ).fetchall()
        return f"entries: {rows}; server log: {self.site.server.output.text()[-3000:]}"

    def enrol(self, name: str) -> None:
        page = self.pages[name]
        visit(page, self.site.origin + "/inbox")
        self.wait(page, "document.getElementById('signer-status').textContent.includes('尚未')")
        page.fill("#enrol-code", _enrol_code(self.site.settings, self.site.server, name))
        page.click("#enrol")
        self.wait(page, "document.getElementById('signer-status').textContent.includes('已登记')")

    def inbox(self, name: str, scope: str = "inbox") -> Any:
        page = self.pages[name]
        visit(page, self.site.origin + "/inbox")
        self.wait(page, "document.querySelector('#inbox').dataset.loaded === '1'")
        if scope != "inbox":
            page.evaluate("document.querySelector('#inbox').dataset.loaded = ''")
            page.select_option("#scope", scope)
            self.wait(page, "document.querySelector('#inbox').dataset.loaded === '1'")
        return page

    def open(self, name: str, number: str) -> Any:
        """From the person's inbox to the case, as a person would: the case must wait there."""
        page = self.inbox(name)
        row = page.locator(f'#inbox tr[data-number="{number}"]')
        assert row.count() == 1, (name, number, page.inner_text("#inbox"))
        row.locator("a").click()
        page.wait_for_url(f"**/inbox/{number}")
        self.settled(page)
        return page

    def settled(self, page: Any) -> None:
        self.wait(page, "document.getElementById('chain-status').className !== 'status'")

    def act(self, name: str, number: str, transition: str, fields: dict[str, Any]) -> str:
        page = self.open(name, number)
        before = page.evaluate("document.body.dataset.version")
        form = page.locator(f'form.action[data-transition="{transition}"]')
        assert form.count() == 1, (name, transition, page.inner_text("#actions"))
        for field, value in fields.items():
            control = form.locator(f'[name="{field}"]')
            if isinstance(value, Path | list):
                control.set_input_files(value)
            elif control.evaluate("e => e.tagName") == "SELECT":
                control.select_option(value)
            else:
                control.fill(value)
        form.locator('button[type="submit"]').click()
        self.wait(page, f"document.body.dataset.version !== '{before}'")
        self.settled(page)
        result = page.inner_text("#action-result")
        assert result.startswith("已"), (name, transition, result)
        page.screenshot(path=str(self.shots / f"{len(self.bodies):04d}-{transition}.png"))
        return str(page.evaluate("document.getElementById('state').dataset.state"))


def test_a_case_through_every_role_in_the_browser(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    photos = []
    for i, colour in enumerate(((200, 60, 40), (40, 160, 80))):
        photo = tmp_path / f"photo-{i}.png"
        Image.new("RGB", (320, 240), colour).save(photo)
        photos.append(photo)
    voices = [tmp_path / "call.mp3", tmp_path / "site.amr"]  # the call, the bureau's report
    voices[0].write_bytes(mp3(frames=40))  # 1.04 s
    voices[1].write_bytes(amr(frames=150))  # 3 s
    with sync_playwright() as p:
        browser = _browser(p)
        desk = Desk(browser, site, tmp_path)
        for name in PEOPLE:
            desk.enrol(name)

        # The operator records a phone complaint, placed by its unit grid code.
        page = desk.inbox("cb-operator")
        assert not page.locator("#new-case").is_hidden()
        page.select_option('select[name="source"]', "phone")
        page.select_option('select[name="event_class"]', "01/02")
        page.fill('input[name="place"]', site.grid)
        page.fill('textarea[name="description"]', "路边暴露垃圾，气味难闻")
        page.fill('input[name="contact"]', "13800000000")
        page.set_input_files('#case-form input[name="photos"]', [photos[0], voices[0]])
        page.click('#case-form button[type="submit"]')
        page.wait_for_url(re.compile(r".*/inbox/\d{4}-\d{6}$"))
        number = page.url.rsplit("/", 1)[1]
        desk.settled(page)
        assert page.evaluate("document.getElementById('state').dataset.state") == "reported"
        assert "13800000000" in page.inner_text("#fields")  # operators see the caller

        # The case's place: the finest level's tile with a marker, and a link into the viewer.
        desk.wait(page, "document.getElementById('minimap-tile').naturalWidth === 256")
        # ... with its neighbours, moved so that the marker, at the box's centre, is on the
        # case's pixel of its tile, whichever corner of the tile that is.
        off = page.evaluate(
            """() => {
              const box = document.getElementById('minimap').getBoundingClientRect();
              const tile = document.getElementById('minimap-tile').getBoundingClientRect();
              const mark = document.getElementById('marker').getBoundingClientRect();
              const link = document.getElementById('map-link').getAttribute('href');
              const q = new URLSearchParams(link.slice(2));  // "/#level=…&col=…&row=…"
              const p = {col: Number(q.get('col')), row: Number(q.get('row'))};
              const mx = mark.left + mark.width / 2, my = mark.top + mark.height / 2;
              return [tile.left + p.col - mx, tile.top + p.row - my,
                      mx - (box.left + box.width / 2), my - (box.top + box.height / 2),
                      document.querySelectorAll('#mosaic img').length];
            }"""
        )
        assert all(abs(d) <= 1.5 for d in off[:4]) and off[4] == 9, off
        link = page.get_attribute("#map-link", "href") or ""
        assert re.fullmatch(r"/#level=\d+&x=\d+&y=\d+&col=\d+&row=\d+", link), link
        visit(page, site.origin + link)
        desk.wait(page, "document.querySelectorAll('path.leaflet-interactive').length === 1")
        desk.wait(page, "window.citygridMap.getZoom() === window.citygridMap.getMaxZoom()")
        page.screenshot(path=str(tmp_path / "viewer-at-case.png"))

        steps: list[tuple[str, str, dict[str, Any], str]] = [
            ("cb-inspector", "verify", {"note": "现场属实"}, "accepted"),
            ("cb-leader", "file", {}, "filed"),
            ("cb-dispatcher", "dispatch", {"bureau": site.bureau}, "dispatched"),
            ("cb-bureau", "receive", {}, "handling"),
            (
                "cb-bureau",
                "handle",
                {"result": "已清运", "photos": [photos[1], voices[1]]},
                "handled",
            ),
            ("cb-dispatcher", "forward", {}, "feedback"),
            ("cb-operator", "request_check", {}, "checking"),
            ("cb-inspector", "check_fail", {"note": "仍有残留"}, "handling"),  # rework
            ("cb-bureau", "handle", {"result": "已彻底清理"}, "handled"),
            ("cb-dispatcher", "forward", {}, "feedback"),
            ("cb-operator", "request_check", {}, "checking"),
            ("cb-inspector", "check_pass", {"note": "已清理干净"}, "closed"),
        ]
        for name, transition, fields, state in steps:
            if transition == "file":  # the forms offered are exactly what the table allows
                page = desk.open(name, number)
                offered = page.eval_on_selector_all(
                    "form.action", "fs => fs.map(f => f.dataset.transition)"
                )
                assert offered == ["file", "cancel"], offered
            assert desk.act(name, number, transition, fields) == state, (name, transition)

        # The page that made the last step found no export of the new version in the log (its
        # own request for the bundle is the first): it says so, asks again while it waits,
        # and shows the history complete without a reload once a checkpoint covers it.
        closing = desk.pages["cb-inspector"]
        assert closing.inner_text("#head-status").startswith("— 日志尚未记录本案此版本的导出")
        head_logged(site.settings, number, 13)
        desk.wait(closing, "document.getElementById('head-status').dataset.verified === 'true'")
        complete = "✓ 历史完整：日志记录本案导出时共 13 步"
        assert closing.inner_text("#head-status").startswith(complete)

        # Closed: every step, from the complaint on, shows its signature verified.
        page = desk.pages["cb-leader"]
        visit(page, f"{site.origin}/inbox/{number}")
        desk.settled(page)
        assert page.inner_text("#chain-status").startswith("✓ 全部 13 个签名均已验证")
        marks = page.locator("#history td.sig").all_inner_texts()
        assert marks == ["✓ 已验证"] * 13, marks
        rows = page.locator("#history tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.transition)"
        )
        assert rows == ["create"] + [s[1] for s in steps]
        assert "仍有残留" in page.inner_text("#history")  # shown from the verified payload
        assert "contact_digest" not in page.inner_text("#history")  # a salted hash: not for people
        # The photos of the complaint and of the first result, signed by their hashes.
        desk.wait(
            page,
            "Array.from(document.querySelectorAll('#history img.photo'))"
            ".filter(i => i.naturalWidth === 320).length === 2",
        )
        with_photo = page.locator("#history tr:has(img.photo)").evaluate_all(
            "rs => rs.map(r => r.dataset.transition)"
        )
        assert with_photo == ["create", "handle"], with_photo
        # The voice recordings, signed by their hashes too: the call's MP3 plays in the page,
        # the bureau's AMR (which browsers do not play) is offered as a download.
        desk.wait(page, "document.querySelectorAll('#history .voice').length === 2")
        voiced = page.locator("#history tr:has(.voice)").evaluate_all(
            "rs => rs.map(r => r.dataset.transition)"
        )
        assert voiced == ["create", "handle"], voiced
        create, handle = (
            '#history tr[data-transition="create"]',
            '#history tr[data-transition="handle"]',
        )
        assert page.locator(f"{create} .voice audio").count() == 1
        assert page.inner_text(f"{create} .voice").startswith("录音 0:01")
        saved = page.get_attribute(f"{handle} .voice a", "download")
        assert saved and saved.startswith(f"case-{number}-") and saved.endswith(".amr"), saved
        assert page.inner_text(f"{handle} .voice").startswith("录音 0:03")
        assert page.locator("#actions form").count() == 0
        assert "13800000000" not in page.inner_text("main")  # the caller: operators only
        with psycopg.connect(site.settings.database_url) as conn:
            bureau_name = conn.execute(
                "SELECT name FROM organisation WHERE code = %s", (site.bureau,)
            ).fetchone()[0]
        assert f"{bureau_name}（{site.bureau}）" in page.inner_text("#fields")  # its name, too
        page.screenshot(path=str(tmp_path / "closed.png"), full_page=True)

        # The history is complete: the log's entry of an export of this version (a page's
        # request for the bundle), checked here against the platform's log key. Altered on
        # its way, it shows as not matching.
        head_logged(site.settings, number, 13)
        visit(page, f"{site.origin}/inbox/{number}")
        desk.wait(page, "document.getElementById('head-status').dataset.verified !== undefined")
        assert page.inner_text("#head-status").startswith("✓ 历史完整：日志记录本案导出时共 13 步")
        # Every step is in the log too: its entry names its signature (the time in its title).
        logged = page.locator("#history tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.logged)"
        )
        assert len(logged) == 13 and all(re.match(r"\d{4}-\d\d-\d\dT", t) for t in logged)
        # The evidence downloaded from the page verifies offline, complete at this version.
        with page.expect_download() as download:
            page.click("#bundle-link")
        saved = tmp_path / download.value.suggested_filename
        download.value.save_as(saved)
        assert saved.name == f"case-{number}.json"
        pins = [
            "--ca",
            str(CaStore(site.settings.pki_dir).cert_path),
            "--log-key",
            str(site.settings.pki_dir / PUBLIC_FILE),
        ]
        offline = CliRunner().invoke(cli_main, ["verify-action", str(saved), *pins])
        assert offline.exit_code == 0, offline.output
        assert f"valid: case {number}, 13 signed actions" in offline.output
        assert "; complete: the log recorded its export at version 13 (closed)" in offline.output

        def cut(route: Any) -> None:
            response = route.fetch()
            doc = response.json()
            doc["head"]["log"]["entry"]["detail"]["case_head"]["version"] = 12
            doc["events"][2]["bundle"]["log"]["entry"]["status"] = 500
            route.fulfill(response=response, body=json.dumps(doc))

        page.route("**/bundle", cut)
        visit(page, f"{site.origin}/inbox/{number}")
        desk.wait(page, "document.getElementById('head-status').dataset.verified === 'false'")
        page.unroute("**/bundle")
        assert page.inner_text("#head-status") == "✗ 日志中的导出记录与本案历史不符"
        marks = page.locator("#history td.sig").all_inner_texts()
        assert marks[2] == "✗ 审计日志中查无此签名行为" and marks.count("✓ 已验证") == 12, marks

        # A payload altered on its way to the browser shows as not verified.
        def altered(route: Any) -> None:
            response = route.fetch()
            doc = response.json()
            signed = doc["events"][1]["bundle"]
            payload = json.loads(base64.b64decode(signed["payload"]))
            payload["parameters"]["note"] = "现场不属实"
            signed["payload"] = base64.b64encode(rfc8785.dumps(payload)).decode()
            route.fulfill(response=response, body=json.dumps(doc))

        page.route("**/bundle", altered)
        visit(page, f"{site.origin}/inbox/{number}")
        desk.settled(page)
        page.unroute("**/bundle")
        assert page.get_attribute("#chain-status", "class") == "status bad"
        marks = page.locator("#history td.sig").all_inner_texts()
        assert marks[1] == "✗ 签名无效" and marks.count("✓ 已验证") == 12, marks

        # An inspector's report placed by address; an overdue case shows in red.
        page = desk.inbox("cb-inspector")
        page.check('input[name="place_kind"][value="address"]')
        page.fill('input[name="place"]', site.address)
        page.fill('textarea[name="description"]', "井盖缺失")
        page.click('#case-form button[type="submit"]')
        page.wait_for_url(re.compile(r".*/inbox/\d{4}-\d{6}$"))
        reported = page.url.rsplit("/", 1)[1]
        desk.settled(page)
        assert page.inner_text("#chain-status").startswith("✓ 全部 1 个签名")
        with psycopg.connect(site.settings.database_url) as conn:
            conn.execute(
                "UPDATE city_case SET stage_deadline = now() - interval '2 hours'"
                " WHERE number = %s",
                (reported,),
            )
        page = desk.inbox("cb-operator")
        row = page.locator(f'#inbox tr[data-number="{reported}"]')
        assert row.get_attribute("class") == "overdue"
        assert row.locator("td").nth(5).inner_text().startswith("已超时")
        assert row.locator("td").nth(5).evaluate("e => getComputedStyle(e).color") == (
            "rgb(210, 69, 61)"
        )
        assert page.locator(f'#inbox tr[data-number="{number}"]').count() == 0  # closed
        page.screenshot(path=str(tmp_path / "inbox.png"), full_page=True)
        # Every visible case, one a page: the pager walks them all, by deadline, each once.
        page.evaluate("document.getElementById('inbox').dataset.perPage = '1'")
        page.evaluate("document.querySelector('#inbox').dataset.loaded = ''")
        page.select_option("#scope", "all")
        desk.wait(page, "document.querySelector('#inbox').dataset.loaded === '1'")
        total = int(re.sub(r"[^0-9]", "", page.inner_text("#inbox-status")))
        pages = total
        assert total >= 2, total
        seen: list[str] = []
        for at in range(1, pages + 1):
            desk.wait(page, f"document.getElementById('inbox').dataset.page === '{at}'")
            assert page.inner_text("#inbox-page-at") == f"第 {at} / {pages} 页"
            seen += page.locator("#inbox tbody tr").evaluate_all(
                "rs => rs.map(r => r.dataset.number)"
            )
            assert page.is_disabled("#inbox-next") == (at == pages)
            if at < pages:
                page.click("#inbox-next")
        assert len(seen) == total and len(set(seen)) == total, seen
        assert number in seen  # the closed case too: all visible cases
        page.click("#inbox-prev")
        desk.wait(page, f"document.getElementById('inbox').dataset.page === '{pages - 1}'")
        # A partner system's request: its one unsigned step shown as such, not as a failure.
        with db.transaction(site.settings) as conn:
            accounts.add(conn, "cb-partner", ["partner"], None)
            store = CaStore(site.settings.pki_dir)
            certs.issue(conn, store, SECRET.encode(), "cb-partner", pki.Kind.PERSON, site.out)
            certs.publish_crl(conn, store, SECRET.encode())
        fields = {"service_code": "event-01-02", "attribute[grid]": site.grid,
                  "description": "热线转来：道路积水"}  # fmt: skip
        form = urllib.parse.urlencode(fields).encode()
        sent = request(
            site.server.port, "/open311/v2/requests.json", store.cert_path,
            site.out / "cb-partner.crt", site.out / "cb-partner.key", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"}, body=form,
        )  # fmt: skip
        assert sent.status == 201, sent.body
        partnered = sent.json()[0]["service_request_id"]
        desk.act("cb-operator", partnered, "accept", {})
        page = desk.pages["cb-operator"]
        marks = page.locator("#history td.sig").all_inner_texts()
        assert marks == ["— 合作系统提交，非个人签名", "✓ 已验证"], marks
        title = page.locator("#history td.sig").first.get_attribute("title")
        assert title == "请求摘要 SHA-256：" + hashlib.sha256(form).hexdigest(), title
        status = page.inner_text("#chain-status")
        assert status.startswith("✓ 全部 1 个签名均已验证，状态链完整；首步为合作系统"), status
        assert page.get_attribute("#chain-status", "class") == "status good"

        doms = [
            (f"{who} (DOM)", "text/html", pg.content().encode()) for who, pg in desk.pages.items()
        ]
        browser.close()

    assert not desk.errors, desk.errors
    assert len(desk.resets) <= 2, desk.resets  # a race at keep-alive's end, not a pattern
    with psycopg.connect(site.settings.database_url) as conn:
        signed = conn.execute(
            """SELECT s.account, s.action, c.kind FROM case_event e
               JOIN city_case k ON k.id = e.case_id JOIN signed_action s ON s.id = e.signed_action
               JOIN certificate c ON c.pem = s.certificate WHERE k.number = %s ORDER BY e.id""",
            (number,),
        ).fetchall()
    assert [a for _, a, _ in signed] == ["case.record"] + [f"case.{s[1]}" for s in steps]
    assert [who for who, _, _ in signed] == ["cb-operator"] + [s[0] for s in steps]
    assert {kind for _, _, kind in signed} == {"signing"}  # the browsers' enrolled keys

    # Nothing any page received carries a coordinate.
    assert any(url.endswith("/bundle") for url, _, _ in desk.bodies)
    for url, kind, body in [*desk.bodies, *doms]:
        if kind.startswith("image/png"):
            assert png.is_clean(body), url
            continue
        body = _without_blobs(url, body)
        for leak in SCAN:
            assert not leak.search(body), (url, leak.pattern, leak.search(body))


def test_a_refusal_in_words_and_a_case_returned_out_of_sight(site: Site, tmp_path: Path) -> None:
    """A step refused because the case moved on reads in the page's language (it showed the
    server's English); a bureau's page after its own return shows nothing of the case it may
    no longer see (its fields and forms stayed on the page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        desk = Desk(browser, site, tmp_path)
        for name in ("cb-operator", "cb-inspector", "cb-leader", "cb-dispatcher", "cb-bureau"):
            desk.enrol(name)
        page = desk.inbox("cb-operator")
        page.select_option('select[name="source"]', "phone")
        page.select_option('select[name="event_class"]', "01/02")
        page.fill('input[name="place"]', site.grid)
        page.fill('textarea[name="description"]', "井盖松动")
        page.click('#case-form button[type="submit"]')
        page.wait_for_url(re.compile(r".*/inbox/\d{4}-\d{6}$"))
        number = page.url.rsplit("/", 1)[1]

        # The inspector's page offers verify; meanwhile the operator accepts the case.
        inspector = desk.open("cb-inspector", number)
        assert desk.act("cb-operator", number, "accept", {}) == "accepted"
        form = inspector.locator('form.action[data-transition="verify"]')
        form.locator('[name="note"]').fill("现场属实")
        form.locator('button[type="submit"]').click()
        desk.wait(inspector, "document.getElementById('action-result').className === 'status bad'")
        said = inspector.inner_text("#action-result")
        assert said == "被拒绝：案件已变为“已受理”，请刷新后再办理", said

        for name, transition, fields in (
            ("cb-leader", "file", {}),
            ("cb-dispatcher", "dispatch", {"bureau": site.bureau}),
            ("cb-bureau", "receive", {}),
        ):
            desk.act(name, number, transition, fields)
        bureau = desk.open("cb-bureau", number)
        form = bureau.locator('form.action[data-transition="return"]')
        form.locator('[name="reason"]').fill("不属本单位职责")
        form.locator('button[type="submit"]').click()
        desk.wait(bureau, "!document.getElementById('case-error').hidden")
        assert bureau.locator("#fields").is_hidden() and bureau.locator("#actions").is_hidden()
        browser.close()
    assert [e for e in desk.errors if not e.startswith(("409 ", "404 "))] == [], desk.errors
