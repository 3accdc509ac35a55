"""What people see of the evaluation: the XLSX and PDF reports hold the API's figures, the
trend and per-class routes add up to the indicators, the hot-spot tiles shade a dense grid
darker than an empty one (clean PNGs, the product's policy), and the big screen's state
counts today's reports with an ETag that changes only when the state does.

Cases are driven through the real store (`store.create` / `store.act`): twelve filed in one
unit grid in October 2026 (events of class 01), three in another (class 02), none in a
third; some dispatched to two bureaus and closed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from openpyxl import load_workbook
from PIL import Image
from pypdf import PdfReader

from auth import policy
from mapserver import db
from mapserver.cases import place, store
from mapserver.evaluation import exports
from mapserver.evaluation.indicators import INDICATORS
from mapserver.services import services
from tiles import png
from webclient.messages import catalogue

from .app_client import Install
from .conftest import demo_database

TZ = ZoneInfo("Asia/Shanghai")
PERIOD = "from=2026-10-01&to=2026-10-31"
OPERATOR, FILER, DISPATCHER, HANDLER = "evv-operator", "evv-filer", "evv-dispatcher", "evv-handler"


@dataclasses.dataclass
class Views:
    install: Install
    dense: str  # the grid with twelve filed cases
    sparse: str  # three
    empty: str  # none
    bureaus: list[str]

    def get(self, who: str, path: str, **kw: Any) -> Any:
        return self.install.client(who).get(path, **kw)

    def json(self, path: str, who: str = "evv-leader") -> Any:
        reply = self.get(who, path)
        assert reply.status_code == 200, (path, reply.data[:300])
        return json.loads(reply.data)

    def create(self, grid: str, minor: str, major: str, when: dt.datetime) -> str:
        found = services(self.install.app)
        with db.transaction(self.install.settings) as conn:
            return store.create(
                conn, self.install.settings, found.tiles().grid, found.calendar(),
                account="evv-inspector", signed_action=None, now=when,
                params={"source": "inspector", "kind": "event", "major": major, "minor": minor,
                        "description": "评价页面测试", "place": {"grid": grid}},
            )  # fmt: skip

    def act(
        self, number: str, steps: list[tuple[str, str, dict[str, Any]]], at: dt.datetime
    ) -> None:
        found = services(self.install.app)
        state = "reported"
        with db.transaction(self.install.settings) as conn:
            for i, (name, actor, params) in enumerate(steps):
                state, _ = store.act(
                    conn, found.calendar(), number=number, name=name,
                    params={"from": state, **params}, account=actor, signed_action=None,
                    now=at + dt.timedelta(minutes=10 * (i + 1)),
                )  # fmt: skip


def closing(bureau: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("accept", OPERATOR, {}),
        ("file", FILER, {}),
        ("dispatch", DISPATCHER, {"bureau": bureau}),
        ("receive", HANDLER, {}),
        ("handle", HANDLER, {"result": "已处置"}),
        ("forward", DISPATCHER, {}),
        ("request_check", OPERATOR, {}),
        ("check_pass", "evv-inspector", {"note": "已结案"}),
    ]


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Views]:
    settings = demo_database("citygrid_eval_views", tmp_path_factory.mktemp("evv-var"))
    install = Install(
        settings,
        tmp_path_factory.mktemp("evv-certs"),
        rate_limit_api="*=100000/hour",
        rate_limit_tiles="*=100000/hour",
    )
    install.account("evv-leader", ["leader"])
    install.account("evv-screen", ["screen"])
    install.account("evv-inspector", ["inspector"], "street-001")
    install.account("evv-viewer", ["viewer"], "street-001")
    install.account("evv-bureau", ["bureau_handler"])
    with psycopg.connect(settings.database_url) as conn:
        bureaus = [r[0] for r in conn.execute(
            "SELECT code FROM organisation WHERE kind = 'bureau' ORDER BY code")]  # fmt: skip
        grids = [r[0] for r in conn.execute(
            "SELECT code FROM unit_grid WHERE left(community_code, 9) = '110108001'"
            " ORDER BY code")]  # fmt: skip
    v = Views(install, grids[0], grids[len(grids) // 2], grids[-1], bureaus[:2])
    for i in range(12):
        when = dt.datetime(2026, 10, 12 + i % 5, 9, 0, tzinfo=TZ)
        number = v.create(v.dense, "02", "01", when)
        steps = closing(v.bureaus[i % 2])
        v.act(number, steps if i % 3 else steps[:5], when)  # a third left with the bureau
    for i in range(3):
        when = dt.datetime(2026, 10, 20 + i, 9, 0, tzinfo=TZ)
        v.act(v.create(v.sparse, "01", "02", when), closing(v.bureaus[1]), when)
    yield v
    install.close()
    db.drop_database(settings)


# ------------------------------------------------------------------ reports as files


def test_xlsx_holds_the_apis_figures(views: Views) -> None:
    api = views.json(f"/evaluation/indicators?subject=bureau&{PERIOD}")
    reply = views.get("evv-leader", f"/evaluation/report.xlsx?subject=bureau&{PERIOD}")
    assert reply.status_code == 200 and reply.mimetype.endswith("spreadsheetml.sheet")
    assert "attachment" in reply.headers["Content-Disposition"]
    book = load_workbook(io.BytesIO(reply.data))
    assert book.sheetnames == ["排名", "指标", "公式"]
    ranking = list(book["排名"].iter_rows(min_row=3, values_only=True))
    assert len(ranking) == len(api["subjects"])
    for row, s in zip(ranking, api["subjects"], strict=True):
        assert row == (s["rank"], s["subject"], s["name"], s["score"], s["grade"],
                       s["previous_score"], s["change"], s["previous_rank"])  # fmt: skip
    scored = [s for s in api["subjects"] if s["score"] is not None]
    assert len(scored) == 2  # the two bureaus the cases went to
    values = list(book["指标"].iter_rows(min_row=2, values_only=True))
    titles = {i["key"]: (i["title"], _in_words(i)) for i in api["indicators"]}
    expected = [
        (s["subject"], s["name"], *titles[k], v["numerator"], v["denominator"], v["value"],
         v["grade"], v["weight"], v["score"], v["previous_value"])
        for s in api["subjects"] for k, v in s["indicators"].items()
    ]  # fmt: skip
    assert sorted(values, key=str) == sorted(expected, key=str)  # JSON objects: any order
    handled = [r for r in values if r[2] == "处置率" and r[0] in views.bureaus]
    assert sorted((r[4], r[5]) for r in handled) == [(6, 6), (9, 9)]  # by the fixture
    formulas = {r[1]: r[2] for r in book["公式"].iter_rows(min_row=2, values_only=True)}
    assert formulas == {i["key"]: _in_words(i) for i in api["indicators"]}
    # In the catalogue's words (they read "处置率 = handled / (dispatched - recalled)").
    assert formulas["bureau.handling_rate"] == "处置率 = 处置数 / (受派数 - 被撤回数)"


def _in_words(indicator: dict[str, Any]) -> str:
    """An indicator's formula with its measures named as the zh-CN catalogue names them."""
    words = catalogue("zh-CN")
    found = INDICATORS[indicator["key"]]
    return found.formula(indicator["title"], lambda m: words[f"measure.{m}"])


