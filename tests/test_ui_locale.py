"""The pages speak the install's language: their words come from one catalogue per locale
(webclient/messages), zh-CN by default, English in an `en` install; no Chinese is left in
the templates or scripts, and no key a page uses is missing from a catalogue."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mapserver import db
from webclient.messages import catalogue

from .app_client import Install
from .conftest import demo_database
from .test_browser import CHROMIUM, _needs_chromium, wait_until

WEBCLIENT = Path(__file__).resolve().parents[1] / "webclient"
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
LOCALES = ("zh-CN", "en")
TEMPLATE_KEY = re.compile(r"""\bt\(\s*["']([^"']+)["']\s*\)""")
SCRIPT_KEY = re.compile(r"""\bT\(\s*"([^"]+)"\s*\)""")
SCRIPT_TABLE = re.compile(r"""\bN\(\s*"([a-z_]+)"\s*,""")
# account → (roles, organisation) and the pages each opens
PEOPLE = {
    "loc-lead": (["leader", "dispatcher"], None),
    "loc-bureau": (["bureau_handler"], "BUREAU"),
    "loc-admin": (["admin"], None),
    "loc-audit": (["security_officer"], None),
}
PAGES = {
    "/": "loc-lead",
    "/inbox": "loc-lead",
    "/inbox/110108202611120001": "loc-lead",
    "/street": "loc-lead",
    "/evaluation": "loc-lead",
    "/screen": "loc-lead",
    "/exchange": "loc-lead",
    "/bureau/components": "loc-bureau",
    "/manage": "loc-admin",
    "/review": "loc-audit",
}


def _sources() -> dict[Path, str]:
    files = sorted(WEBCLIENT.glob("templates/*.html")) + sorted(WEBCLIENT.glob("static/*.js"))
    return {p: p.read_text("utf-8") for p in files}


# ---------------------------------------------------------------- the catalogues


