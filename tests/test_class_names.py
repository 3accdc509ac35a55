"""The standard component and event classes in the install's language: English names in an
`en` install (the case form, the components' pages, a case, Open311, the street statistics
export, the CLI), the standard's Chinese in a zh-CN one, codes unchanged; an administrator's
edited name wins over the shipped translation in the locale it was edited in, and a name
edited before English shipped stays as edited (migration 0035)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import db, migrate
from mapserver.cli import main
from mapserver.demo import PHASE_NAMES
from mapserver.demo.district import generate
from mapserver.settings import Settings

from .app_client import Install
from .conftest import database_url, demo_database
from .test_cases import Desk

CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
ROOT = Path(__file__).resolve().parents[1]
TEXTS = ("major_name", "name", "filing_condition", "closing_condition")


def _class_text(conn: psycopg.Connection, locale: str) -> dict[tuple[str, str, str], tuple]:  # type: ignore[type-arg]
    rows = conn.execute(
        "SELECT kind, major, minor, major_name, name, filing_condition, closing_condition"
        " FROM class_text(%s)",
        (locale,),
    ).fetchall()
    return {(k, a, b): tuple(rest) for k, a, b, *rest in rows}


# ---------------------------------------------------------------- the shipped vocabulary


def test_every_standard_class_has_english_texts(conn: psycopg.Connection) -> None:
    """A class added to the standard's tables without its English fails here."""
    en = _class_text(conn, "en")
    zh = _class_text(conn, "zh-CN")
    classes = conn.execute(
        "SELECT 'event', major, minor FROM event_class"
        " UNION ALL SELECT 'component', major, minor FROM component_class"
    ).fetchall()
    assert len(classes) >= 80 and set(en) == set(zh) == {tuple(c) for c in classes}
    for key, texts in en.items():
        for field, text in zip(TEXTS, texts, strict=True):
            assert text is not None and not CJK.search(text), (key, field, text)
            if field in ("major_name", "name", "filing_condition"):
                assert text, (key, field)
    assert en[("event", "01", "02")][:2] == ("City appearance", "Exposed garbage")
    assert en[("component", "01", "01")][1] == "Water supply manhole cover"
    assert (
        en[("component", "01", "01")][2]
        == "Water supply manhole cover missing, damaged or displaced"
    )
    assert zh[("event", "01", "02")][:2] == ("市容环境", "暴露垃圾")  # the class table's own
    names = [t[1] for k, t in en.items() if k[0] == "event"]
    assert len(names) == len(set(names)), "two event classes with one English name"


@pytest.fixture
def before_english(tmp_path: Path) -> Iterator[Settings]:
    """A database of its own, migrated, then taken back to before migration 0035."""
    s = dataclasses.replace(Settings(), database_url=database_url("citygrid_cls_mig"),
                            data_dir=tmp_path)  # fmt: skip
    db.drop_database(s)
    db.ensure_database(s)
    with db.connect(s) as c:
        migrate.upgrade(c, s)
        c.execute("DROP FUNCTION class_text(text)")
        c.execute("DROP TABLE class_label")
        c.execute("DELETE FROM schema_migrations WHERE version = 35")
    yield s
    db.drop_database(s)


def test_a_name_edited_before_english_shipped_stays_as_edited(before_english: Settings) -> None:
    with db.connect(before_english) as c:
        c.autocommit = True
        c.execute(
            "UPDATE event_class SET name = '路边暴露垃圾' WHERE (major, minor) = ('01', '02')"
        )
        c.execute(
            "UPDATE component_class SET filing_condition = '井盖缺失即立案'"
            " WHERE (major, minor) = ('01', '01')"
        )
        applied = migrate.upgrade(c, before_english)
        assert [m.version for m in applied] == [35]
        en = _class_text(c, "en")
    # The edited text stays what the administrator wrote; the row's other texts are English.
    edited = ("City appearance", "路边暴露垃圾", "Filed as soon as found: exposed garbage")
    assert en[("event", "01", "02")][:3] == edited
    assert en[("component", "01", "01")][1:3] == ("Water supply manhole cover", "井盖缺失即立案")
    assert en[("event", "01", "03")][1] == "Accumulated garbage or muck"


# ---------------------------------------------------------------- served in the locale