def test_pdf_holds_the_apis_figures_in_a_cjk_font(views: Views) -> None:
    api = views.json(f"/evaluation/indicators?subject=street&{PERIOD}")
    reply = views.get("evv-leader", f"/evaluation/report.pdf?subject=street&{PERIOD}")
    assert reply.status_code == 200 and reply.mimetype == "application/pdf"
    reader = PdfReader(io.BytesIO(reply.data))
    text = re.sub(r"\s+", "", "".join(page.extract_text() for page in reader.pages))
    assert "综合评价报告" in text and "街道" in text and "2026-10-01" in text
    names = [s["name"] for s in api["subjects"]]
    for s in api["subjects"]:
        assert s["name"] in text
        if s["score"] is not None:
            assert f"{s['score']:g}" in text
        for key, v in s["indicators"].items():
            if key.endswith("closing_rate") and v["denominator"]:
                assert exports._fmt(v["value"]) in text
    for i in api["indicators"]:
        assert _in_words(i).replace(" ", "") in text
    # The names are drawn in an embedded CJK font that has a glyph for every character
    # (a missing glyph would print as a box while the text still extracts).
    fonts = set()
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for f in resources["/Font"].values():
            obj = f.get_object()
            if obj["/BaseFont"] == "/Helvetica":  # reportlab's default, drawing nothing here
                continue
            fonts.add(str(obj["/BaseFont"]))
            assert "/FontFile2" in obj["/FontDescriptor"].get_object()  # embedded TrueType
    assert fonts and all("WenQuanYiZenHei" in f for f in fonts), fonts
    from reportlab.pdfbase.ttfonts import TTFont

    cmap = TTFont("check", str(exports.CJK_FONTS[0]), subfontIndex=0).face.charToGlyph
    assert all(cmap.get(ord(ch)) for name in names for ch in name)


def test_reports_refuse_bad_input_and_other_roles(views: Views) -> None:
    for path in (
        "/evaluation/report.doc?subject=bureau&" + PERIOD,
        "/evaluation/report.pdf?subject=nobody&" + PERIOD,
        "/evaluation/report.xlsx?subject=bureau&from=2026-10-31&to=2026-10-01",
    ):
        reply = views.get("evv-leader", path)
        assert reply.status_code in (400, 404) and reply.is_json, path
    for who in ("evv-screen", "evv-inspector", "evv-viewer"):
        reply = views.get(who, f"/evaluation/report.pdf?subject=bureau&{PERIOD}")
        assert reply.status_code == 403, who


