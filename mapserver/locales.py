"""The install's language: how house numbers, addresses, map titles and the pages read.

"52号" is how a zh-CN address writes a house number; an English-speaking install writes
"52" after or before the road's name. One small table per locale, pure values; the
settings' `locale` picks one (zh-CN by default).
"""

from __future__ import annotations

from typing import NamedTuple


class Locale(NamedTuple):
    code: str  # BCP 47, as in <html lang>
    house_number: str  # a building's number on the map: {number}
    house_number_mapnik: str  # the same as a Mapnik expression over [house_number]
    address: str  # an address's full text: {road}, {number}
    titles: dict[str, str]  # map product → its title
    app_title: str  # the pages' title


LOCALES: dict[str, Locale] = {
    "zh-CN": Locale(
        "zh-CN",
        "{number}号",
        "[house_number] + '号'",
        "{road}{number}号",
        {
            "topo500": "1:500 地形图",
            "topo2000": "1:2000 地形图",
            "grids": "单元网格",
            "components": "城市部件",
            "cases": "案件",
            "hotspot": "案件热点",
        },
        "CityGrid 网格化城市管理",
    ),
    "en": Locale(
        "en",
        "{number}",
        "[house_number]",
        "{road} {number}",
        {
            "topo500": "1:500 topographic map",
            "topo2000": "1:2000 topographic map",
            "grids": "Unit grids",
            "components": "City components",
            "cases": "Cases",
            "hotspot": "Case hot spots",
        },
        "CityGrid grid-based city management",
    ),
}
DEFAULT = "zh-CN"


def get(code: str) -> Locale:
    """The locale `code` names (settings validate it; unknown codes fall back to zh-CN)."""
    return LOCALES.get(code, LOCALES[DEFAULT])


def house_number(locale: Locale, number: str) -> str:
    return locale.house_number.format(number=number)


def address(locale: Locale, road: str, number: str) -> str:
    return locale.address.format(road=road, number=number)
