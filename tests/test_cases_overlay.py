"""The cases overlay on the production app: a case's point in its state group's colour,
overdue in red, redrawn after a transition (and only that product), clean PNGs, refused to
the viewer, a click that names the case and no coordinate, street scope."""

from __future__ import annotations

import io
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from PIL import Image

from mapserver import db
from mapserver.cases import flow, on_map
from mapserver.services import services
from tiles import png
from tiles.service import TileService
from tiles.style import palette

from .app_client import Install
from .conftest import demo_database
from .test_cases import Desk

STREET_1, STREET_2 = "110108001", "110108002"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _near(a: tuple[int, ...], b: tuple[int, ...], tol: int = 14) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a[:3], b[:3], strict=True))


def _row(conn: psycopg.Connection, query: str, *args: Any) -> tuple[Any, ...]:
    found = conn.execute(query, args).fetchone()
    assert found is not None, query
    return tuple(found)


def _pixel(data: bytes, col: int, row: int) -> tuple[int, ...]:
    return Image.open(io.BytesIO(data)).convert("RGBA").getpixel((col, row))  # type: ignore[return-value]


def _opaque(data: bytes) -> int:
    """How many pixels of a tile are drawn (alpha above 0)."""
    alpha = Image.open(io.BytesIO(data)).convert("RGBA").getchannel("A")
    return sum(1 for a in alpha.tobytes() if a)


class Overlay:
    """Desk's people plus a viewer, on a demo district of its own; cases placed by grid."""

    def __init__(self, install: Install):
        self.desk = Desk(install)
        self.install = install
        install.account("co-viewer", ["viewer"], "street-001")
        self._used: set[str] = set()

    @property
    def tiles(self) -> TileService:
        return services(self.install.app).tiles()

    def grid_in(self, street: str) -> str:
        """A unit grid of `street` not used by an earlier case of this module (each case has
        its own place, so no other case's symbol covers it)."""
        with psycopg.connect(self.install.settings.database_url) as conn:
            rows = conn.execute(
                "SELECT code FROM unit_grid WHERE code LIKE %s ORDER BY code", (f"{street}%",)
            ).fetchall()
        for (code,) in rows:
            if code not in self._used:
                self._used.add(code)
                return str(code)
        raise AssertionError(f"no unused grid in street {street}")

    def record(self, grid: str) -> dict[str, Any]:
        reply = self.desk.record(place={"grid": grid})
        assert reply.status_code == 201, reply.get_json()
        return reply.get_json()  # type: ignore[no-any-return]

    def record_at(self, x: float, y: float) -> dict[str, Any]:
        """A case at a point (inside the zone), given as a pixel of the finest level."""
        grid = self.tiles.grid
        z = len(grid.scales) - 1
        tx, ty, col, row = grid.locate(z, x, y)
        place = {"pixel": {"level": z, "x": tx, "y": ty, "col": col, "row": row}}
        reply = self.desk.record(place=place)
        assert reply.status_code == 201, reply.get_json()
        return reply.get_json()  # type: ignore[no-any-return]

    def act(self, number: str, *steps: tuple[str, str, dict[str, Any]]) -> None:
        for who, name, params in steps:
            reply = self.desk.act(who, number, name, **params)
            assert reply.status_code == 200, (name, reply.get_json())

    def get(self, who: str, path: str):  # type: ignore[no-untyped-def]
        return self.install.client(who).get(path)

    def tile(self, who: str, product: str, pixel: dict[str, int]) -> bytes:
        reply = self.get(who, f"/tiles/{product}/{pixel['level']}/{pixel['x']}/{pixel['y']}.png")
        assert reply.status_code == 200, reply.get_json()
        return reply.data  # type: ignore[no-any-return]

    def at(self, pixel: dict[str, int], scale: int) -> dict[str, int]:
        """The same place as a pixel of the level of `scale` (computed inside the zone)."""
        grid = self.tiles.grid
        x, y = grid.ground(
            pixel["level"], pixel["x"], pixel["y"], pixel["col"] + 0.5, pixel["row"] + 0.5
        )
        z = grid.z_of_scale(scale)
        tx, ty, col, row = grid.locate(z, x, y)
        return {"level": z, "x": tx, "y": ty, "col": col, "row": row}

    def click(self, who: str, pixel: dict[str, Any]):  # type: ignore[no-untyped-def]
        q = "&".join(f"{k}={pixel[k]}" for k in ("level", "x", "y", "col", "row"))
        return self.get(who, f"/map/cases?{q}")

    def owner_sql(self, query: str, *args: Any) -> None:
        """A change straight in the database, by the owner: no request, no tile expiry."""
        with psycopg.connect(self.install.settings.database_url, autocommit=True) as conn:
            conn.execute(query, args)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Overlay]:
    settings = demo_database("citygrid_cases_map", tmp_path_factory.mktemp("cases-map-var"))
    install = Install(
        settings,
        tmp_path_factory.mktemp("cases-map-certs"),
        rate_limit_api="*=100000/hour",
        rate_limit_tiles="*=100000/hour",
    )
    yield Overlay(install)
    install.close()
    db.drop_database(settings)


