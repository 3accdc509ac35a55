"""Address text as people write it → (road, house number) or a landmark name. Pure.

Chinese addresses: full-width characters, Chinese numerals before 号, city/district
prefixes, traditional forms of common characters, trailing words like 附近, and the
road-type variants people mix up (大街/街, 路/马路, 胡同/巷). Addresses in a Latin script
(an install whose locale is en, or imported street names like "Tikankatu"): "Tikankatu 11",
"11 Tikankatu", "Tikankatu 11 A, Kotka" (the part after the first comma is the town), with
road names matched regardless of case.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable
from typing import NamedTuple

from mapserver.errors import InvalidInput

TRADITIONAL = str.maketrans(
    {
        "號": "号",
        "區": "区",
        "門": "门",
        "華": "华",
        "東": "东",
        "衚": "胡",
        "衕": "同",
        "園": "园",
        "橋": "桥",
        "內": "内",
        "莊": "庄",
        "裡": "里",
        "灣": "湾",
        "體": "体",
        "學": "学",
        "醫": "医",
        "廣": "广",
        "場": "场",
        "興": "兴",
    }
)
PREFIXES = ("中国", "中華人民共和国", "北京市", "北京", "市辖区")
TRAILING = ("附近", "门口", "门前", "对面", "旁边", "一带", "周边")
DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
UNITS = {"十": 10, "百": 100, "千": 1000}
NUMERAL = "零〇一二两三四五六七八九十百千"
ROAD_SUFFIXES = ("大街", "马路", "胡同", "路", "街", "巷", "里", "道")
_HOUSE = re.compile(rf"^(?P<road>.*?[^{NUMERAL}0-9])(?P<num>\d+|[{NUMERAL}]+)号(?P<rest>.*)$")
_DISTRICT_PREFIX = re.compile(r"^[\u4e00-\u9fff]{1,3}区(?=.{2,})")
_ROAD_ONLY_NUMBER = re.compile(r"^(?P<road>.*\D)(?P<num>\d+)$")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_LATIN_ROAD_NUMBER = re.compile(
    r"^(?P<road>.*?\D)\s*(?P<num>\d+)\s*(?P<suffix>[A-Za-z]?)(?:\s*[-–]\s*\d+)?$"
)
_LATIN_NUMBER_ROAD = re.compile(r"^(?P<num>\d+)\s*(?P<suffix>[A-Za-z]?),?\s+(?P<road>\D.*)$")


class Parsed(NamedTuple):
    road: str | None
    number: int | None
    landmark: str | None
    suffix: str = ""  # a house number's letter (12a: "a"), lower case


def chinese_number(text: str) -> int:
    """二十七 → 27, 一百零三 → 103, 十五 → 15, 三〇五 → 305."""
    if not text or any(c not in DIGITS and c not in UNITS for c in text):
        raise ValueError(f"not a Chinese number: {text!r}")
    if not any(c in UNITS for c in text):  # digit by digit: 三〇五
        return int("".join(str(DIGITS[c]) for c in text))
    total, current = 0, 0
    for c in text:
        if c in DIGITS:
            current = DIGITS[c]
        else:
            total += (current or 1) * UNITS[c]
            current = 0
    return total + current


def normalise(text: str, district_name: str = "") -> str:
    """Canonical spelling: NFKC (full-width → ASCII), simplified characters, no spaces,
    no city/district prefix, no trailing 'nearby' words."""
    if not isinstance(text, str):
        raise InvalidInput("address must be text")
    s = unicodedata.normalize("NFKC", text).translate(TRADITIONAL)
    s = re.sub(r"\s+", "", s)
    changed = True
    while changed:
        changed = False
        for prefix in (*PREFIXES, district_name or "\0"):
            if prefix and s.startswith(prefix):
                s = s[len(prefix) :]
                changed = True
        stripped = _DISTRICT_PREFIX.sub("", s, count=1)
        if stripped != s:
            s, changed = stripped, True
    for word in TRAILING:
        s = s.removesuffix(word)
    s = s.removesuffix("门牌")
    return s


def parse_latin(text: str) -> Parsed:
    """A Latin-script address: road and number in either order, or a landmark name."""
    if not isinstance(text, str):
        raise InvalidInput("address must be text")
    s = " ".join(unicodedata.normalize("NFKC", text).split())
    s = s.split(",")[0].strip() if not re.match(r"^\d+\s*[A-Za-z]?,", s) else s
    if not s:
        raise InvalidInput("address is empty")
    if len(s) > 100:
        raise InvalidInput("address is too long (at most 100 characters)")
    if sum(c.isalpha() for c in s) < 2:
        raise InvalidInput(f"address {text.strip()[:40]!r} has no place name")
    m = _LATIN_ROAD_NUMBER.match(s) or _LATIN_NUMBER_ROAD.match(s)
    if m:
        road, number = m["road"].strip(" ,"), int(m["num"])
        if number <= 0:
            raise InvalidInput(f"house number must be positive in {text!r}")
        if sum(c.isalpha() for c in road) >= 2:
            return Parsed(road, number, None, m["suffix"].lower())
    return Parsed(None, None, s)


def parse(text: str, district_name: str = "") -> Parsed:
    """Split normalised address text into road + house number, or a landmark name."""
    s = normalise(text, district_name)
    if not s:
        raise InvalidInput("address is empty")
    if len(s) > 100:
        raise InvalidInput("address is too long (at most 100 characters)")
    if not _CJK.search(s):
        return parse_latin(text)
    m = _HOUSE.match(s) or _ROAD_ONLY_NUMBER.match(s)
    if m:
        num = m["num"]
        number = int(num) if num.isdigit() else chinese_number(num)
        if number <= 0:
            raise InvalidInput(f"house number must be positive in {text!r}")
        return Parsed(m["road"], number, None)
    return Parsed(None, None, s)


def road_key(name: str) -> str:
    """A spelling-insensitive key for road names: 中关村大街 ≈ 中关村街, 学院马路 ≈ 学院路."""
    s = name.replace("马路", "路").replace("大街", "街").replace("胡同", "巷")
    return s.casefold()


def best_match(
    query: str, candidates: Iterable[str], key=road_key, cutoff: float = 0.6
) -> tuple[str, float] | None:  # type: ignore[no-untyped-def]
    """The candidate closest to `query` (exact, same key, then fuzzy) and a score in 0..1."""
    pool = list(candidates)
    if query in pool:
        return query, 1.0
    qk = key(query)
    keyed = {key(c): c for c in pool}
    if qk in keyed:
        return keyed[qk], 0.95
    close = difflib.get_close_matches(qk, list(keyed), n=1, cutoff=cutoff)
    if close:
        ratio = difflib.SequenceMatcher(None, qk, close[0]).ratio()
        return keyed[close[0]], round(0.9 * ratio, 3)
    return None
