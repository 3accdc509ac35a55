"""The evaluation dashboard and the big screen in headless Chromium over mutual TLS.

The big screen runs as the read-only `screen` account at 1920×1080 with no interaction: a
case reported meanwhile (through the real store) shows in its counters and latest events
within a few polls. The dashboard, as a leader, draws its ECharts charts, lists every
indicator with formula, numerator and denominator, and drills from a figure to its cases.
Neither page is sent a coordinate, and neither logs an error.

With DOCS_SCREENSHOTS=DIR the screenshots are written to DIR (the README's
docs/evaluation-dashboard.png and docs/big-screen.png come from such a run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from PIL import Image

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.cases import store
from mapserver.cases.calendar import WorkCalendar
from mapserver.settings import Settings
from tiles.service import grid_from

from .conftest import demo_database
from .test_browser import LEAKS, _browser, _needs_chromium, wait_until
from .tls import Server

SECRET = "evaluation browser test passphrase"
TZ = ZoneInfo("Asia/Shanghai")
PEOPLE = {"eb-leader": ("leader", None), "eb-screen": ("screen", None),
          "eb-inspector": ("inspector", "street-001")}  # fmt: skip


Step = tuple[str, str, dict[str, Any]]


@dataclasses.dataclass
class Site:
    server: Server
    settings: Settings
    out: Path
    grids: list[str]
    first: dt.date

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def report(self, grid: str, major: str, minor: str, at: dt.datetime) -> str:
        """A case an inspector reports, through the store the routes use."""
        with db.transaction(self.settings) as conn:
            return store.create(
                conn, self.settings, grid_from(self.settings),
                WorkCalendar.from_settings(self.settings), account="eb-inspector",
                signed_action=None, now=at,
                params={"source": "inspector", "kind": "event", "major": major, "minor": minor,
                        "description": "大屏测试", "place": {"grid": grid}},
            )  # fmt: skip

    def act(self, number: str, steps: list[Step], at: dt.datetime) -> None:
        state = "reported"
        calendar = WorkCalendar.from_settings(self.settings)
        with db.transaction(self.settings) as conn:
            for i, (name, actor, params) in enumerate(steps):
                state, _ = store.act(
                    conn, calendar, number=number, name=name, params={"from": state, **params},
                    account=actor, signed_action=None, now=at + dt.timedelta(minutes=20 * (i + 1)),
                )  # fmt: skip


def history(site: Site, bureaus: list[str]) -> None:
    """About eighty cases over the last eight weeks, in every grid of two streets, several
    classes and bureaus; most closed, some with a bureau, some late."""
    rng = random.Random(15)
    now = dt.datetime.now(TZ)
    classes = [("01", "02"), ("01", "04"), ("02", "01"), ("03", "02"), ("05", "05"), ("05", "07")]
    for i in range(80):
        at = now - dt.timedelta(days=rng.randint(1, 55), hours=rng.randint(0, 6))
        at = at.replace(hour=9 + rng.randint(0, 6))
        grid = rng.choice(site.grids[: max(3, len(site.grids) // 3)] * 3 + site.grids)
        major, minor = rng.choice(classes)
        number = site.report(grid, major, minor, at)
        bureau = rng.choice(bureaus)
        steps: list[Step] = [
            ("accept", "eb-operator", {}), ("file", "eb-filer", {}),
            ("dispatch", "eb-dispatcher", {"bureau": bureau}), ("receive", "eb-handler", {}),
            ("handle", "eb-handler", {"result": "已处置"}), ("forward", "eb-dispatcher", {}),
            ("request_check", "eb-operator", {}),
            ("check_pass", "eb-inspector", {"note": "已结案"}),
        ]  # fmt: skip
        if i % 9 == 0:
            steps[4:4] = [("return", "eb-handler", {"reason": "不属本单位"}),
                          ("dispatch", "eb-dispatcher", {"bureau": bureaus[0]}),
                          ("receive", "eb-handler", {})]  # fmt: skip
        keep = len(steps) if i % 4 else rng.randint(2, len(steps) - 1)
        late = dt.timedelta(days=3) if i % 7 == 0 else dt.timedelta()
        site.act(number, steps[:keep], at + late)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _needs_chromium()
    settings = demo_database("citygrid_eval_browser", tmp_path_factory.mktemp("eb-var"))
    out = tmp_path_factory.mktemp("eb-certs")
    ca = CaStore(settings.pki_dir)
    ca.init(SECRET.encode())
    with db.transaction(settings) as conn:
        for name, (role, org) in PEOPLE.items():
            accounts.add(conn, name, [role], org)
            certs.issue(conn, ca, SECRET.encode(), name, pki.Kind.PERSON, out)
        certs.publish_crl(conn, ca, SECRET.encode())
        bureaus = [r[0] for r in conn.execute(
            "SELECT code FROM organisation WHERE kind = 'bureau'"
            " ORDER BY code LIMIT 5")]  # fmt: skip
        grids = [r[0] for r in conn.execute("SELECT code FROM unit_grid ORDER BY code")]
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
        first = (dt.datetime.now(TZ) - dt.timedelta(days=56)).date()
        site = Site(server, settings, out, grids, first)
        history(site, bureaus)
        server.wait_ready()
        yield site
    finally:
        server.stop()
        db.drop_database(settings)


class Watched:
    """One person's browser page at a size, keeping every response body and every error."""

    def __init__(
        self, browser: Any, site: Site, name: str, width: int, height: int, zone: str | None = None
    ):
        self.context = browser.new_context(
            ignore_https_errors=True,
            viewport={"width": width, "height": height},
            timezone_id=zone,
            client_certificates=[{"origin": site.origin, "certPath": str(site.out / f"{name}.crt"),
                                  "keyPath": str(site.out / f"{name}.key")}],
        )  # fmt: skip
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.bodies: list[tuple[str, bytes]] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._console)
        self.page.on("response", self._keep)

    def _console(self, message: Any) -> None:
        # A refused resource is reported with its URL by _keep (a favicon, which Playwright
        # does not show, would be a 404 here without one).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(message.text)

    def _keep(self, response: Any) -> None:
        if response.status >= 400:
            self.errors.append(f"{response.status} {response.url}")
        with contextlib.suppress(Exception):  # no body: 304, aborted
            if "javascript" not in response.headers.get("content-type", ""):
                self.bodies.append((response.url, response.body()))

    def wait(self, expression: str, timeout: float = 30) -> None:
        try:
            wait_until(self.page, expression, timeout)
        except AssertionError as e:
            with contextlib.suppress(Exception):
                self.page.screenshot(path=os.environ.get("FAILED_SCREENSHOT", "/dev/null"))
            raise AssertionError(f"{e}; page errors: {self.errors}") from None

    def no_leaks(self) -> None:
        for url, body in self.bodies:
            if url.endswith(".png"):
                continue  # pictures: checked for clean chunks in the tile tests
            for pattern in LEAKS:
                assert not pattern.search(body), (url, pattern.pattern)


