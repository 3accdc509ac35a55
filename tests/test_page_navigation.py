"""Every page links the pages its account may open, and only those (each link answers 200);
a browser sent to a page its account may not open gets the same 403 as a small page in the
install's language with a way out, while API clients keep the JSON problem exactly; and the
pages' static files do not count against the per-account API rate limit."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest

from mapserver.settings import Settings

from .app_client import Install

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
FETCH = "*/*"
PEOPLE = {
    "nav-viewer": ["viewer"],
    "nav-lead": ["leader", "dispatcher"],
    "nav-officer": ["security_officer"],
    "nav-screen": ["screen"],
    "nav-partner": ["partner"],
    "nav-admin": ["admin"],
}
LINK = re.compile(r'<a href="(/[^"]*)"')


@dataclasses.dataclass
class Installs:
    zh: Install
    en: Install
    limited: Install  # three API requests a minute


@pytest.fixture(scope="module")
def installs(
    demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installs]:
    out = tmp_path_factory.mktemp("nav-certs")
    var = tmp_path_factory.mktemp("nav-var")
    zh = Install(demo_settings, out, data_dir=var, rate_limit_api="*=100000/hour")
    for name, roles in PEOPLE.items():
        zh.account(name, roles, "street-001" if "viewer" in roles else None)
    en = Install(demo_settings, out, data_dir=var, locale="en", rate_limit_api="*=100000/hour")
    limited = Install(demo_settings, out, data_dir=var, rate_limit_api="*=3/minute")
    en.der = limited.der = zh.der  # the same CA and accounts
    yield Installs(zh, en, limited)
    for install in (zh, en, limited):
        install.close()


def _nav(html: str) -> list[str]:
    found = re.search(r'<nav class="pages">(.*?)</nav>', html, re.S)
    assert found is not None, html[:600]
    return LINK.findall(found.group(1))


def test_the_map_page_links_every_page_the_account_may_open(installs: Installs) -> None:
    client = installs.en.client("nav-lead")
    html = client.get("/", headers={"Accept": BROWSER}).get_data(as_text=True)
    links = _nav(html)
    assert links == ["/", "/inbox", "/street", "/evaluation", "/screen", "/exchange"], links
    for path in links:  # a link is never a refusal
        assert client.get(path, headers={"Accept": BROWSER}).status_code == 200, path
    assert "Evaluation" in html and "Big screen" in html and "Street statistics" in html
    # Fewer roles, fewer links; the same list on every page that has a header.
    viewer = installs.en.client("nav-viewer").get("/").get_data(as_text=True)
    assert _nav(viewer) == ["/"]
    admin = installs.en.client("nav-admin")
    assert _nav(admin.get("/manage").get_data(as_text=True)) == ["/", "/manage"]
    officer = installs.en.client("nav-officer").get("/review").get_data(as_text=True)
    assert _nav(officer) == ["/review"]
    for path in ("/inbox", "/street", "/evaluation", "/exchange"):
        assert _nav(client.get(path).get_data(as_text=True)) == links, path


def test_a_browser_refused_a_page_gets_a_page_in_its_language(installs: Installs) -> None:
    viewer = installs.zh.client("nav-viewer")
    page = viewer.get("/inbox", headers={"Accept": BROWSER})
    assert page.status_code == 403
    assert page.mimetype == "text/html" and page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert '<html lang="zh-CN">' in html and "您的账户无权打开此页面" in html
    assert _nav(html) == ["/"]  # the way out: the map it may open
    assert "case.read" not in html and '"error"' not in html

    officer = installs.en.client("nav-officer").get("/", headers={"Accept": BROWSER})
    assert officer.status_code == 403
    html = officer.get_data(as_text=True)
    assert '<html lang="en">' in html and "Your account may not open this page." in html
    assert _nav(html) == ["/review"]
    partner = installs.en.client("nav-partner").get("/", headers={"Accept": BROWSER})
    assert partner.status_code == 403
    assert "This account has no pages to open in a browser." in partner.get_data(as_text=True)

    # API clients keep the JSON problem, exactly: no Accept, JSON, fetch's */*, other methods.
    problem = {"error": "forbidden", "message": "not allowed: case.read"}
    for headers in ({}, {"Accept": "application/json"}, {"Accept": FETCH}):
        reply = viewer.get("/inbox", headers=headers)
        assert reply.status_code == 403 and reply.get_json() == problem, headers
    posted = viewer.post("/cases/record", json={}, headers={"Accept": BROWSER})
    assert posted.status_code == 403 and posted.is_json
    # A page the account may open is untouched; so is a refusal that is not a 403.
    assert viewer.get("/", headers={"Accept": BROWSER}).status_code == 200
    missing = viewer.get("/no/such/page", headers={"Accept": BROWSER})
    assert missing.status_code == 404 and missing.is_json


def test_static_files_do_not_count_against_the_api_limit(installs: Installs) -> None:
    """Three API requests a minute in this install: a case page's score of scripts, styles
    and icons is served all the same, and the API keeps its three."""
    admin = installs.limited.client("nav-admin")
    for _ in range(5):
        for path in ("/static/viewer.js", "/static/i18n.js", "/static/favicon.svg", "/favicon.ico"):
            assert admin.get(path).status_code == 200, path
    statuses = [admin.get("/auth/whoami").status_code for _ in range(4)]
    assert statuses[:3] != [429] * 3 and statuses[3] == 429, statuses
    # Still only for an identified client.
    assert installs.limited.client(None).get("/static/viewer.js").status_code == 401