def test_state_groups_are_the_databases(overlay: Overlay) -> None:
    """on_map.GROUPS (the viewer's names) and case_map_group() (what Mapnik draws) agree for
    every state of the workflow table; rejected, cancelled and long-closed cases are not drawn."""
    with psycopg.connect(overlay.install.settings.database_url) as conn:
        for state in flow.STATES:
            (drawn,) = _row(conn, "SELECT case_map_group(%s, now())", state)
            assert drawn == on_map.GROUP_OF.get(state), state
        (old,) = _row(conn, "SELECT case_map_group('closed', now() - interval '31 days')")
    assert old is None
    assert set(flow.STATES) - set(on_map.GROUP_OF) == {"rejected", "cancelled"}


def test_state_colour_redrawn_after_a_transition_only_in_the_overlay(overlay: Overlay) -> None:
    case = overlay.record(overlay.grid_in(STREET_1))
    number, pixel = case["number"], case["pixel"]
    colours = palette()
    first = overlay.tile("cs-dispatcher", "cases", pixel)
    assert png.is_clean(first)
    assert _near(_pixel(first, pixel["col"], pixel["row"]), _rgb(colours["case_open"]))
    # Drawn at 1:2000 and at the wall's scales, 1:4000 and 1:8000 (smaller), not coarser.
    at2000 = overlay.at(pixel, 2000)
    coarse = overlay.tile("cs-dispatcher", "cases", at2000)
    assert _near(_pixel(coarse, at2000["col"], at2000["row"]), _rgb(colours["case_open"]))
    at8000 = overlay.at(pixel, 8000)
    wall = overlay.tile("cs-dispatcher", "cases", at8000)
    assert png.is_clean(wall)
    assert _near(_pixel(wall, at8000["col"], at8000["row"]), _rgb(colours["case_open"]))
    assert _opaque(wall) < _opaque(coarse)  # a smaller symbol
    z16000 = overlay.tiles.grid.z_of_scale(16000)
    assert overlay.get("cs-dispatcher", f"/tiles/cases/{z16000}/0/0.png").status_code == 404

    topo = overlay.tile("cs-dispatcher", "topo500", pixel)  # the base map of the same place
    svc = overlay.tiles
    topo_file = svc.cache.path("topo500", pixel["level"], pixel["x"], pixel["y"])
    topo_mtime = topo_file.stat().st_mtime_ns
    renders = svc.source.renders  # type: ignore[union-attr]
    assert overlay.tile("cs-dispatcher", "cases", pixel) == first  # from the cache
    assert svc.source.renders == renders  # type: ignore[union-attr]

    overlay.act(
        number,
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": overlay.desk.bureau}),
    )
    after = overlay.tile("cs-dispatcher", "cases", pixel)
    assert svc.source.renders == renders + 1  # type: ignore[union-attr]
    assert _near(_pixel(after, pixel["col"], pixel["row"]), _rgb(colours["case_handling"]))
    assert png.is_clean(after)
    coarse = overlay.tile("cs-dispatcher", "cases", at2000)
    assert _near(_pixel(coarse, at2000["col"], at2000["row"]), _rgb(colours["case_handling"]))
    wall = overlay.tile("cs-dispatcher", "cases", at8000)
    assert _near(_pixel(wall, at8000["col"], at8000["row"]), _rgb(colours["case_handling"]))
    # The base map's tile was neither dropped nor re-rendered.
    assert topo_file.stat().st_mtime_ns == topo_mtime
    assert overlay.tile("cs-dispatcher", "topo500", pixel) == topo

    # What made it fresh was the transition's expiry: a change behind the app's back is not
    # seen until the tile is dropped.
    overlay.owner_sql("UPDATE city_case SET state = 'checking' WHERE number = %s", number)
    try:
        stale = overlay.tile("cs-dispatcher", "cases", pixel)
        assert _near(_pixel(stale, pixel["col"], pixel["row"]), _rgb(colours["case_handling"]))
        assert on_map.expire(svc, pixel) >= 1
        fresh = overlay.tile("cs-dispatcher", "cases", pixel)
        assert _near(_pixel(fresh, pixel["col"], pixel["row"]), _rgb(colours["case_checking"]))
    finally:
        overlay.owner_sql("UPDATE city_case SET state = 'dispatched' WHERE number = %s", number)
        on_map.expire(svc, pixel)


