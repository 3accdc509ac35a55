"""Geocoding against the demo district, and the pure address-text handling."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import address_text, geocode
from mapserver.cli import main
from mapserver.errors import InvalidInput, NotFound
from mapserver.settings import Settings


@pytest.mark.parametrize(
    ("text", "road", "number"),
    [
        ("中关村大街27号", "中关村大街", 27),
        ("北京市海淀区中关村大街２７号", "中关村大街", 27),
        ("中关村大街 二十七 号", "中关村大街", 27),
        ("中关村大街一百零三号", "中关村大街", 103),
        ("中关村大街27号附近", "中关村大街", 27),
        ("学院马路5號", "学院马路", 5),
        ("北四环西路103号院3号楼", "北四环西路", 103),
        ("三环路五号", "三环路", 5),
        ("知春路 8", "知春路", 8),
    ],
)
def test_parse_house_numbers(text: str, road: str, number: int) -> None:
    assert address_text.parse(text, "海淀区") == address_text.Parsed(road, number, None)


def test_parse_landmarks_and_garbage() -> None:
    assert address_text.parse("海淀区华安公园").landmark == "华安公园"
    for bad in ["", "   ", "123", "!!", "x" * 200]:
        with pytest.raises(InvalidInput):
            address_text.parse(bad)
    with pytest.raises(InvalidInput):
        address_text.parse("中关村大街零号")


@pytest.mark.parametrize(
    "text,road,number,suffix",
    [
        ("Tikankatu 11", "Tikankatu", 11, ""),
        ("11 Tikankatu", "Tikankatu", 11, ""),
        ("Tikankatu 11 A, Kotka", "Tikankatu", 11, "a"),
        ("  Vanha  Viipurintie 5-7 ", "Vanha Viipurintie", 5, ""),
        ("Haapamäenkatu 3", "Haapamäenkatu", 3, ""),
    ],
)
def test_parse_latin_addresses(text: str, road: str, number: int, suffix: str) -> None:
    """An install in another language geocodes its own addresses (no Chinese needed)."""
    assert address_text.parse(text, "海淀区") == address_text.Parsed(road, number, None, suffix)
    assert address_text.parse("Neste Huttunen").landmark == "Neste Huttunen"
    assert address_text.best_match("tikankatu", ["Tikankatu", "Korpikatu"]) == ("Tikankatu", 0.95)


def test_chinese_numbers() -> None:
    cases = {
        "一": 1,
        "十": 10,
        "十五": 15,
        "二十七": 27,
        "一百零三": 103,
        "三〇五": 305,
        "两千零一十": 2010,
    }
    for text, value in cases.items():
        assert address_text.chinese_number(text) == value


def test_road_name_variants() -> None:
    roads = ["中关村大街", "学院路", "槐柏胡同"]
    assert address_text.best_match("中关村街", roads) == ("中关村大街", 0.95)
    assert address_text.best_match("学院马路", roads) == ("学院路", 0.95)
    assert address_text.best_match("槐柏巷", roads) == ("槐柏胡同", 0.95)
    assert address_text.best_match("月球背面", roads) is None


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)


def test_every_house_number_geocodes_into_its_grid(demo_conn: psycopg.Connection) -> None:
    rows = demo_conn.execute(
        "SELECT full_text, road_name, house_number, grid_code FROM address WHERE kind = 'house'"
    ).fetchall()
    assert len(rows) > 100
    for i, (text, road, number, grid) in enumerate(rows):
        variants = [text]
        if i % 10 == 0:
            variants += [_fullwidth(text), f"北京市海淀区{road} {number} 号附近"]
        for variant in variants:
            hit = geocode.geocode_address(demo_conn, variant)
            assert hit.matched_text == text and hit.grid_code == grid and hit.score == 1.0
            inside = demo_conn.execute(
                "SELECT ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), ST_SRID(geom)))"
                " FROM unit_grid WHERE code = %s",
                (hit.x, hit.y, grid),
            ).fetchone()[0]  # type: ignore[index]
            assert inside, variant


def test_landmarks_and_near_misses(demo_conn: psycopg.Connection) -> None:
    name, grid = demo_conn.execute(
        "SELECT name, grid_code FROM address WHERE kind = 'landmark' ORDER BY id LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    hit = geocode.geocode_address(demo_conn, f"海淀区{name}附近")
    assert hit.kind == "landmark" and hit.grid_code == grid and hit.score == 1.0
    road, top = demo_conn.execute(
        "SELECT road_name, max(house_number) FROM address WHERE kind = 'house'"
        " GROUP BY road_name ORDER BY road_name LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    beyond = geocode.geocode_address(demo_conn, f"{road}{top + 1000}号")
    assert beyond.matched_text.startswith(road) and beyond.score < 1.0
    with pytest.raises(NotFound):
        geocode.geocode_address(demo_conn, "月球背面广寒宫")


def test_locate_point_on_every_grid(demo_conn: psycopg.Connection) -> None:
    rows = demo_conn.execute(
        """SELECT g.code, g.community_code, c.street_code,
                  ST_X(ST_PointOnSurface(g.geom)), ST_Y(ST_PointOnSurface(g.geom))
           FROM unit_grid g JOIN community c ON c.code = g.community_code"""
    ).fetchall()
    for code, community, street, x, y in rows:
        where = geocode.locate_point(demo_conn, x, y)
        assert (where.grid_code, where.community_code, where.street_code) == (
            code,
            community,
            street,
        )
        assert where.street_name.endswith("街道") and where.community_name.endswith("社区")
    with pytest.raises(NotFound):
        geocode.locate_point(demo_conn, 0, 0)


def test_code_lookups(demo_settings: Settings, demo_conn: psycopg.Connection) -> None:
    grid, component = demo_conn.execute(
        "SELECT grid_code, code FROM component ORDER BY code LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    info = geocode.grid_by_code(demo_conn, demo_settings, grid)
    assert info.code == grid and info.wkt.startswith("MULTIPOLYGON") and info.area_m2 > 5000
    comp = geocode.component_by_code(demo_conn, demo_settings, component)
    assert comp.code == component and comp.grid_code == grid and comp.class_name
    for bad, reason in [
        ("1101080010", "wrong length"),
        ("99999900100101", "unknown district"),
        ("1101080010010x", "only digits"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            geocode.grid_by_code(demo_conn, demo_settings, bad)
    for bad, reason in [
        ("110108040200000", "wrong length"),
        ("9999990402000001", "unknown district"),
        ("1101089902000001", "bad class"),
        ("1101080402000000", "serial"),
    ]:
        with pytest.raises(InvalidInput, match=reason):
            geocode.component_by_code(demo_conn, demo_settings, bad)
    with pytest.raises(NotFound):
        geocode.grid_by_code(demo_conn, demo_settings, grid[:-2] + "99")


def test_cli(demo_settings: Settings, demo_conn: psycopg.Connection) -> None:
    env = {"CITYGRID_DATABASE_URL": demo_settings.database_url}
    text = demo_conn.execute(
        "SELECT full_text FROM address WHERE kind = 'house' LIMIT 1"
    ).fetchone()[0]  # type: ignore[index]
    ok = CliRunner().invoke(main, ["geocode", "address", text], env=env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["matched_text"] == text
    bad = CliRunner().invoke(main, ["geocode", "component", "12"], env=env)
    assert bad.exit_code == 1
    assert bad.output == "citygrid: error: component code '12': wrong length 2, expected 16\n"


def test_the_locale_writes_addresses_and_house_numbers() -> None:
    from mapserver import locales
    from tiles.style import render_style

    zh, en = locales.get("zh-CN"), locales.get("en")
    assert locales.address(zh, "中关村大街", "27") == "中关村大街27号"
    assert locales.address(en, "Kangaskatu", "12") == "Kangaskatu 12"
    assert locales.house_number(zh, "52") == "52号" and locales.house_number(en, "52") == "52"
    assert "[house_number] + '号'" in render_style("topo500.xml", "+proj=longlat", "zh-CN").xml
    assert "'号'" not in render_style("topo500.xml", "+proj=longlat", "en").xml
