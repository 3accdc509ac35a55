"""The map products CityGrid serves, and which levels each one serves.

topo500 is the 1:500 survey map (served at 1:500 and 1:1000); topo2000 is its
generalisation (1:2000 and every coarser overview level); the overlays are
transparent and drawn above either base map. `cases` changes with the workflow: its tiles
are dropped around a case when it is created or changes state, and live at most `max_age`
seconds in the cache besides (a case turns overdue with time, not with an act).
"""

from __future__ import annotations

from typing import NamedTuple


class Product(NamedTuple):
    name: str
    title: str
    scales: frozenset[int]  # scale denominators it is served at
    transparent: bool
    style: str  # template file in styles/
    max_age: int | None = None  # seconds a cached tile stays fresh (None: until invalidated)


PRODUCTS: dict[str, Product] = {
    p.name: p
    for p in (
        Product("topo500", "1:500 地形图", frozenset({500, 1000}), False, "topo500.xml"),
        Product(
            "topo2000",
            "1:2000 地形图",
            frozenset({2000, 4000, 8000, 16000, 32000, 64000, 128000}),
            False,
            "topo2000.xml",
        ),
        Product("grids", "单元网格", frozenset({500, 1000, 2000, 4000, 8000}), True, "grids.xml"),
        Product("components", "城市部件", frozenset({500, 1000, 2000}), True, "components.xml"),
        # Cases to 1:8000, where a wall display shows a whole district (its symbols smaller).
        Product(
            "cases", "案件", frozenset({500, 1000, 2000, 4000, 8000}), True, "cases.xml", max_age=60
        ),
        # Hot spots: unit grids shaded by filed cases per km² (the last 30 days here; a
        # period and class through mapserver.evaluation.hotspot), redrawn every 5 minutes.
        Product(
            "hotspot",
            "案件热点",
            frozenset({500, 1000, 2000, 4000, 8000}),
            True,
            "hotspot.xml",
            max_age=300,
        ),
    )
}


def serves(product: Product, scale: int) -> bool:
    return scale in product.scales