def test_every_catalogue_has_every_key_the_pages_use() -> None:
    """A key in a template (t("…")) or a script (T("…")) that a catalogue lacks fails here,
    and so does a catalogue that drifts from the other."""
    used: dict[str, set[str]] = {}
    tables: set[str] = set()
    for path, text in _sources().items():
        pattern = TEMPLATE_KEY if path.suffix == ".html" else SCRIPT_KEY
        for key in pattern.findall(text):
            used.setdefault(key, set()).add(path.name)
        tables |= set(SCRIPT_TABLE.findall(text))
    assert len(used) > 400
    for code in LOCALES:
        messages = catalogue(code)
        missing = {k: sorted(v) for k, v in used.items() if k not in messages}
        assert not missing, f"{code} lacks {missing}"
        for table in tables:  # names of server codes: N("state", c.state, …)
            assert any(k.startswith(table + ".") for k in messages), (code, table)
    assert set(catalogue("zh-CN")) == set(catalogue("en"))
    for code in LOCALES:  # kept sorted, one key a line, so that a change reads as one line
        path = WEBCLIENT / "messages" / f"{code}.json"
        text = path.read_text("utf-8")
        assert (
            text
            == json.dumps(json.loads(text), indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        ), code
    # server codes' names; exports; JSON messages
    served = tables | {"export", "identify", "case_group"}
    unused = {k for k in set(catalogue("en")) - set(used) if k.split(".")[0] not in served}
    assert not unused, f"keys no page uses: {sorted(unused)}"


def test_a_template_string_missing_from_a_catalogue_is_caught(tmp_path: Path) -> None:
    """The check above really looks: a template with an unknown key is reported."""
    text = '<h1>{{ t("index.no_such_message") }}</h1>'
    keys = set(TEMPLATE_KEY.findall(text))
    assert keys == {"index.no_such_message"} and not keys <= set(catalogue("en"))


def test_no_chinese_left_in_templates_scripts_or_the_english_catalogue() -> None:
    for path, text in _sources().items():
        found = [line for line in text.splitlines() if CJK.search(line)]
        assert not found, f"{path.name}: {found[:3]}"
    assert not [v for v in catalogue("en").values() if CJK.search(v)]
    assert CJK.search(catalogue("zh-CN")["index.base_map"])


def test_server_names_match_the_zh_catalogue() -> None:
    """The names the server sends beside codes (states, transitions, grades…) are the zh-CN
    catalogue's, so a page in zh-CN shows the same words either way."""
    from mapserver import codes
    from mapserver.cases import flow, street_stats
    from mapserver.evaluation import indicators, scoring
    from mapserver.maintenance import organisations

    zh = catalogue("zh-CN")
    tables = {
        "state": flow.STATES,
        "transition": {k: t.title for k, t in flow.TRANSITIONS.items()},
        "component_state": codes.STATE_NAMES,
        "grade": {g: g for g in scoring.GRADES},
        "street_heading": street_stats.HEADINGS,
        "org_kind": organisations.KINDS,
        "indicator": {k: i.title for k, i in indicators.INDICATORS.items()},
        "centre": indicators.CENTRES,
    }
    for table, names in tables.items():
        for code, name in names.items():
            assert zh[f"{table}.{code}"] == name, (table, code)
            assert not CJK.search(catalogue("en")[f"{table}.{code}"])


# ---------------------------------------------------------------- the pages


@dataclasses.dataclass
class Installs:
    zh: Install
    en: Install


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installs]:
    settings = demo_database("citygrid_ui_locale", tmp_path_factory.mktemp("loc-var"))
    out = tmp_path_factory.mktemp("loc-certs")
    en = Install(settings, out, locale="en", rate_limit_api="*=100000/hour")
    with db.connect(settings) as conn:
        bureau = conn.execute(
            "SELECT code FROM organisation WHERE kind = 'bureau' ORDER BY code LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
    for name, (roles, org) in PEOPLE.items():
        en.account(name, roles, bureau if org == "BUREAU" else org)
    zh = Install(settings, out, rate_limit_api="*=100000/hour")  # the same CA and accounts
    zh.der = en.der
    yield Installs(zh, en)
    en.close()
    zh.close()
    db.drop_database(settings)


def _chrome(html: str) -> str:
    """The page without its message catalogue (data for its scripts, not words shown)."""
    return re.sub(r'<script type="application/json" id="citygrid-messages">.*?</script>', "",
                  html, flags=re.S)  # fmt: skip


@pytest.mark.parametrize("path", sorted(PAGES))
def test_an_english_install_serves_english_pages(installs: Installs, path: str) -> None:
    reply = installs.en.client(PAGES[path]).get(path)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    html = reply.get_data(as_text=True)
    assert '<html lang="en">' in html
    chrome = _chrome(html)
    assert not CJK.findall(chrome), CJK.findall(chrome)[:20]
    block = re.search(r'id="citygrid-messages">(.*?)</script>', html, re.S)
    assert block is not None and json.loads(block.group(1)) == catalogue("en")
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title is not None and "CityGrid" in title.group(1)


def test_english_and_chinese_words_where_expected(installs: Installs) -> None:
    en = installs.en.client("loc-lead").get("/").get_data(as_text=True)
    zh = installs.zh.client("loc-lead").get("/").get_data(as_text=True)
    assert "<h2>Base map</h2>" in en and "Thematic layers" in en and "Identify" in en
    assert '<html lang="zh-CN">' in zh and "<h2>底图</h2>" in zh and "专题图层" in zh
    assert "Base map" not in _chrome(zh)
    manage = installs.en.client("loc-admin").get("/manage").get_data(as_text=True)
    assert "Accounts and certificates" in manage and "Sign and save" in manage
    zh_manage = installs.zh.client("loc-admin").get("/manage").get_data(as_text=True)
    assert "账户与证书" in zh_manage


def test_exports_in_the_installs_language(installs: Installs) -> None:
    """The street statistics workbook and the evaluation report (XLSX, PDF) of an en install
    carry English sheet names and headings; a zh-CN install's stay Chinese."""
    import io

    from openpyxl import load_workbook

    period = "from=2026-10-01&to=2026-10-31"
    books = {}
    for code, install in (("en", installs.en), ("zh-CN", installs.zh)):
        client = install.client("loc-lead")
        street = client.get(f"/street/stats?format=xlsx&{period}")
        report = client.get(f"/evaluation/report.xlsx?subject=bureau&{period}")
        pdf = client.get(f"/evaluation/report.pdf?subject=centre&{period}")
        assert street.status_code == report.status_code == pdf.status_code == 200
        assert pdf.data.startswith(b"%PDF")
        books[code] = (
            load_workbook(io.BytesIO(street.data)),
            load_workbook(io.BytesIO(report.data)),
        )
    street_en, report_en = books["en"]
    assert street_en.sheetnames == ["Counts", "Summary", "By class", "By community"]
    assert [c.value for c in street_en["Summary"][1]][:4] == ["Street code", "Street", "Reported",
                                                             "Filed"]  # fmt: skip
    assert report_en.sheetnames == ["Ranking", "Indicators", "Formulas"]
    assert str(report_en["Ranking"]["A1"].value).startswith("CityGrid evaluation report · Bureaus")
    heads = [c.value for c in report_en["Ranking"][2]] + [c.value for c in report_en["Formulas"][1]]
    assert heads[:3] == ["Rank", "Subject", "Name"] and not [h for h in heads if CJK.search(h)]
    titles = [row[0].value for row in report_en["Formulas"].iter_rows(min_row=2)]
    assert "Handling rate" in titles and not [t for t in titles if CJK.search(str(t))]
    street_zh, report_zh = books["zh-CN"]
    assert street_zh.sheetnames == ["统计", "汇总", "按类别", "按社区"]
    assert report_zh.sheetnames == ["排名", "指标", "公式"]


# ---------------------------------------------------------------- in Chromium


def _serve_through(install: Install, account: str, page: Any, origin: str) -> None:
    """Every request of the page answered by the app in-process (the real views, policy and
    audit; only the TLS transport replaced, as tests/app_client.py does)."""
    client = install.client(account)

    def answer(route: Any) -> None:
        request = route.request
        path = request.url[len(origin) :] or "/"
        reply = client.open(
            path,
            method=request.method,
            data=request.post_data_buffer,
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        )
        route.fulfill(
            status=reply.status_code,
            headers={k: v for k, v in reply.headers.items() if k.lower() != "content-length"},
            body=reply.get_data(),
        )

    page.route(origin + "/**", answer)


def test_english_pages_build_english_text_in_chromium(installs: Installs) -> None:
    _needs_chromium()
    from playwright.sync_api import sync_playwright

    origin = "https://citygrid.invalid"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _serve_through(installs.en, "loc-lead", page, origin)
            page.goto(origin + "/inbox")
            status = "document.getElementById('{}').textContent"
            wait_until(page, status.format("signer-status") + ".includes('No signing key')")
            listed = "/No visible cases|Nothing in your inbox|cases/.test("
            wait_until(page, listed + status.format("inbox-status") + ")")
            shown = page.evaluate(
                """() => {
                     const out = [];
                     const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
                     while (walk.nextNode()) {
                       const n = walk.currentNode, p = n.parentElement;
                       if (!p || p.closest('option, script') || !n.textContent.trim()) continue;
                       out.push(n.textContent.trim());
                     }
                     document.querySelectorAll('[title], [placeholder], [aria-label]').forEach(
                       (e) => out.push(e.title || '', e.placeholder || '',
                                       e.getAttribute('aria-label') || ''));
                     return out;
                   }"""
            )
            assert "Record a case" in shown or any("Record" in s for s in shown), shown[:40]
            assert not [s for s in shown if CJK.search(s)], [s for s in shown if CJK.search(s)]
            page.goto(origin + "/")
            wait_until(page, "/ per pixel\\)/.test(document.getElementById('scale-text')"
                             ".textContent)")  # fmt: skip
            assert not CJK.search(page.inner_text("aside"))
            # The evaluation names each indicator once, in English, and writes its formula
            # over the measures' English names.
            page.goto(origin + "/evaluation#subject=bureau")
            wait_until(page, "document.body.dataset.ready === '1'")
            headings = page.locator("#indicators h3").all_inner_texts()
            assert "Handling rate" in headings and "On-time handling rate" in headings, headings
            text = page.inner_text("#indicators")
            assert "Handling rate = handled / (dispatched - recalled)" in text
            assert not [h for h in headings if "(" in h or CJK.search(h)], headings
            options = page.locator('select[name="indicator"] option').all_inner_texts()
            assert "Handling rate" in options and not [o for o in options if "(" in o]
            assert not errors, errors
        finally:
            browser.close()
