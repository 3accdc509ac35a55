"""The map viewer in headless Chromium over mTLS (Playwright, Debian's chromium)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.settings import Settings
from tiles import png

from .tls import Server

CHROMIUM = Path("/usr/bin/chromium")
SECRET = "browser test passphrase"
# What a coordinate of the demo district or the install's CRS would look like.
LEAKS = [
    re.compile(rb"\b4[34]\d{5}(?:\.\d+)?\b"),  # northings 4.3–4.5 million
    re.compile(rb"\b4[34]\d{4}\.\d+"),  # eastings 430000–449999 with decimals
    # The CRS named as such: tile indices count from a per-install origin, and an index such
    # as 4548 or 14548 is no CRS code.
    re.compile(rb"(?i)(epsg|srid|crs)\W{0,3}4548|tmerc|\+proj|CGCS2000|Gauss"),
]


# Playwright's client-certificate proxy answers this 503 of its own when the server closes a
# kept-alive connection (idle past its keep-alive) just as the proxy reuses it: a browser
# talking to the server itself would have retried the request on a new connection.
HARNESS_RESET = "Playwright client-certificate error: read ECONNRESET"


def harness_reset(response) -> bool:  # type: ignore[no-untyped-def]
    """Whether `response` is Playwright's answer for such a reset, not the server's."""
    if response.status != 503:
        return False
    with contextlib.suppress(Exception):  # a response without a body
        return response.body().decode(errors="replace").startswith(HARNESS_RESET)
    return False


def visit(page, url: str) -> None:  # type: ignore[no-untyped-def]
    """`page.goto(url)`, once more if the answer was a harness reset (as a browser retries)."""
    response = page.goto(url)
    if response is not None and harness_reset(response):
        page.goto(url)


def wait_until(page, expression: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Poll an expression through the DevTools protocol (the page's CSP forbids the eval
    that Playwright's wait_for_function uses, which is as it should be)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"timed out waiting for {expression}")


def _needs_chromium() -> None:
    """Skipped without Chromium on a workstation; in CI (CI=true) that is a failure."""
    if CHROMIUM.exists():
        return
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail("CI=true but Debian's chromium is missing: the browser tests must run")
    pytest.skip("needs Debian's chromium")


@pytest.fixture(autouse=True)
def chromium() -> None:
    _needs_chromium()


@pytest.fixture(scope="module")
def site(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path, Path]]:
    settings = dataclasses.replace(demo_settings, data_dir=tmp_path_factory.mktemp("br-var"))
    out = tmp_path_factory.mktemp("br-certs")
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    with db.transaction(settings) as conn:
        for name, role in (("br-inspector", "inspector"), ("br-viewer", "viewer")):
            accounts.add(conn, name, [role], "street-001")
            certs.issue(conn, store, SECRET.encode(), name, pki.Kind.PERSON, out)
        for name, role in (("br-admin", "admin"), ("br-officer", "security_officer")):
            accounts.add(conn, name, [role])
            certs.issue(conn, store, SECRET.encode(), name, pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET,
            "CITYGRID_RATE_LIMIT_TILES": "*=100000/hour",
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
            "CITYGRID_AUDIT_CHECKPOINT_ENTRIES": "1",
        }
    )
    try:
        server.wait_ready()
        yield server, out / "br-inspector.crt", out / "br-inspector.key"  # out holds the rest
    finally:
        server.stop()


def test_viewer_over_mtls(
    site: tuple[Server, Path, Path], tmp_path: Path, demo_settings: Settings, demo_conn
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    from tiles.service import grid_from

    server, cert, key = site
    x, y = demo_conn.execute(
        "SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) FROM unit_grid"
        " WHERE code LIKE '110108001%' ORDER BY code LIMIT 1 OFFSET 10"
    ).fetchone()
    grid = grid_from(demo_settings)
    finest = len(grid.scales) - 1
    tx, ty, col, row = grid.locate(finest, x, y)
    own_street_pixel = (tx * 256 + col, ty * 256 + row)
    origin = f"https://127.0.0.1:{server.port}"
    bodies: list[tuple[str, str, bytes]] = []
    seen: list[str] = []  # every response's URL, with a body or not
    with sync_playwright() as p:
        browser = _browser(p)
        context = browser.new_context(
            ignore_https_errors=True,  # the server certificate is from CityGrid's own CA
            client_certificates=[{"origin": origin, "certPath": str(cert), "keyPath": str(key)}],
            viewport={"width": 1200, "height": 800},
        )
        page = context.new_page()

        def keep(response) -> None:  # type: ignore[no-untyped-def]
            seen.append(response.url)
            with contextlib.suppress(Exception):  # aborted tiles have no body
                bodies.append(
                    (response.url, response.headers.get("content-type", ""), response.body())
                )

        page.on("response", keep)
        page.goto(origin + "/")
        # The inspector's descriptor offers its street's tiles only: at the zoom that fits the
        # street, that can be as few as two or three tiles (it depends on the install's origin).
        wait_until(page, "document.querySelectorAll('.leaflet-tile-loaded').length >= 2")
        page.wait_for_load_state("networkidle")
        shot = tmp_path / "viewer.png"
        page.locator("#map").screenshot(path=str(shot))
        image = Image.open(shot).convert("RGB")
        colours = image.getcolors(maxcolors=1_000_000) or []
        assert len(colours) > 20  # a rendered map, not a blank area
        assert max(c for c, _ in colours) < 0.9 * image.width * image.height

        zoom = page.evaluate("window.citygridMap.getZoom()")
        page.click(".leaflet-control-zoom-in")
        wait_until(page, f"window.citygridMap.getZoom() === {zoom + 1}")
        wait_until(
            page,
            f"Array.from(document.querySelectorAll('.leaflet-tile-loaded'))"
            f".some(t => t.src.includes('/{zoom + 1}/'))",
        )
        # The tile's response event reaches this side a moment after the page shows the tile.
        deadline = time.monotonic() + 10
        while not any(f"/{zoom + 1}/" in url and url.endswith(".png") for url in seen):
            assert time.monotonic() < deadline, f"no tile of level {zoom + 1} fetched: {seen}"
            page.wait_for_timeout(100)
        scale = page.inner_text("#scale-text")
        assert scale.startswith("1:")

        page.check('input[name="overlay"][value="grids"]')
        # Centre the map on a unit grid of the inspector's own street (positions in the page
        # are pixels of the finest level, counted from the tile grid's origin).
        px, py = own_street_pixel
        page.evaluate(f"window.citygridMap.panTo(L.latLng({py}, {px}), {{animate: false}})")
        page.wait_for_timeout(300)
        box = page.locator("#map").bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        wait_until(
            page, "document.querySelector('#identify-result').textContent.includes('单元网格')"
        )
        result = page.inner_text("#identify-result")
        assert re.search(r"\b11010800\d{6}\b", result), result
        page.screenshot(path=str(tmp_path / "viewer-identify.png"))

        # The answer shown is the last click's: an earlier click's, come after, is dropped;
        # and a click whose query fails says so.
        click = "window.citygridMap.fire('click', {latlng: window.citygridMap.getCenter()})"
        held: list = []  # type: ignore[type-arg]
        page.route(
            "**/map/identify?*", lambda route: route.continue_() if held else held.append(route)
        )
        page.evaluate(click)
        deadline = time.monotonic() + 10
        while not held:
            assert time.monotonic() < deadline, "the click asked nothing"
            page.wait_for_timeout(50)
        page.evaluate("document.getElementById('identify-result').textContent = ''")
        page.evaluate(click)
        wait_until(
            page, "document.getElementById('identify-result').textContent.includes('单元网格')"
        )
        with page.expect_response(lambda r: "/map/identify" in r.url):
            held[0].fulfill(
                status=502, content_type="text/html", body="<html>502 Bad Gateway</html>"
            )
        page.wait_for_timeout(500)
        assert page.inner_text("#identify-result") == result
        page.unroute("**/map/identify?*")
        page.route("**/map/identify?*", lambda route: route.abort())
        page.evaluate(click)
        wait_until(
            page, "document.getElementById('identify-result').textContent.includes('查询失败')"
        )
        page.unroute("**/map/identify?*")
        html = page.content().encode("utf-8")

        # A map that cannot be had says so, rather than leaving an empty page.
        page.route("**/tiles", lambda route: route.abort())
        page.goto(origin + "/")
        wait_until(page, "document.getElementById('map').textContent.includes('地图未能加载')")
        page.unroute("**/tiles")
        # Nor is a proxy's error page a map the account may not view.
        page.route("**/tiles", lambda route: route.fulfill(status=502, body="<html>Bad Gateway"))
        page.goto(origin + "/")
        wait_until(page, "document.getElementById('map').textContent.includes('地图未能加载')")
        page.unroute("**/tiles")
        browser.close()

    assert bodies, "the page received nothing"
    for url, kind, body in [*bodies, (origin + "/ (DOM)", "text/html", html)]:
        if kind.startswith("image/png"):
            assert png.is_clean(body), url
            continue
        for leak in LEAKS:
            assert not leak.search(body), (url, leak.pattern, leak.search(body))
    shown = Image.open(io.BytesIO((tmp_path / "viewer-identify.png").read_bytes()))
    assert shown.size[0] >= 1000


def test_a_viewers_page_load_is_refused_nothing(site: tuple[Server, Path, Path]) -> None:
    """A viewer may not see 1:500 or the cases overlay: the page asks only for the maps the
    account may view (GET /tiles), so loading it answers no 403 and leaves no refusal in the
    audit log, only the reads it made."""
    from playwright.sync_api import sync_playwright

    server, cert, _ = site
    origin = f"https://127.0.0.1:{server.port}"
    viewer = (cert.parent / "br-viewer.crt", cert.parent / "br-viewer.key")
    statuses: list[tuple[int, str]] = []
    with sync_playwright() as p:
        browser = _browser(p)
        context = browser.new_context(
            ignore_https_errors=True,
            client_certificates=[
                {"origin": origin, "certPath": str(viewer[0]), "keyPath": str(viewer[1])}
            ],
        )
        page = context.new_page()
        page.on(
            "response",
            lambda r: None if harness_reset(r) else statuses.append((r.status, r.url)),
        )
        visit(page, origin + "/")
        # The map is built once the descriptors it asked for are answered: a tile shown
        # means they all were.
        wait_until(page, "document.querySelectorAll('.leaflet-tile-loaded').length >= 1")
        browser.close()
    assert [s for s in statuses if s[0] >= 400] == []
    assert any(url == origin + "/tiles" for _, url in statuses)
    with psycopg.connect(server.env["CITYGRID_DATABASE_URL"]) as conn:
        deadline = time.monotonic() + 30
        while True:  # the entries reach the queue with the spool's next shipment
            rows = conn.execute(
                "SELECT resource, outcome FROM audit_queue WHERE account = 'br-viewer'"
            ).fetchall()
            if any(resource == "tiles" for resource, _ in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert ("tiles", "ok") in rows
    assert [r for r in rows if r[1] != "ok"] == []


def _fingerprint(server: Server) -> str:
    """What the security office reads once on the server and enters on its review page."""
    from click.testing import CliRunner

    from mapserver.cli import main

    result = CliRunner().invoke(main, ["audit", "key", "--fingerprint"], env=server.env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def _pin(page, fingerprint: str) -> None:  # type: ignore[no-untyped-def]
    _integrity(page)  # the page is ready: it has judged the key it was offered
    page.fill("#pin-fingerprint", fingerprint)
    with page.expect_navigation():
        page.click("#pin-save")


def _integrity(page) -> str:  # type: ignore[no-untyped-def]
    """The integrity line once the page has decided (red or green)."""
    wait_until(page, "/good|bad/.test(document.getElementById('integrity').className)")
    cls = page.evaluate("document.getElementById('integrity').className")
    return f"{'bad' if 'bad' in cls else 'good'}: {page.inner_text('#integrity')}"


def test_review_page_pins_the_log_key_and_remembers_the_last_checkpoint(
    site: tuple[Server, Path, Path],
) -> None:
    """The review page trusts the log's key only by the fingerprint the security office
    pinned, never because the server offers it, and proves every newest checkpoint
    consistent with the last one it verified."""
    from playwright.sync_api import sync_playwright

    server, cert, _ = site
    origin = f"https://127.0.0.1:{server.port}"
    with sync_playwright() as p:
        browser = _browser(p)
        page = _context(browser, origin, cert.parent, "br-officer").new_page()
        page.goto(origin + "/review")
        _pin(page, "ab12 " * 16)  # another key's fingerprint: a server with a key of its own
        shown = _integrity(page)
        assert shown.startswith("bad: ✗ 服务器给出的日志公钥") and "不符" in shown, shown
        assert page.evaluate("localStorage.getItem('citygrid.audit.last')") is None
        _pin(page, _fingerprint(server).upper().replace(" ", ":"))  # as typed, any spacing
        shown = _integrity(page)
        assert shown.startswith("good: ✓ 最新检查点"), shown
        last = page.evaluate("JSON.parse(localStorage.getItem('citygrid.audit.last'))")
        assert last["size"] > 1
        # The server now shows less than this browser verified before: a cut tail.
        page.evaluate(
            "localStorage.setItem('citygrid.audit.last',"
            f" JSON.stringify({{size: {last['size'] + 1000}, root: '{last['root']}'}}))"
        )
        page.reload()
        shown = _integrity(page)
        assert shown.startswith("bad: ✗ 最新检查点") and "截断" in shown, shown
        # A checkpoint of that size with another root was verified here: history rewritten.
        other = "A" * 43 + "="
        page.evaluate(
            "localStorage.setItem('citygrid.audit.last',"
            f" JSON.stringify({{size: {last['size']}, root: '{other}'}}))"
        )
        page.reload()
        shown = _integrity(page)
        assert shown.startswith("bad: ✗ 与本浏览器上次验证的检查点") and "被改写" in shown, shown
        browser.close()


def _enrol_code(settings: Settings, server: Server, account: str) -> str:
    """What an administrator runs and hands over out of band."""
    from click.testing import CliRunner

    from mapserver.cli import main

    from .admin_key import admin_env

    env = admin_env(server.env, "br-root")  # an administrator's signed act
    result = CliRunner().invoke(main, ["pki", "enrol-code", account], env=env)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def _browser(p):  # type: ignore[no-untyped-def]
    return p.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


def _context(browser, origin: str, out: Path, name: str, **extra):  # type: ignore[no-untyped-def]
    return browser.new_context(
        **extra,
        ignore_https_errors=True,
        client_certificates=[
            {
                "origin": origin,
                "certPath": str(out / f"{name}.crt"),
                "keyPath": str(out / f"{name}.key"),
            }
        ],
    )


def test_browser_signs_an_action_and_the_officer_verifies_it(
    site: tuple[Server, Path, Path], tmp_path: Path, demo_settings: Settings
) -> None:
    from playwright.sync_api import sync_playwright

    server, cert, _ = site
    out = cert.parent
    origin = f"https://127.0.0.1:{server.port}"
    with sync_playwright() as p:
        browser = _browser(p)
        admin = _context(browser, origin, out, "br-admin").new_page()
        admin.goto(origin + "/manage")
        wait_until(admin, "document.getElementById('signer-status').textContent.includes('尚未')")
        admin.click("#enrol")  # without the one-time code: nothing is sent, the page says why
        wait_until(admin, "document.getElementById('signer-status').textContent.includes('登记码')")
        admin.fill("#enrol-code", "WRNG-CODE-WRNG-CODE-WRNG-CODE")
        admin.click("#enrol")
        wait_until(admin, "document.getElementById('signer-status').textContent.includes('失败')")
        admin.fill("#enrol-code", _enrol_code(demo_settings, server, "br-admin"))
        admin.click("#enrol")
        wait_until(admin, "document.getElementById('signer-status').textContent.includes('已登记')")
        admin.fill('input[name="name"]', "br-created")
        admin.select_option('select[name="role"]', "viewer")
        admin.click('#add-account button[type="submit"]')
        wait_until(admin, "document.getElementById('result').textContent.length > 0")
        result = admin.inner_text("#result")
        assert result.startswith("已创建账户 br-created"), result
        admin.screenshot(path=str(tmp_path / "manage.png"))

        officer = _context(browser, origin, out, "br-officer").new_page()
        asked: list[str] = []
        officer.on("request", lambda r: asked.append(r.url))
        officer.goto(origin + "/review")
        # Nothing is trusted before the log key's fingerprint is pinned on this page.
        wait_until(officer, "document.getElementById('integrity').className.includes('bad')")
        assert "尚未固定" in officer.inner_text("#integrity")
        _pin(officer, _fingerprint(server))
        wait_until(officer, "document.getElementById('integrity').className.includes('good')")
        assert "签名有效" in officer.inner_text("#integrity")
        # This test's own entry: other tests on the same demo server add accounts too.
        officer.fill('input[name="account"]', "br-admin")
        officer.fill('input[name="action"]', "account.add")
        officer.click('#filters button[type="submit"]')
        wait_until(officer, "document.querySelectorAll('#entries tbody tr').length === 1")
        messages: list[str] = []
        officer.on("console", lambda m: messages.append(m.text))
        officer.on("pageerror", lambda e: messages.append(str(e)))
        officer.click("#entries tbody tr")
        try:
            wait_until(
                officer,
                "!['', '正在验证…'].includes(document.getElementById('proof-status').textContent)",
                15,
            )
        except AssertionError:
            raise AssertionError(f"{officer.inner_text('#proof-status')!r} {messages}") from None
        status = officer.inner_text("#proof-status")
        assert status.startswith("✓ 已验证"), status
        # Proofs computed in the page from the served tlog-tiles, none taken from the server.
        assert any("/audit/tile/" in url for url in asked), asked
        assert not any("/audit/proof/" in url for url in asked), asked
        detail = officer.inner_text("#detail-body")
        assert "signature_sha256" in detail and "br-admin" in detail
        officer.screenshot(path=str(tmp_path / "review.png"), full_page=True)

        # The officer's own requests, paged back three at a time with "older" to the first:
        # exactly the entries the log listed before, newest first, none twice or left out.
        officer.evaluate("document.getElementById('entries').dataset.page = '3'")
        officer.fill('input[name="action"]', "")
        officer.fill('input[name="account"]', "br-officer")
        shown = officer.get_attribute("#entries", "data-loaded")
        officer.click('#filters button[type="submit"]')
        wait_until(officer, f"document.getElementById('entries').dataset.loaded !== '{shown}'")
        for _ in range(100):
            if officer.locator("#entries-older").is_hidden():
                break
            rows = officer.locator("#entries tbody tr").count()
            officer.click("#entries-older")
            wait_until(officer, f"document.querySelectorAll('#entries tbody tr').length > {rows}")
        leaves = [int(x) for x in officer.locator("#entries tbody tr").evaluate_all(
            "rs => rs.map(r => r.dataset.leaf)")]  # fmt: skip
        assert len(leaves) > 3, leaves
        listed = officer.evaluate(
            """async (top) => (await (await fetch(
                 '/audit/entries?account=br-officer&limit=500&before=' + (top + 1))).json())
               .entries.map(e => e.leaf_index)""",
            leaves[0],
        )
        assert leaves == listed
        # A refused search says why, and leaves the list as it was.
        officer.fill('input[name="account"]', "x" * 300)
        officer.click('#filters button[type="submit"]')
        wait_until(officer, "document.getElementById('entries-status').textContent.length > 0")
        assert officer.inner_text("#entries-status").startswith("失败")
        assert officer.locator("#entries tbody tr").count() == len(leaves)
        browser.close()

    import psycopg

    with psycopg.connect(demo_settings.database_url) as conn:
        row = conn.execute(
            "SELECT s.action, c.kind FROM signed_action s JOIN certificate c"
            " ON c.pem = s.certificate WHERE s.account = 'br-admin'"
        ).fetchone()
    assert row == ("account.add", "signing")
