"""A whole generated demo district as plain values: the pure half of `citygrid demo`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mapserver.demo import areas, buildings, components
from mapserver.demo.areas import Grid, GridIndex
from mapserver.demo.buildings import Features
from mapserver.demo.generalise import Generalised, generalise
from mapserver.demo.layout import CENTRE_X, CENTRE_Y, Layout, plan
from mapserver.demo.names import Names


@dataclass
class Components:
    x: np.ndarray
    y: np.ndarray
    major: np.ndarray
    minor: np.ndarray
    serial: np.ndarray
    grid: np.ndarray
    state: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Addresses:
    """House numbers (kind 'house') and landmarks, with the grid of each point."""

    kind: list[str]
    road: list[str]
    number: list[int | None]
    name: list[str]
    x: np.ndarray
    y: np.ndarray
    grid: np.ndarray


@dataclass
class DemoDistrict:
    area_km2: float
    seed: int
    district_code: str
    layout: Layout
    grids: list[Grid]
    index: GridIndex
    features: Features
    general: Generalised
    components: Components
    addresses: Addresses


def generate(
    area_km2: float,
    seed: int,
    district_code: str,
    serial_digits: int = 2,
    minor_digits: int = 2,
    step: Callable[[str], None] = lambda _: None,
    centre: tuple[float, float] = (CENTRE_X, CENTRE_Y),
) -> DemoDistrict:
    """Build every feature of the district in memory, around `centre` (CRS metres);
    `step` reports each phase by its code (mapserver.demo.PHASE_NAMES)."""
    names = Names(seed)
    step("roads")
    layout = plan(area_km2, seed, names, centre)
    step("grids")
    grids, index = areas.grids(layout, district_code, serial_digits)
    step("buildings")
    features = buildings.fill(layout, names, seed)
    step("components")
    placed = components.place(layout, features, seed)
    codes, x, y = areas.locate(index, placed.x, placed.y)
    inside = codes != ""
    minor = placed.minor[inside]
    if minor_digits == 3:
        minor = np.char.zfill(minor.astype(str), 3)
    comps = Components(
        x=x[inside],
        y=y[inside],
        major=placed.major[inside],
        minor=minor,
        serial=components.serials(placed.major[inside], minor),
        grid=codes[inside],
        state=components.states(int(inside.sum()), seed),
    )
    step("addresses")
    addresses = _addresses(features, index)
    step("generalise")
    general = generalise(layout, features)
    return DemoDistrict(
        area_km2, seed, district_code, layout, grids, index, features, general, comps, addresses
    )


def _addresses(features: Features, index: GridIndex) -> Addresses:
    kind = ["house"] * len(features.houses) + ["landmark"] * len(features.landmarks)
    road = [h[0] for h in features.houses] + [""] * len(features.landmarks)
    number: list[int | None] = [h[1] for h in features.houses] + [None] * len(features.landmarks)
    name = [""] * len(features.houses) + [lm.name for lm in features.landmarks]
    xs = np.array([h[2] for h in features.houses] + [lm.point[0] for lm in features.landmarks])
    ys = np.array([h[3] for h in features.houses] + [lm.point[1] for lm in features.landmarks])
    grid, xs, ys = areas.locate(index, xs, ys)
    return Addresses(kind, road, number, name, xs, ys, grid)