# ------------------------------------------------------------------ trend and classes


def test_trend_pieces_add_up_to_the_period(views: Views) -> None:
    api = views.json(f"/evaluation/indicators?subject=bureau&{PERIOD}")
    trend = views.json(f"/evaluation/trend?indicator=bureau.handling_rate&{PERIOD}")
    assert trend["indicator"]["formula"] == "处置率 = handled / (dispatched - recalled)"
    assert trend["periods"][0] == {"from": "2026-10-01", "to": "2026-10-07"}
    assert trend["periods"][-1]["to"] == "2026-10-31" and len(trend["periods"]) == 5
    for s in trend["series"]:
        whole = next(x for x in api["subjects"] if x["subject"] == s["subject"])
        v = whole["indicators"]["bureau.handling_rate"]
        assert sum(p["numerator"] for p in s["points"]) == v["numerator"]
        assert sum(p["denominator"] for p in s["points"]) == v["denominator"]
    assert sum(p["denominator"] for p in trend["all"]) == 15
    months = views.json(
        "/evaluation/trend?indicator=street.closing_rate&from=2026-08-15&to=2026-12-31"
    )
    assert [p["from"] for p in months["periods"]] == [
        "2026-08-15", "2026-09-01", "2026-10-01", "2026-11-01", "2026-12-01"]  # fmt: skip
    assert views.get("evv-leader", "/evaluation/trend?indicator=nope&" + PERIOD).status_code == 400


def test_classes_break_the_district_down(views: Views) -> None:
    found = views.json(f"/evaluation/classes?{PERIOD}")["classes"]
    by = {(c["kind"], c["major"]): c for c in found}
    assert set(by) == {("event", "01"), ("event", "02")}
    assert by["event", "01"]["name"] == "市容环境" and by["event", "02"]["name"] == "宣传广告"
    assert (by["event", "01"]["filed"], by["event", "01"]["closed"]) == (12, 8)
    assert (by["event", "02"]["filed"], by["event", "02"]["closed"]) == (3, 3)
    assert by["event", "01"]["closing_rate"] == round(8 / 12, 6)
    street = views.json(f"/evaluation/indicators?subject=street&{PERIOD}")["subjects"]
    closed = sum(s["indicators"]["street.closing_rate"]["numerator"] for s in street)
    assert closed == sum(c["closed"] for c in found)


# ------------------------------------------------------------------ hot-spot tiles


def _grid_pixel(views: Views, grid: str, scale: int) -> dict[str, int]:
    svc = services(views.install.app).tiles()
    with psycopg.connect(views.install.settings.database_url) as conn:
        row = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM unit_grid"
            " WHERE code = %s) s",
            (grid,),
        ).fetchone()
    assert row is not None
    finest = place.pixel_of(svc.grid, float(row[0]), float(row[1]))
    x, y = svc.grid.ground(finest.level, finest.x, finest.y, finest.col + 0.5, finest.row + 0.5)
    z = svc.grid.z_of_scale(scale)
    tx, ty, col, row_ = svc.grid.locate(z, x, y)
    return {"level": z, "x": tx, "y": ty, "col": col, "row": row_}


def _hotspot(views: Views, p: dict[str, int], query: str, who: str = "evv-leader") -> Any:
    return views.get(who, f"/evaluation/hotspot/{p['level']}/{p['x']}/{p['y']}.png?{query}")


def _rgba(data: bytes, p: dict[str, int]) -> tuple[int, int, int, int]:
    return Image.open(io.BytesIO(data)).convert("RGBA").getpixel((p["col"], p["row"]))  # type: ignore[return-value]