@dataclasses.dataclass
class Installs:
    en: Install
    zh: Install
    desk: Desk


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installs]:
    settings = demo_database("citygrid_class_names", tmp_path_factory.mktemp("cls-var"))
    out = tmp_path_factory.mktemp("cls-certs")
    en = Install(settings, out, locale="en", rate_limit_api="*=100000/hour")
    desk = Desk(en)  # operators, a leader, a bureau … with signing keys
    with db.connect(settings) as c:
        bureau = c.execute(
            "SELECT code FROM organisation WHERE kind = 'bureau' ORDER BY code LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
    for name, roles, org in [("cls-admin", ["admin"], None), ("cls-hotline", ["partner"], None),
                             ("cls-bureau", ["bureau_handler"], bureau)]:  # fmt: skip
        en.account(name, roles, org)
    zh = Install(settings, out, rate_limit_api="*=100000/hour")  # the same CA and accounts
    zh.der = en.der
    zh._signing = en._signing  # the same signing keys
    yield Installs(en, zh, desk)
    en.close()
    zh.close()
    db.drop_database(settings)


def _get(install: Install, who: str, path: str) -> Any:
    reply = install.client(who).get(path)
    assert reply.status_code == 200, (path, reply.get_data(as_text=True)[:300])
    return reply.get_json() if reply.is_json else reply.get_data(as_text=True)


def _event(install: Install, major: str, minor: str) -> dict[str, str]:
    forms = _get(install, "cs-operator", "/cases/forms")
    return next(c for c in forms["event_classes"] if (c["major"], c["minor"]) == (major, minor))


def test_case_form_components_and_a_case_in_the_installs_language(installs: Installs) -> None:
    en = _get(installs.en, "cs-operator", "/cases/forms")["event_classes"]
    zh = _get(installs.zh, "cs-operator", "/cases/forms")["event_classes"]
    assert [(c["major"], c["minor"]) for c in en] == [(c["major"], c["minor"]) for c in zh]
    assert not [c for c in en if CJK.search(c["name"] + c["major_name"])]
    assert _event(installs.en, "05", "05")["name"] == "Illegally parked car"
    assert _event(installs.zh, "05", "05")["name"] == "机动车乱停放"

    forms = _get(installs.en, "cls-bureau", "/components/forms")["classes"]
    assert not [c for c in forms if CJK.search(c["name"] + c["major_name"])]
    assert _get(installs.zh, "cls-bureau", "/components/forms")["classes"][0]["name"] == "上水井盖"
    listed = _get(installs.en, "cls-bureau", "/components")["components"]
    assert listed and not [c for c in listed if CJK.search(c["class"]["name"])]
    code = listed[0]["code"]
    shown = _get(installs.zh, "cls-bureau", f"/components/{code}")["class"]["name"]
    assert CJK.search(shown)

    created = installs.desk.record(major="05", minor="05")
    assert created.status_code == 201, created.get_json()
    number = created.get_json()["number"]
    assert _get(installs.en, "cs-operator", f"/cases/{number}")["class"]["name"] == (
        "Illegally parked car"
    )
    assert _get(installs.zh, "cs-operator", f"/cases/{number}")["class"]["name"] == "机动车乱停放"
    assert _get(installs.en, "cs-operator", f"/cases/{number}")["state_name"] == "Reported"
    assert _get(installs.zh, "cs-operator", f"/cases/{number}")["state_name"] == "已上报"
    # The statistics count days in the install's working time zone, not in UTC.
    zone = ZoneInfo(installs.en.settings.work_timezone)
    day = dt.datetime.fromisoformat(created.get_json()["created_at"]).astimezone(zone).date()
    for install, name in [(installs.en, "Illegally parked car"), (installs.zh, "机动车乱停放")]:
        text = _get(install, "cs-leader", f"/street/stats?format=csv&from={day}&to={day}")
        rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
        assert ["class", "event/05/05", name] in [r[2:5] for r in rows]


def test_open311_services_in_the_installs_language(installs: Installs) -> None:
    services = _get(installs.en, "cls-hotline", "/open311/v2/services.json")
    garbage = next(s for s in services if s["service_code"] == "event-01-02")
    assert garbage["service_name"] == "Exposed garbage" and garbage["group"] == "City appearance"
    assert garbage["keywords"].split(",") == ["Event", "City appearance", "event-01"]
    assert not [s for s in services if CJK.search(str(s))]
    zh = _get(installs.zh, "cls-hotline", "/open311/v2/services.json")
    garbage = next(s for s in zh if s["service_code"] == "event-01-02")
    assert garbage["keywords"].split(",") == ["事件", "市容环境", "event", "event-01"]
    assert garbage["service_name"] == "暴露垃圾"
    definition = _get(installs.en, "cls-hotline", "/open311/v2/services/component-01-01.json")
    assert not CJK.search(str(definition))
    definition = _get(installs.zh, "cls-hotline", "/open311/v2/services/component-01-01.json")
    assert "部件编码" in str(definition)


def _rename(install: Install, minor: str, **texts: str) -> None:
    envelope = install.envelope("cls-admin", "class.update", f"class event/04/{minor}", texts)
    reply = install.client("cls-admin").post(f"/maintenance/classes/event/04/{minor}",
                                             json=envelope)  # fmt: skip
    assert reply.status_code == 200, reply.get_json()


def test_an_edited_name_wins_in_the_locale_it_was_edited_in(installs: Installs) -> None:
    _rename(installs.en, "01", name="Sinkhole", filing_condition="Any sinkhole")
    _rename(installs.zh, "02", name="供水管道爆裂")
    assert _event(installs.en, "04", "01")["name"] == "Sinkhole"
    assert _event(installs.zh, "04", "01")["name"] == "路面塌陷"  # the zh-CN name untouched
    assert _event(installs.zh, "04", "02")["name"] == "供水管道爆裂"
    assert _event(installs.en, "04", "02")["name"] == "Burst water main"
    table = _get(installs.en, "cls-admin", "/maintenance/classes/event")["classes"]
    row = next(c for c in table if (c["major"], c["minor"]) == ("04", "01"))
    assert (row["name"], row["filing_condition"]) == ("Sinkhole", "Any sinkhole")
    assert row["closing_condition"] == "Road collapse cleared"  # not edited: shipped English


# ---------------------------------------------------------------- the CLI


def test_cli_in_an_english_install_prints_no_chinese(installs: Installs) -> None:
    s = installs.en.settings
    with db.connect(s) as c:
        departments = [r[0] for r in c.execute(
            "SELECT department FROM event_class UNION SELECT department FROM component_class"
            " ORDER BY 1 DESC"
        ).fetchall() if r[0]]  # fmt: skip
    env = {"CITYGRID_DATABASE_URL": s.database_url, "CITYGRID_DATA_DIR": str(s.data_dir),
           "CITYGRID_LOCALE": "en"}  # fmt: skip
    for args in (["maint", "class", "list", "--kind", "event"],
                 ["maint", "class", "list", "--kind", "component"],
                 ["eval", "indicators", "--subject", "centre", "--from", "2026-01-01",
                  "--to", "2026-01-31"]):  # fmt: skip
        ran = CliRunner().invoke(main, args, env=env)
        assert ran.exit_code == 0, ran.output
        shown = ran.output
        for department in departments:  # organisation names: the install's data, not words
            shown = shown.replace(department, "")
        assert shown.strip() and not CJK.search(shown), (args, shown)
    zh = CliRunner().invoke(
        main, ["maint", "class", "list"], env={**env, "CITYGRID_LOCALE": "zh-CN"}
    )
    assert "暴露垃圾" in zh.output


def test_demo_progress_words_follow_the_locale() -> None:
    """Every phase the demo reports has its words in each locale, none Chinese in en."""
    phases: list[str] = []
    generate(0.25, 1, "110108", step=phases.append)
    loading = re.findall(
        r'step\("([a-z_]+)"\)', (ROOT / "mapserver/demo/load.py").read_text("utf-8")
    )
    assert len(phases) == 6 and len(loading) == 6
    for code in ("start", "done", *phases, *loading):
        assert PHASE_NAMES["zh-CN"][code] and PHASE_NAMES["en"][code], code
        assert not CJK.search(PHASE_NAMES["en"][code])
    assert PHASE_NAMES["zh-CN"]["roads"] == "道路与街区"