def _until(page: Any, done: Any, timeout: float = 30) -> None:
    """Until `done()` holds, letting the page's events (routes held) reach this side."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def _hold_first(held: list[Any], route: Any) -> None:
    """Hold back the first request routed here (until `_released`); let the others go."""
    if held:
        route.continue_()
    else:
        held.append(route)


def _released(page: Any, route: Any, path: str) -> None:
    """Let a request held back go on, and give the page a moment with its answer."""
    with page.expect_response(lambda r: path in r.url):
        route.continue_()
    page.wait_for_timeout(500)


def _shots(tmp_path: Path) -> Path:
    wanted = os.environ.get("DOCS_SCREENSHOTS")
    return Path(wanted) if wanted else tmp_path


def test_big_screen_updates_by_itself(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        screen = Watched(browser, site, "eb-screen", 1920, 1080)
        page = screen.page
        refused: list[str] = []

        def down_once(route: Any) -> None:  # the map's first ask fails: the network was down
            if refused:
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort()

        page.route("**/tiles", down_once)
        page.goto(site.origin + "/screen")
        screen.wait("document.body.dataset.counters !== undefined")
        before = json.loads(page.evaluate("document.body.dataset.counters"))
        assert before["open"] > 0 and before["overdue"] >= 0
        assert page.evaluate("document.getElementById('c-open').textContent") == str(before["open"])
        screen.wait("document.querySelectorAll('#rank-bureau canvas').length > 0")
        # The map is made all the same, at the screen's next try.
        screen.wait("document.querySelectorAll('#map .leaflet-tile-loaded').length > 4", timeout=90)
        assert refused
        page.unroute("**/tiles")
        # Fills the wall: nothing scrolls at 1920×1080.
        size = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        assert size == [1920, 1080]
        updates = int(page.evaluate("document.body.dataset.updates"))

        number = site.report(site.grids[0], "01", "02", dt.datetime.now(TZ))
        screen.wait(
            "JSON.parse(document.body.dataset.counters).reported_today === "
            f"{before['reported_today'] + 1}",
            timeout=30,
        )
        after = json.loads(page.evaluate("document.body.dataset.counters"))
        assert after["open"] == before["open"] + 1
        assert page.evaluate("document.getElementById('c-reported_today').textContent") == str(
            after["reported_today"]
        )
        assert number in page.evaluate("document.getElementById('latest').textContent")
        assert int(page.evaluate("document.body.dataset.updates")) == updates + 1  # 304s between
        page.wait_for_timeout(600)  # let the new event's flash settle for the picture
        shot = _shots(tmp_path) / "big-screen.png"
        page.screenshot(path=str(shot))
        assert Image.open(shot).size == (1920, 1080)

        # A request that is never answered is given up: the screen shows itself stale, asks
        # again, and is live once more.
        held: list[Any] = []
        page.route("**/screen/state", lambda route: _hold_first(held, route))
        screen.wait("document.getElementById('live').className === 'live stale'", timeout=40)
        screen.wait("document.getElementById('live').className === 'live'", timeout=20)
        page.unroute("**/screen/state")

        # An answer cut short is not taken for the state it names: the next one brings it whole
        # (rather than "not modified", on the cut answer's ETag).
        cut: list[str] = []

        def cut_once(route: Any) -> None:
            response = route.fetch()
            if response.status == 200 and not cut:
                cut.append(response.headers.get("etag", ""))
                route.fulfill(response=response, body=response.body()[:40])
            else:
                route.fulfill(response=response)

        page.route("**/screen/state", cut_once)
        number = site.report(site.grids[0], "01", "02", dt.datetime.now(TZ))
        screen.wait(
            "JSON.parse(document.body.dataset.counters).reported_today === "
            f"{after['reported_today'] + 1}",
            timeout=30,
        )
        assert cut and cut[0]
        assert number in page.evaluate("document.getElementById('latest').textContent")
        page.unroute("**/screen/state")
        assert not screen.errors, screen.errors
        screen.no_leaks()
        browser.close()


def test_dashboard_charts_formulas_and_drill_down(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    today = dt.datetime.now(TZ).date()
    with sync_playwright() as p:
        browser = _browser(p)
        leader = Watched(browser, site, "eb-leader", 1600, 1000)
        page = leader.page
        page.goto(f"{site.origin}/evaluation#subject=bureau&from={site.first}&to={today}"
                  "&indicator=bureau.on_time_handling_rate")  # fmt: skip
        leader.wait("document.body.dataset.ready === '1'")
        for chart in ("chart-ranking", "chart-trend", "chart-classes"):
            assert page.evaluate(f"document.querySelectorAll('#{chart} canvas').length") > 0, chart
        leader.wait(
            "document.querySelectorAll('#hotspot-map .leaflet-tile-loaded').length > 2", timeout=90
        )
        # Every indicator shown with its formula; each figure is numerator and denominator.
        text = page.evaluate("document.getElementById('indicators').textContent")
        for formula in (
            "处置率 = 处置数 / (受派数 - 被撤回数)",
            "按期处置率 = 按期处置数 / (受派数 - 被撤回数)",
            "返工率 = 返工数 / 处置数",
            "延期率 = 延期数 / (受派数 - 被撤回数)",
            "退回率 = 退回数 / (受派数 - 被撤回数)",
        ):
            assert formula in text
        # In the page's language only: no indicator named again in English, no measure's code.
        headings = page.locator("#indicators h3").all_inner_texts()
        assert "处置率" in headings and not [h for h in headings if re.search("[A-Za-z]", h)]
        options = page.locator('#query select[name="indicator"] option').all_inner_texts()
        assert "按期处置率" in options and not [o for o in options if re.search("[A-Za-z]", o)]
        assert not re.search("[a-z]{3}", text), re.findall("[a-z_]{3,}", text)[:5]
        assert page.inner_text("#trend-meta") == "按期处置率 = 按期处置数 / (受派数 - 被撤回数)"
        api = page.evaluate(
            f"fetch('/evaluation/indicators?subject=bureau&from={site.first}&to={today}')"
            ".then(r => r.json())"
        )
        row = next(
            s for s in api["subjects"] if s["indicators"]["bureau.handling_rate"]["denominator"]
        )
        cells = page.evaluate(
            "Array.from(document.querySelectorAll(\"table[data-indicator='bureau.handling_rate']"
            f" tr[data-subject='{row['subject']}'] td\")).map(td => td.textContent)"
        )
        v = row["indicators"]["bureau.handling_rate"]
        assert cells[1:3] == [str(v["numerator"]), str(v["denominator"])]
        # Drill-down: the cases behind the denominator, each a link to its case page.
        table = f"table[data-indicator='bureau.handling_rate'] tr[data-subject='{row['subject']}']"
        page.click(f"{table} td.click >> nth=1")
        leader.wait("!document.getElementById('drill').hidden")
        links = page.evaluate(
            "Array.from(document.querySelectorAll('#drill-body a')).map(a => a.getAttribute"
            "('href'))"
        )
        assert len(links) >= v["denominator"] and all(h.startswith("/inbox/") for h in links)
        # Exports are offered for the same subject and period.
        href = page.evaluate("document.getElementById('pdf').getAttribute('href')")
        assert href == f"/evaluation/report.pdf?subject=bureau&from={site.first}&to={today}"
        page.evaluate("window.scrollTo(0, 0)")
        shot = _shots(tmp_path) / "evaluation-dashboard.png"
        page.screenshot(path=str(shot), full_page=False)
        assert Image.open(io.BytesIO(shot.read_bytes())).size == (1600, 1000)

        # The cases of the figure clicked last: an earlier click's, come after, are dropped.
        held: list[Any] = []
        others = [s for s in api["subjects"] if s["subject"] != row["subject"]]
        other = table.replace(row["subject"], others[0]["subject"])
        page.route("**/evaluation/drill?*", lambda route: _hold_first(held, route))
        page.click(f"{other} td.click >> nth=0")
        _until(page, lambda: len(held) == 1)
        page.evaluate("document.getElementById('drill-meta').textContent = ''")
        page.click(f"{table} td.click >> nth=1")
        leader.wait("document.getElementById('drill-meta').textContent.length > 0")
        meta = page.inner_text("#drill-meta")
        _released(page, held[0], "/evaluation/drill")
        page.unroute("**/evaluation/drill?*")
        assert page.inner_text("#drill-meta") == meta

        # A list the server cut at its limit says so (the count stays the whole number).
        def cut(route: Any) -> None:
            doc = route.fetch().json()
            side = doc["denominator"]
            side["cases"], side["truncated"] = side["cases"][:1], True
            route.fulfill(json=doc)

        page.route("**/evaluation/drill?*", cut)
        page.evaluate("document.getElementById('drill-meta').textContent = ''")
        page.click(f"{table} td.click >> nth=1")
        leader.wait("document.getElementById('drill-meta').textContent.length > 0")
        page.unroute("**/evaluation/drill?*")
        assert "仅列出前 1 件" in page.inner_text("#drill-body")

        # A part that fails says so when the others have come, and the next search is whole.
        def search(subject: str) -> None:
            page.select_option('#query select[name="subject"]', subject)
            page.click('#query button[type="submit"]')

        page.route("**/evaluation/classes?*", lambda route: route.abort())
        search("bureau")
        leader.wait("document.body.dataset.ready === '1'")
        assert page.inner_text("#status").startswith("出错："), page.inner_text("#status")
        page.unroute("**/evaluation/classes?*")
        search("bureau")
        leader.wait("document.body.dataset.ready === '1'")
        assert page.inner_text("#status") == ""

        # A search replaced by another before its answer came: the later one's stays shown.
        held.clear()
        page.route("**/evaluation/indicators?*", lambda route: _hold_first(held, route))
        search("street")
        _until(page, lambda: len(held) == 1)
        search("bureau")
        leader.wait("document.body.dataset.ready === '1'")
        shown = (
            "Array.from(document.querySelectorAll('#indicators tr[data-subject]'))"
            ".map(r => r.dataset.subject)"
        )
        bureaus = {s["subject"] for s in api["subjects"]}
        assert set(page.evaluate(shown)) == bureaus
        _released(page, held[0], "/evaluation/indicators")
        page.unroute("**/evaluation/indicators?*")
        assert set(page.evaluate(shown)) == bureaus
        assert page.inner_text("#status") == ""

        # A search while the hot-spot map is still being made waits for that map: one map,
        # made once, and no error (a second map in its place fails when the first is there).
        held.clear()
        page.route("**/tiles", lambda route: held.append(route))
        page.reload()
        _until(page, lambda: len(held) == 1)
        search("street")
        page.wait_for_timeout(500)
        _released(page, held[0], "/tiles")
        for route in held[1:]:
            _released(page, route, "/tiles")
        page.unroute("**/tiles")
        leader.wait("document.body.dataset.ready === '1'")
        assert page.inner_text("#status") == ""
        assert len(held) == 1
        maps = page.evaluate("document.querySelectorAll('#hotspot-map .leaflet-map-pane').length")
        assert maps == 1
        assert not leader.errors, leader.errors
        leader.no_leaks()
        browser.close()


def _district(site: Site) -> tuple[list[str], list[tuple[int, int]], int]:
    """Cases reported now in the northernmost and the southernmost grid (numbers), the
    district's corners (its grids' extent) and those cases' places in the finest level's
    pixels, and the finest level."""
    from mapserver.cases.place import global_pixel

    grid = grid_from(site.settings)
    with psycopg.connect(site.settings.database_url) as conn:
        north, south = (
            conn.execute(f"SELECT code FROM unit_grid ORDER BY {order} LIMIT 1").fetchone()[0]  # type: ignore[index]
            for order in ("ST_YMax(geom) DESC", "ST_YMin(geom)")
        )
        extent = conn.execute(
            "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)"
            " FROM (SELECT ST_Extent(geom) AS e FROM unit_grid) d"
        ).fetchone()
    assert extent is not None
    numbers = [site.report(g, "01", "02", dt.datetime.now(TZ)) for g in (north, south)]
    with psycopg.connect(site.settings.database_url) as conn:
        places = [
            tuple(conn.execute(
                "SELECT pixel_x, pixel_y FROM city_case WHERE number = %s", (n,)).fetchone())  # type: ignore[arg-type]
            for n in numbers
        ]  # fmt: skip
    x0, y0, x1, y1 = extent
    corners = [global_pixel(grid, x, y) for x, y in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))]
    return numbers, [*places, *corners], len(grid.levels) - 1  # type: ignore[list-item]


# Where each place (finest level's pixels) is in the screen's map box, and whether the cases
# overlay has drawn the tile under each of the first `cases` of them there.
SHOWN = r"""
([places, finest, cases]) => {
  const map = window.cgMaps.map, size = map.getSize(), top = map.getMaxZoom();
  const k = Math.pow(2, finest - top), box = document.getElementById('map').getBoundingClientRect();
  return places.map(([c, r], i) => {
    const p = map.latLngToContainerPoint([r / k, c / k]);
    let drawn = null;
    if (i < cases) {  // a cases tile of whichever level is drawn, covering the case
      drawn = Array.from(document.querySelectorAll('#map img.leaflet-tile-loaded')).some(t => {
        const m = t.getAttribute('src').match(/\/tiles\/cases\/(\d+)\/(\d+)\/(\d+)\.png$/);
        if (!m) { return false; }
        const kz = Math.pow(2, finest - Number(m[1]));
        const x = Math.floor(c / kz / 256), y = Math.floor(r / kz / 256);
        if (x !== Number(m[2]) || y !== Number(m[3])) { return false; }
        const at = t.getBoundingClientRect();
        return at.left <= box.left + p.x && box.left + p.x <= at.right &&
               at.top <= box.top + p.y && box.top + p.y <= at.bottom;
      });
    }
    return [p.x, p.y, size.x, size.y, drawn];
  });
}
"""


def test_big_screen_shows_the_whole_district_in_the_installs_time(site: Site) -> None:
    """However large the box (the wall's 1920×1080, or a smaller window), every grid of the
    district is inside the map and the cases reported in the northernmost and southernmost
    grids are drawn; and the clock says the time of the events, in the install's zone,
    though this browser's computer is set to UTC."""
    from playwright.sync_api import sync_playwright

    numbers, places, finest = _district(site)
    with sync_playwright() as p:
        browser = _browser(p)
        screen = Watched(browser, site, "eb-screen", 1920, 1080, zone="UTC")
        page = screen.page
        page.goto(site.origin + "/screen")
        for width, height in ((1920, 1080), (1400, 1000)):
            page.set_viewport_size({"width": width, "height": height})
            screen.wait(f"window.cgMaps && window.cgMaps.map.getSize().x < {width} - 500")
            screen.wait(
                f"({SHOWN})({json.dumps([places, finest, 2])}).every(p => p[4] !== false)",
                timeout=90,
            )
            shown = page.evaluate(f"({SHOWN})({json.dumps([places, finest, 2])})")
            for (x, y, w, h, drawn), place in zip(shown, places, strict=True):
                assert 0 <= x <= w and 0 <= y <= h, (width, place, x, y, w, h)
                assert drawn is not False, (width, place)
            # Its minutely redraw, between levels, asks tiles of whole levels (no 400s).
            page.evaluate("cgMaps.map.eachLayer(l => l.redraw && l.redraw())")
            screen.wait(
                f"({SHOWN})({json.dumps([places, finest, 2])}).every(p => p[4] !== false)",
                timeout=90,
            )
        # The wall asks the cases at its own scales, not the many tiles of 1:2000.
        z2000 = grid_from(site.settings).z_of_scale(2000)
        asked = {int(m.group(1)) for url, _ in screen.bodies
                 if (m := re.search(r"/tiles/cases/(\d+)/\d+/\d+\.png", url))}  # fmt: skip
        assert asked and max(asked) < z2000, asked
        # The clock and the latest events speak of the same moment in the same zone.
        screen.wait(f"document.getElementById('latest').textContent.includes('{numbers[1]}')")
        clock = page.inner_text("#clock")
        now = dt.datetime.now(TZ)
        said = dt.datetime.combine(now.date(), dt.time.fromisoformat(clock), TZ)
        assert abs((said - now).total_seconds()) % 86400 < 10 or (
            86400 - abs((said - now).total_seconds()) % 86400 < 10
        ), (clock, now)
        event = page.locator("#latest li").first.locator(".t").inner_text()
        at = dt.datetime.combine(now.date(), dt.time.fromisoformat(event), TZ)
        assert abs((said - at).total_seconds()) % 86400 < 600, (clock, event)
        assert not screen.errors, screen.errors
        browser.close()


def test_the_maps_know_how_far_the_tiles_reach_beyond_the_district() -> None:
    """pixelmap.js finds the district inside the descriptors' tiles by the margin the tile
    service serves around it: the two must agree, or the screen would cut the district."""
    from tiles.service import MARGIN_M

    script = (Path(__file__).resolve().parents[1] / "webclient/static/pixelmap.js").read_text()
    found = re.search(r"var SERVED_MARGIN_M = (\d+);", script)
    assert found is not None and float(found.group(1)) == MARGIN_M
