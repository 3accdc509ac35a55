"""A case's history reads as words in Chromium, in zh-CN and in English: a street office's
reminder is labelled as a reminder, not as an order; a device's own time of its act shows as
the time on site, in the install's zone, only where it differs from the step's time; a GPS
report's place (a salted digest of the fix) reads as a device fix; a dispatch names its
bureau. Times are the install's work-calendar zone's whatever the browser's zone (here
UTC), as on the big screen. The app answers in-process (tests/test_ui_locale.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from mapserver import db

from .app_client import Install
from .conftest import demo_database
from .test_browser import CHROMIUM, _needs_chromium, wait_until
from .test_device import Field
from .test_ui_locale import _serve_through

ORIGIN = "https://citygrid.invalid"
HEX = re.compile(r"[0-9a-f]{16,}")


@dataclasses.dataclass
class Site:
    field: Field
    en: Install
    zone: ZoneInfo
    verified: str  # recorded by phone, verified on site by a device that sent it late
    reported: str  # reported by a device with a GPS fix, sent at once
    on_site: dt.datetime  # the device's time of the verification
    bureau: tuple[str, str]  # code, name


def _signed(install: Install, who: str, number: str, name: str, params: dict[str, Any]) -> None:
    state = _state(install, number)
    body = install.envelope(who, f"case.{name}", f"case {number}", {"from": state, **params})
    reply = install.client(who).post(f"/cases/{number}/{name}", json=body)
    assert reply.status_code == 200, (name, reply.get_json())


def _state(install: Install, number: str) -> str:
    with psycopg.connect(install.settings.database_url) as conn:
        row = conn.execute("SELECT state FROM city_case WHERE number = %s", (number,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _needs_chromium()
    settings = demo_database("citygrid_case_history", tmp_path_factory.mktemp("ch-var"))
    out = tmp_path_factory.mktemp("ch-certs")
    zh = Install(settings, out, rate_limit_api="*=100000/hour")
    field = Field(zh, tmp_path_factory.mktemp("ch-devices"))
    zh.account("ch-street", ["street_supervisor"], "street-001")
    desk, device = field.desk, field.device
    # A phone complaint, verified on site three hours before the device could send it.
    verified = desk.record(place={"grid": field.grid}, description="暴露垃圾").get_json()["number"]
    on_site = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
    late = {"from": "reported", "note": "属实", "client_time": on_site.isoformat()}
    body = device.envelope("case.verify", f"case {verified}", late)
    sent = device.post(f"/device/v1/cases/{verified}/verify", body)
    assert sent.status_code == 200, sent.get_json()
    _signed(zh, "cs-leader", verified, "file", {})
    _signed(zh, "cs-dispatcher", verified, "dispatch", {"bureau": desk.bureau})
    _signed(zh, "cs-bureau", verified, "receive", {})
    _signed(zh, "ch-street", verified, "remind", {"message": "群众反映强烈，请尽快处置"})
    _signed(zh, "ch-street", verified, "order", {"message": "请于时限内处置并回复"})
    # A report placed by a GPS fix, sent at once.
    body, _ = field.report_body("井盖缺失（设备上报）")
    sent = device.post("/device/v1/reports", body)
    assert sent.status_code == 201, sent.get_json()
    reported = sent.get_json()["number"]
    with psycopg.connect(settings.database_url) as conn:
        name = conn.execute(
            "SELECT name FROM organisation WHERE code = %s", (desk.bureau,)
        ).fetchone()[0]  # type: ignore[index]
    en = Install(settings, out, locale="en", rate_limit_api="*=100000/hour")
    en.der = zh.der
    try:
        yield Site(field, en, ZoneInfo(settings.work_timezone), verified, reported, on_site,
                   (desk.bureau, name))  # fmt: skip
    finally:
        en.close()
        zh.close()
        db.drop_database(settings)


def _history(install: Install, account: str, number: str) -> dict[str, list[str]]:
    """transition → [time shown, signed content shown] of the case page's history, with the
    browser in UTC; every signature verified."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_context(timezone_id="UTC").new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _serve_through(install, account, page, ORIGIN)
            page.route(ORIGIN + "/tiles/**", lambda route: route.fulfill(status=404))
            page.goto(f"{ORIGIN}/inbox/{number}")
            wait_until(page, "document.getElementById('chain-status').className !== 'status'")
            assert page.get_attribute("#chain-status", "class") == "status good", page.inner_text(
                "#chain-status"
            )
            rows = page.locator("#history tbody tr").evaluate_all(
                "rs => rs.map(r => [r.dataset.transition, r.cells[1].textContent,"
                " r.cells[5].textContent])"
            )
            labels = page.locator("form.action label").all_inner_texts()
            wait_until(page, "document.getElementById('who').textContent !== ''")
            who = page.inner_text("#who")
            assert not errors, errors
        finally:
            browser.close()
    shown = {transition: [at, text] for transition, at, text in rows}
    shown["labels"] = labels
    shown["who"] = [who]
    return shown