def test_hotspot_shades_a_dense_grid_darker_than_an_empty_one(views: Views) -> None:
    shade: dict[str, tuple[int, int, int, int]] = {}
    for name, grid in (("dense", views.dense), ("sparse", views.sparse), ("empty", views.empty)):
        p = _grid_pixel(views, grid, 2000)
        reply = _hotspot(views, p, PERIOD)
        assert reply.status_code == 200 and reply.mimetype == "image/png"
        assert png.is_clean(reply.data)
        assert reply.headers["Cache-Control"] == "private, no-cache"
        shade[name] = _rgba(reply.data, p)

    def darkness(c: tuple[int, int, int, int]) -> float:
        return (255 - (c[0] * 299 + c[1] * 587 + c[2] * 114) / 1000) * c[3] / 255

    assert shade["empty"][3] == 0, shade  # no case: left clear
    assert shade["dense"][3] > 0 and shade["sparse"][3] > 0
    assert darkness(shade["dense"]) > darkness(shade["sparse"]) > darkness(shade["empty"])
    # Only class 02 events: the dense grid (class 01) is clear, the sparse one shaded.
    p = _grid_pixel(views, views.dense, 2000)
    assert _rgba(_hotspot(views, p, PERIOD + "&class=e02").data, p)[3] == 0
    q = _grid_pixel(views, views.sparse, 2000)
    assert _rgba(_hotspot(views, q, PERIOD + "&class=e02").data, q) == shade["sparse"]
    # A period before the cases: clear everywhere.
    assert _rgba(_hotspot(views, p, "from=2026-09-01&to=2026-09-30").data, p)[3] == 0
    # The same tile again is a cache hit with the same ETag: 304 to If-None-Match.
    first = _hotspot(views, p, PERIOD)
    again = views.get(
        "evv-leader",
        f"/evaluation/hotspot/{p['level']}/{p['x']}/{p['y']}.png?{PERIOD}",
        headers={"If-None-Match": first.headers["ETag"]},
    )
    assert again.status_code == 304


def test_hotspot_follows_the_tile_policy(views: Views) -> None:
    p = _grid_pixel(views, views.dense, 2000)
    assert _hotspot(views, p, PERIOD, "evv-screen").status_code == 200
    assert _hotspot(views, p, PERIOD, "evv-viewer").status_code == 403  # no hot spots
    assert _hotspot(views, p, PERIOD, "evv-bureau").status_code == 403  # no case map
    fine = _grid_pixel(views, views.dense, 500)
    assert _hotspot(views, fine, PERIOD, "evv-leader").status_code == 200
    assert _hotspot(views, fine, PERIOD, "evv-screen").status_code == 403  # overview only
    for query in ("from=2026-10-01", "from=2026-10-01&to=2026-10-31&class=x01",
                  "from=2026-10-01&to=2026-10-31&class=e1'"):  # fmt: skip
        reply = _hotspot(views, p, query)
        assert reply.status_code == 400 and reply.is_json, query
    assert (
        views.get("evv-leader", f"/evaluation/hotspot/{p['level']}/0/0.png?{PERIOD}").status_code
        == 404
    )
    # The product's own tiles (the last 30 days) through the common tile route.
    plain = views.get("evv-screen", f"/tiles/hotspot/{p['level']}/{p['x']}/{p['y']}.png")
    assert plain.status_code == 200 and png.is_clean(plain.data)


# ------------------------------------------------------------------ the big screen


def test_screen_state_counts_today_and_answers_304_until_it_changes(views: Views) -> None:
    first = views.get("evv-screen", "/screen/state")
    assert first.status_code == 200
    state = json.loads(first.data)
    assert set(state["counters"]) == {"reported_today", "open", "overdue", "closed_today"}
    assert state["counters"]["open"] >= 4  # the four left with the bureau
    assert [r["rank"] for r in state["rankings"]["bureau"]] == sorted(
        r["rank"] for r in state["rankings"]["bureau"]
    )
    assert all(set(e) == {"id", "at", "number", "event", "transition", "state", "street",
                      "class"}
               for e in state["latest"])  # fmt: skip
    same = views.get(
        "evv-screen", "/screen/state", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert same.status_code == 304
    number = views.create(views.sparse, "02", "01", dt.datetime.now(TZ))
    after = views.get(
        "evv-screen", "/screen/state", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert after.status_code == 200 and after.headers["ETag"] != first.headers["ETag"]
    now = json.loads(after.data)
    assert now["counters"]["reported_today"] == state["counters"]["reported_today"] + 1
    assert now["counters"]["open"] == state["counters"]["open"] + 1
    assert now["latest"][0]["number"] == number and now["latest"][0]["event"] == "上报"
    assert not re.search(r"\d{5,}\.\d", after.data.decode())  # no coordinate-like numbers


def test_the_screen_account_only_reads(views: Views) -> None:
    rule = policy.POLICY["screen"]
    assert rule.actions == {"map.view", "tiles.read", "screen.read"}
    assert rule.finest_scale == 2000 and "topo500" not in rule.maps
    for path in ("/cases", "/evaluation/indicators?subject=bureau&" + PERIOD, "/evaluation"):
        assert views.get("evv-screen", path).status_code == 403, path
    client = views.install.client("evv-screen")
    for path in ("/cases/report", "/cases/record", "/evaluation/config", "/admin/accounts"):
        assert client.post(path, json={}).status_code == 403, path
    assert views.get("evv-screen", "/screen").status_code == 200
    page = views.get("evv-leader", "/evaluation")
    assert page.status_code == 200 and b"echarts.min.js" in page.data
    assert views.get("evv-leader", "/static/vendor/echarts/echarts.min.js").status_code == 200