def test_a_full_coarse_tile_keeps_the_overdue_and_unfinished(
    overlay: Overlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_MARKS cases on one tile (a busy district at 1:8000), the marks handed to a
    renderer keep the overdue first, then the unfinished, and drop the closed; still in the
    style's drawing order (the overdue last, on top)."""
    overdue, closed = (overlay.record(overlay.grid_in(STREET_1)) for _ in range(2))
    overlay.owner_sql(
        "UPDATE city_case SET stage_deadline = now() - interval '1 hour' WHERE number = %s",
        overdue["number"],
    )
    overlay.owner_sql(
        "UPDATE city_case SET state = 'closed', closed_at = now() WHERE number = %s",
        closed["number"],
    )
    with overlay.install.app.app_context():
        found = services()
        tiles = [overlay.at(c["pixel"], 8000) for c in (overdue, closed)]
        drawn = {(t["level"], t["x"], t["y"]) for t in tiles}
        everything = {t: on_map.marks_near(found, *t) for t in drawn}
        for tile, marks in everything.items():
            groups = [(m[3], m[2]) for m in marks]
            order = sorted(groups, key=lambda g: (g[1] != "closed", g[0]))
            assert groups == order, tile  # closed first, overdue last
            unfinished = [m for m in marks if m[2] != "closed"]
            first = [m for m in marks if m[3]]
            monkeypatch.setattr(on_map, "MAX_MARKS", len(unfinished))
            assert on_map.marks_near(found, *tile) == unfinished
            monkeypatch.setattr(on_map, "MAX_MARKS", len(first))
            assert on_map.marks_near(found, *tile) == first
            monkeypatch.undo()
        assert any(m[3] for ms in everything.values() for m in ms)
        assert any(m[2] == "closed" for ms in everything.values() for m in ms)


def test_overdue_is_red_once_the_cached_tile_ages(overlay: Overlay) -> None:
    """A case turns overdue with time, not with an act: the overlay's tiles live at most
    max_age seconds in the cache."""
    case = overlay.record(overlay.grid_in(STREET_1))
    number, pixel = case["number"], case["pixel"]
    colours = palette()
    first = overlay.tile("cs-operator", "cases", pixel)
    assert _near(_pixel(first, pixel["col"], pixel["row"]), _rgb(colours["case_open"]))
    overlay.owner_sql(
        "UPDATE city_case SET stage_deadline = now() - interval '1 hour' WHERE number = %s",
        number,
    )
    cached = overlay.tile("cs-operator", "cases", pixel)
    assert _near(_pixel(cached, pixel["col"], pixel["row"]), _rgb(colours["case_open"]))
    max_age = overlay.tiles.product("cases").max_age
    assert max_age is not None
    path = overlay.tiles.cache.path("cases", pixel["level"], pixel["x"], pixel["y"])
    aged = time.time() - max_age - 1
    os.utime(path, (aged, aged))
    red = overlay.tile("cs-operator", "cases", pixel)
    assert _near(_pixel(red, pixel["col"], pixel["row"]), _rgb(colours["case_overdue"]))
    assert not _near(_rgb(colours["case_overdue"]), _rgb(colours["case_open"]), 60)
    reply = overlay.get(
        "cs-operator", f"/tiles/cases/{pixel['level']}/{pixel['x']}/{pixel['y']}.png"
    )
    assert reply.headers["Cache-Control"] == "private, no-cache"  # the browser asks again
    picked = overlay.click("cs-operator", pixel).get_json()["cases"]
    assert [(c["number"], c["overdue"]) for c in picked] == [(number, True)]


def test_click_names_the_case_and_no_coordinate(overlay: Overlay) -> None:
    case = overlay.record(overlay.grid_in(STREET_1))
    number, pixel = case["number"], case["pixel"]
    reply = overlay.click("cs-leader", pixel)
    assert reply.status_code == 200, reply.get_json()
    body = reply.get_json()
    assert [c["number"] for c in body["cases"]] == [number] and body["more"] is False
    shown = body["cases"][0]
    assert shown["state"] == "reported" and shown["group"] == "open"
    assert shown["href"] == f"/inbox/{number}" and shown["class"]
    text = reply.get_data(as_text=True)
    floats: list[str] = []
    json.loads(text, parse_float=floats.append)
    assert floats == []  # codes, names and states only: not a number with a fraction in it
    assert not re.search(r'"(x|y|geom|point|pixel|col|row|distance\w*)"', text)
    with psycopg.connect(overlay.install.settings.database_url) as conn:
        x, y = _row(conn, "SELECT ST_X(geom), ST_Y(geom) FROM city_case WHERE number = %s", number)
    assert str(int(x)) not in text and str(int(y)) not in text
    # 30 pixels away nothing is picked; bad pixels are refused before anything is looked up.
    away = dict(pixel, col=(pixel["col"] + 30) % 256, row=(pixel["row"] + 30) % 256)
    assert number not in [c["number"] for c in overlay.click("cs-leader", away).get_json()["cases"]]
    for bad in ({"col": 256}, {"row": -1}, {"level": "a"}):
        asked: dict[str, Any] = {**pixel, **bad}
        assert overlay.click("cs-leader", asked).status_code == 400, bad


def test_viewer_and_bureau_are_refused(overlay: Overlay) -> None:
    case = overlay.record(overlay.grid_in(STREET_1))
    pixel = overlay.at(case["pixel"], 2000)  # a scale the viewer may otherwise see
    tile = f"/tiles/cases/{pixel['level']}/{pixel['x']}/{pixel['y']}.png"
    for who in ("co-viewer", "cs-bureau"):
        for path in ("/tiles/cases", tile):
            reply = overlay.get(who, path)
            assert reply.status_code == 403 and reply.get_json()["error"] == "forbidden", path
        assert overlay.click(who, pixel).status_code == 403
        base = overlay.get(who, f"/tiles/grids/{pixel['level']}/{pixel['x']}/{pixel['y']}.png")
        assert base.status_code == 200  # the same place on a map the role may see
    desc = overlay.get("cs-leader", "/tiles/cases").get_json()
    assert desc["transparent"] is True
    assert sorted(lv["scale_denominator"] for lv in desc["levels"]) == [500, 1000, 2000, 4000, 8000]


def test_street_scope_on_tiles_and_clicks(overlay: Overlay) -> None:
    """A tile meeting two streets is shown to the other street's supervisor, but a click there
    names no case of the home street; the home street's inspector sees it; a tile of street
    001 alone is refused to street 002's people."""
    streets = services(overlay.install.app).streets()
    grid = overlay.tiles.grid
    z = grid.z_of_scale(2000)
    # The people of each street: its inspector sees its cases, the other's supervisor not.
    inspector = {STREET_1: "cs-inspector", STREET_2: "cs-inspector2"}
    supervisor = {
        STREET_1: overlay.install.account("cs-supervisor1", ["street_supervisor"], "street-001"),
        STREET_2: "cs-supervisor",
    }
    with psycopg.connect(overlay.install.settings.database_url) as conn:
        # The point of one street inside a tile meeting the other with the most room around
        # it. Either street can be home: where the drawn tile origin puts a column's edge just
        # beside their border, the one street enters that column only by a sliver.
        areas = []
        for home, other in ((STREET_1, STREET_2), (STREET_2, STREET_1)):
            for y, row in streets.spans[home][z].items():
                for x0, x1 in row:
                    for x in range(x0, x1 + 1):
                        if other not in streets.streets_of_tile(z, x, y):
                            continue
                        minx, miny, maxx, maxy = grid.tile_bbox(z, x, y)
                        area, *inside = _row(
                            conn,
                            "SELECT ST_Area(i), ST_X(ST_PointOnSurface(i)),"
                            " ST_Y(ST_PointOnSurface(i)) FROM (SELECT ST_Intersection(geom,"
                            " ST_MakeEnvelope(%s, %s, %s, %s, %s)) AS i FROM street"
                            " WHERE code = %s) s",
                            minx,
                            miny,
                            maxx,
                            maxy,
                            overlay.install.settings.srid,
                            home,
                        )
                        areas.append((area or 0, home, other, inside))
        assert areas, "the demo's two streets meet"
        area, home, other, inside = max(areas, key=lambda a: a[0])
        assert area > 100, f"room for a case on a tile meeting both streets: {areas}"
        deep = _row(  # a point of street 001 whose finest tile meets no other street
            conn,
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(ST_Buffer(geom, -80)) AS p"
            " FROM street WHERE code = %s) s",
            STREET_1,
        )
    case = overlay.record_at(*inside)
    assert case["street"]["code"] == home
    pixel = overlay.at(case["pixel"], 2000)
    assert {home, other} <= streets.streets_of_tile(z, pixel["x"], pixel["y"])
    number = case["number"]
    mine = overlay.click(inspector[home], pixel)
    assert mine.status_code == 200 and number in [c["number"] for c in mine.get_json()["cases"]]
    theirs = overlay.click(supervisor[other], pixel)
    assert theirs.status_code == 200, theirs.get_json()
    assert number not in [c["number"] for c in theirs.get_json()["cases"]]
    tile = f"/tiles/cases/{pixel['level']}/{pixel['x']}/{pixel['y']}.png"
    assert overlay.get(supervisor[other], tile).status_code == 200

    alone = overlay.record_at(*deep)["pixel"]
    assert streets.streets_of_tile(alone["level"], alone["x"], alone["y"]) == {STREET_1}
    tile = f"/tiles/cases/{alone['level']}/{alone['x']}/{alone['y']}.png"
    for who in ("cs-supervisor", "cs-inspector2"):
        assert overlay.click(who, alone).status_code == 403
        assert overlay.get(who, tile).status_code == 403
    assert overlay.click("cs-inspector", alone).status_code == 200
    assert overlay.get("cs-inspector", tile).status_code == 200


def test_viewer_overlay_and_click_to_the_case(overlay: Overlay) -> None:
    """In Chromium over mTLS: the 案件 checkbox draws the overlay, a click on a case lists
    its number, and the number opens the case's page."""
    from playwright.sync_api import sync_playwright

    from .app_client import SECRET
    from .test_browser import _browser, _needs_chromium, wait_until
    from .tls import Server

    _needs_chromium()
    case = overlay.record(overlay.grid_in(STREET_1))
    number, p = case["number"], case["pixel"]
    settings = overlay.install.settings
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
        origin = f"https://127.0.0.1:{server.port}"
        out = overlay.install.out
        with sync_playwright() as pw:
            browser = _browser(pw)
            context = browser.new_context(
                ignore_https_errors=True,
                client_certificates=[
                    {
                        "origin": origin,
                        "certPath": str(out / "cs-dispatcher.crt"),
                        "keyPath": str(out / "cs-dispatcher.key"),
                    }
                ],
                viewport={"width": 1200, "height": 800},
            )
            page = context.new_page()
            hash_ = "&".join(f"{k}={p[k]}" for k in ("level", "x", "y", "col", "row"))
            page.goto(f"{origin}/#{hash_}")  # centred on the case's place
            wait_until(page, "!document.getElementById('cases').hidden")
            page.check('input[name="overlay"][value="cases"]')
            wait_until(
                page,
                "Array.from(document.querySelectorAll('.leaflet-tile-loaded'))"
                ".some(t => t.src.includes('/tiles/cases/'))",
            )
            box = page.locator("#map").bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] / 2 + 2, box["y"] + box["height"] / 2 + 2)
            wait_until(
                page, f"document.querySelector('#cases-result').textContent.includes('{number}')"
            )
            link = page.locator("#cases-result a", has_text=number)
            assert link.get_attribute("href") == f"/inbox/{number}"
            link.click()
            page.wait_for_url(f"{origin}/inbox/{number}")
            browser.close()
    finally:
        server.stop()
