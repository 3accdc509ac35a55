"""Components (部件) at a realistic density: along every road and in the parks.

Each rule places one class at a spacing along road sides (or the carriageway), skipping
points that fall on a crossing road or in the canal. The output is plain arrays; codes,
grids and states are assigned afterwards in one vectorised pass.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import shapely

from mapserver.codes import ClassCode
from mapserver.demo.buildings import Features
from mapserver.demo.layout import Layout, Road

STATES = np.array(["intact", "damaged", "missing", "occupied"])
STATE_P = [0.95, 0.02, 0.015, 0.015]


@dataclass(frozen=True)
class Rule:
    """Place class `cls` every `spacing` metres on roads of `kinds`, at `offset` from the
    road edge (negative: inside the carriageway), on one or both sides."""

    cls: ClassCode
    kinds: frozenset[str]
    spacing: float
    offset: float
    both_sides: bool = True


ALL_ROADS = frozenset({"arterial", "secondary", "branch", "lane"})
WIDE = frozenset({"arterial", "secondary"})


def _c(major: str, minor: str) -> ClassCode:
    return ClassCode(major, minor)


RULES = [
    Rule(_c("04", "02"), ALL_ROADS, 6.0, 1.5),  # street trees
    Rule(_c("01", "18"), ALL_ROADS, 30.0, 0.6),  # street lamps
    Rule(_c("01", "04"), ALL_ROADS, 30.0, -0.4),  # rain grates at the kerb
    Rule(_c("01", "01"), ALL_ROADS, 60.0, -2.5, False),  # water
    Rule(_c("01", "02"), ALL_ROADS, 55.0, -3.5, False),  # sewage
    Rule(_c("01", "03"), ALL_ROADS, 50.0, -1.5, False),  # rain water
    Rule(_c("01", "05"), ALL_ROADS - {"lane"}, 80.0, 1.0, False),  # power
    Rule(_c("01", "06"), ALL_ROADS - {"lane"}, 90.0, 0.3),  # street-lamp cables
    Rule(_c("01", "07"), ALL_ROADS, 70.0, 2.0, False),  # telecom
    Rule(_c("01", "08"), ALL_ROADS - {"lane"}, 110.0, 2.5, False),  # cable TV
    Rule(_c("01", "09"), WIDE, 120.0, 2.8, False),  # network
    Rule(_c("01", "10"), ALL_ROADS, 90.0, -4.5, False),  # heating
    Rule(_c("01", "11"), ALL_ROADS, 75.0, -5.0, False),  # gas
    Rule(_c("01", "12"), WIDE, 200.0, 3.2, False),  # police
    Rule(_c("01", "14"), ALL_ROADS, 250.0, -1.0, False),  # unknown covers
    Rule(_c("01", "13"), ALL_ROADS, 100.0, 0.8, False),  # hydrants
    Rule(_c("01", "15"), ALL_ROADS - {"lane"}, 180.0, 2.2),  # telecom cabinets
    Rule(_c("01", "16"), ALL_ROADS, 160.0, 2.6),  # power boxes
    Rule(_c("01", "17"), frozenset({"lane", "branch"}), 45.0, 0.4),  # poles
    Rule(_c("03", "05"), WIDE | {"branch"}, 80.0, 1.2),  # litter bins
    Rule(_c("02", "09"), WIDE, 150.0, 0.9),  # traffic signs
    Rule(_c("02", "11"), frozenset({"arterial"}), 40.0, -0.2),  # guard rails
    Rule(_c("02", "03"), frozenset({"arterial"}), 450.0, 2.0),  # bus shelters
    Rule(_c("02", "02"), frozenset({"secondary"}), 60.0, -1.0),  # parking meters
    Rule(_c("03", "07"), frozenset({"arterial", "secondary"}), 70.0, 3.5),  # shop signs
    Rule(_c("03", "06"), frozenset({"arterial"}), 120.0, 3.8),  # light boxes
    Rule(_c("01", "21"), frozenset({"arterial"}), 600.0, 2.4),  # news kiosks
    Rule(_c("01", "22"), frozenset({"arterial"}), 500.0, 2.9),  # phone booths
    Rule(_c("01", "23"), frozenset({"arterial", "secondary"}), 700.0, 1.9),  # post boxes
    Rule(_c("03", "04"), frozenset({"lane", "branch"}), 400.0, 3.0),  # refuse rooms
    Rule(_c("05", "01"), frozenset({"branch", "lane"}), 500.0, 3.4),  # notice boards
]
PARK_CLASSES = [
    (_c("04", "07"), 900),  # benches per km² of park
    (_c("04", "04"), 500),
    (_c("04", "01"), 120),
    (_c("01", "26"), 200),
    (_c("04", "06"), 60),
    (_c("03", "01"), 40),
    (_c("04", "05"), 80),
]


@dataclass
class Placed:
    x: np.ndarray
    y: np.ndarray
    major: np.ndarray
    minor: np.ndarray


def _along(road: Road, rule: Rule, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    start = road.start + rng.uniform(0, rule.spacing)
    t = np.arange(start, road.end, rule.spacing)
    sides = (-1.0, 1.0) if rule.both_sides else (rng.choice((-1.0, 1.0)),)
    xs, ys = [], []
    for side in sides:
        d = side * (road.width / 2 + rule.offset)
        if road.axis == "v":
            xs.append(np.full(t.shape, road.at + d))
            ys.append(t)
        else:
            xs.append(t)
            ys.append(np.full(t.shape, road.at + d))
    return np.concatenate(xs), np.concatenate(ys)


def place(layout: Layout, features: Features, seed: int) -> Placed:
    rng = random.Random(f"components-{seed}")
    roads = [r for r in layout.roads if r.kind != "edge"]
    surfaces = shapely.union_all([r.surface() for r in roads])
    water = shapely.union_all([w[2] for w in features.water])
    shapely.prepare(surfaces)
    shapely.prepare(water)
    xs, ys, majors, minors = [], [], [], []
    for road in roads:
        own = road.surface().buffer(0.01)
        for rule in RULES:
            if road.kind not in rule.kinds:
                continue
            x, y = _along(road, rule, rng)
            if not len(x):
                continue
            # Skip crossings: a roadside point inside another road's surface (its own
            # surface is allowed for carriageway covers), and anything in the water.
            on_road = shapely.contains_xy(surfaces, x, y) & ~shapely.contains_xy(own, x, y)
            keep = ~on_road & ~shapely.contains_xy(water, x, y)
            keep &= shapely.contains_xy(layout.district.box(), x, y)
            xs.append(x[keep])
            ys.append(y[keep])
            majors.append(np.full(int(keep.sum()), rule.cls.major))
            minors.append(np.full(int(keep.sum()), rule.cls.minor))
    _signals(layout, rng, xs, ys, majors, minors)
    _parks(features, rng, xs, ys, majors, minors)
    return Placed(
        np.concatenate(xs), np.concatenate(ys), np.concatenate(majors), np.concatenate(minors)
    )


def _signals(layout: Layout, rng: random.Random, xs, ys, majors, minors) -> None:  # type: ignore[no-untyped-def]
    """Traffic signals at the four corners of crossings between wide roads."""
    wide = [r for r in layout.roads if r.kind in WIDE]
    v = [r for r in wide if r.axis == "v"]
    h = [r for r in wide if r.axis == "h"]
    px, py = [], []
    for a in v:
        for b in h:
            if a.start <= b.at <= a.end and b.start <= a.at <= b.end:
                dx, dy = a.width / 2 + 1.0, b.width / 2 + 1.0
                for sx, sy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
                    px.append(a.at + sx * dx)
                    py.append(b.at + sy * dy)
    xs.append(np.array(px, float))
    ys.append(np.array(py, float))
    majors.append(np.full(len(px), "02"))
    minors.append(np.full(len(px), "14"))
    # Road-name plates at the same corners, one per crossing.
    xs.append(np.array(px[::4], float) + 0.5)
    ys.append(np.array(py[::4], float) + 0.5)
    majors.append(np.full(len(px[::4]), "02"))
    minors.append(np.full(len(px[::4]), "13"))


def _parks(features: Features, rng: random.Random, xs, ys, majors, minors) -> None:  # type: ignore[no-untyped-def]
    for rect in features.parks:
        area_km2 = rect.area / 1e6
        for cls, per_km2 in PARK_CLASSES:
            n = max(1, round(per_km2 * area_km2))
            xs.append(np.array([rng.uniform(rect.x0 + 3, rect.x1 - 3) for _ in range(n)]))
            ys.append(np.array([rng.uniform(rect.y0 + 3, rect.y1 - 3) for _ in range(n)]))
            majors.append(np.full(n, cls.major))
            minors.append(np.full(n, cls.minor))


def states(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return STATES[rng.choice(len(STATES), size=n, p=STATE_P)]


def serials(majors: np.ndarray, minors: np.ndarray) -> np.ndarray:
    """1, 2, 3… within each class, in placement order."""
    keys = np.char.add(majors.astype(str), minors.astype(str))
    out = np.zeros(len(keys), dtype=np.int64)
    for key in np.unique(keys):
        idx = np.nonzero(keys == key)[0]
        out[idx] = np.arange(1, len(idx) + 1)
    return out