def _times(install: Install, number: str, zone: ZoneInfo) -> dict[str, str]:
    with psycopg.connect(install.settings.database_url) as conn:
        rows = conn.execute(
            "SELECT e.transition, e.at FROM case_event e JOIN city_case c ON c.id = e.case_id"
            " WHERE c.number = %s ORDER BY e.id",
            (number,),
        ).fetchall()
    return {t: at.astimezone(zone).strftime("%Y-%m-%d %H:%M") for t, at in rows}


def test_a_history_in_words_and_in_the_installs_zone(site: Site) -> None:
    zh = site.field.install
    code, name = site.bureau
    shown = _history(zh, "cs-dispatcher", site.verified)
    # Each step's time in the install's zone, though the browser is in UTC.
    for transition, at in _times(zh, site.verified, site.zone).items():
        assert shown[transition][0] == at, (transition, shown[transition], at)
    assert shown["remind"][1] == "提醒内容：群众反映强烈，请尽快处置", shown["remind"]
    assert shown["order"][1] == "督办内容：请于时限内处置并回复", shown["order"]
    assert shown["dispatch"][1] == f"处置部门：{name}（{code}）", shown["dispatch"]
    on_site = site.on_site.astimezone(site.zone).strftime("%Y-%m-%d %H:%M")
    assert shown["verify"][1] == f"说明：属实；现场时间：{on_site}", shown["verify"]
    assert "client_time" not in str(shown)
    assert shown["who"] == ["cs-dispatcher（派遣员）"], shown["who"]  # a role's name, not its code

    # Sent at once: the device's time says nothing the step's time does not; the place is
    # the device's fix, never its digest.
    shown = _history(zh, "cs-operator", site.reported)
    assert "位置：设备定位" in shown["create"][1], shown["create"]
    assert "现场时间" not in shown["create"][1] and not HEX.search(shown["create"][1])

    # The street office's own forms: a reminder's message is a reminder's.
    labels = _history(zh, "ch-street", site.verified)["labels"]
    assert [s.strip() for s in labels] == ["提醒内容", "督办内容"], labels


def test_a_history_in_english(site: Site) -> None:
    code, name = site.bureau
    shown = _history(site.en, "cs-dispatcher", site.verified)
    assert shown["remind"][1] == "Reminder: 群众反映强烈，请尽快处置", shown["remind"]
    assert shown["order"][1] == "Order: 请于时限内处置并回复", shown["order"]
    assert shown["dispatch"][1] == f"Bureau: {name} ({code})", shown["dispatch"]
    assert shown["who"] == ["cs-dispatcher (dispatcher)"], shown["who"]
    on_site = site.on_site.astimezone(site.zone).strftime("%Y-%m-%d %H:%M")
    assert shown["verify"][1].endswith(f"; On site at: {on_site}"), shown["verify"]
    shown = _history(site.en, "cs-operator", site.reported)
    assert "Location: device fix" in shown["create"][1], shown["create"]
