"""What fills the blocks at 1:500: buildings, parks, schools, water, a railway, walls,
landmarks, house numbers along the roads, and text annotations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import geometry

from mapserver.demo.layout import Block, Layout, Rect, Road
from mapserver.demo.names import Names

SETBACK_M = 4.0


@dataclass
class Building:
    geom: geometry.Polygon
    floors: int
    name: str = ""
    road_name: str = ""
    house_number: str = ""
    structure: str = "砼"


@dataclass
class Landmark:
    name: str
    kind: str
    point: tuple[float, float]


@dataclass
class Features:
    buildings: list[Building] = field(default_factory=list)
    water: list[tuple[str, str, geometry.Polygon]] = field(default_factory=list)
    green: list[tuple[str, str, geometry.Polygon]] = field(default_factory=list)
    walls: list[tuple[str, geometry.LineString]] = field(default_factory=list)
    railways: list[tuple[str, geometry.LineString]] = field(default_factory=list)
    landmarks: list[Landmark] = field(default_factory=list)
    # (road name, number, x, y) of each numbered frontage
    houses: list[tuple[str, int, float, float]] = field(default_factory=list)
    annotations: list[tuple[str, str, float, float, float]] = field(default_factory=list)
    parks: list[Rect] = field(default_factory=list)
    # buildings facing each road: (position along the road, side, building, door point)
    fronts: dict[Road, list[tuple[float, int, Building, tuple[float, float]]]] = field(
        default_factory=dict
    )


def _slabs(r: Rect, rng: random.Random) -> list[tuple[geometry.Polygon, int]]:
    """Rows of south-facing residential slabs."""
    out = []
    depth, gap = rng.choice([11.0, 12.0, 13.0]), rng.uniform(24, 34)
    length = rng.uniform(40, 70)
    floors = rng.choice([6, 6, 9, 12, 14, 18])
    y = r.y1 - depth
    while y >= r.y0:
        x = r.x0
        while x + length <= r.x1:
            out.append((geometry.box(x, y, x + length, y + depth), floors))
            x += length + rng.uniform(8, 15)
        y -= depth + gap
    return out


def _towers(r: Rect, rng: random.Random) -> list[tuple[geometry.Polygon, int]]:
    size = rng.uniform(20, 28)
    step = size + rng.uniform(22, 35)
    out = []
    for x in np.arange(r.x0, r.x1 - size, step):
        for y in np.arange(r.y0, r.y1 - size, step):
            out.append((geometry.box(x, y, x + size, y + size), rng.randint(18, 32)))
    return out


def _large(r: Rect, rng: random.Random) -> list[tuple[geometry.Polygon, int]]:
    inner = r.inset(min(12.0, r.width / 5, r.height / 5))
    if inner.width < 15 or inner.height < 15:
        return []
    if inner.width > 120:  # two buildings with a plaza between
        mid = (inner.x0 + inner.x1) / 2
        return [
            (geometry.box(inner.x0, inner.y0, mid - 15, inner.y1), rng.randint(4, 24)),
            (geometry.box(mid + 15, inner.y0, inner.x1, inner.y1), rng.randint(4, 24)),
        ]
    return [(inner.box(), rng.randint(3, 20))]


def _shops(
    r: Rect, side: str, rng: random.Random
) -> tuple[list[tuple[geometry.Polygon, int]], Rect]:
    """A frontage row of low shops on one side; returns them and the land left behind."""
    depth = 12.0
    out = []
    if side in ("W", "E"):
        x0 = r.x0 if side == "W" else r.x1 - depth
        y = r.y0
        while y + 15 <= r.y1:
            w = rng.uniform(15, 22)
            out.append((geometry.box(x0, y, x0 + depth, min(y + w, r.y1)), rng.randint(1, 3)))
            y += w + 1.5
        rest = (
            Rect(r.x0 + depth + 10, r.y0, r.x1, r.y1)
            if side == "W"
            else Rect(r.x0, r.y0, r.x1 - depth - 10, r.y1)
        )
    else:
        y0 = r.y0 if side == "S" else r.y1 - depth
        x = r.x0
        while x + 15 <= r.x1:
            w = rng.uniform(15, 22)
            out.append((geometry.box(x, y0, min(x + w, r.x1), y0 + depth), rng.randint(1, 3)))
            x += w + 1.5
        rest = (
            Rect(r.x0, r.y0 + depth + 10, r.x1, r.y1)
            if side == "S"
            else Rect(r.x0, r.y0, r.x1, r.y1 - depth - 10)
        )
    return out, rest


def _river(layout: Layout, rng: random.Random) -> geometry.Polygon:
    """A canal meandering west→east across the district."""
    d = layout.district
    xs = np.linspace(d.x0 - 50, d.x1 + 50, 7)
    base = rng.uniform(d.y0 + d.height * 0.3, d.y0 + d.height * 0.7)
    ys = [base + rng.uniform(-0.08, 0.08) * d.height for _ in xs]
    return geometry.LineString(list(zip(xs, ys, strict=True))).buffer(
        rng.uniform(14, 20), cap_style="flat"
    )


def fill(layout: Layout, names: Names, seed: int) -> Features:
    rng = random.Random(f"buildings-{seed}")
    f = Features()
    river = _river(layout, rng)
    f.water.append((names.river(), "river", river.intersection(layout.district.box())))
    d = layout.district
    rail_y = d.y0 + d.height * rng.uniform(0.8, 0.9)
    rail = geometry.LineString([(d.x0, rail_y), (d.x1, rail_y)])
    f.railways.append((names.railway(), rail))
    keep_out = shapely.union(river.buffer(8), rail.buffer(18))
    for block in layout.blocks:
        _fill_block(block, f, names, rng)
    # Nothing is built on the canal or the railway corridor.
    polys = np.array([b.geom for b in f.buildings])
    hit = shapely.intersects(polys, keep_out) if len(polys) else np.array([], bool)
    f.buildings = [b for b, h in zip(f.buildings, hit, strict=True) if not h]
    f.green = [(n, k, g.difference(keep_out)) for n, k, g in f.green]
    f.green = [(n, k, g) for n, k, g in f.green if not g.is_empty]
    f.walls = [(k, w.difference(keep_out)) for k, w in f.walls]
    f.walls = [(k, w) for k, w in f.walls if not w.is_empty]
    _number_houses(f)
    _annotate(layout, f, river, rail)
    return f


def _fill_block(block: Block, f: Features, names: Names, rng: random.Random) -> None:
    land = block.rect.inset(SETBACK_M)
    if land.width < 25 or land.height < 25:
        f.green.append(("", "green", block.rect.box()))
        return
    roll = rng.random()
    if roll < 0.08:
        name = names.landmark("park")
        f.green.append((name, "park", block.rect.box()))
        f.walls.append(("fence", block.rect.box().exterior))
        f.landmarks.append(Landmark(name, "park", _centre(block.rect)))
        f.parks.append(block.rect)
        if land.width > 120 and land.height > 120:
            c = _centre(land)
            f.water.append(("", "pond", geometry.Point(c).buffer(min(land.width, land.height) / 6)))
        return
    arterial = [s for s, road in zip("WESN", block.sides, strict=True) if road.kind == "arterial"]
    placed: list[tuple[geometry.Polygon, int]] = []
    if arterial and roll < 0.75:
        shops, land = _shops(land, arterial[0], rng)
        placed += shops
    if roll < 0.13:
        name = names.landmark("school")
        f.green.append(("", "sports", land.inset(min(20, land.width / 4, land.height / 4)).box()))
        placed += _large(Rect(land.x0, land.y0, land.x1, land.y0 + land.height / 3), rng)
        f.landmarks.append(Landmark(name, "school", _centre(block.rect)))
        compound = name
    elif roll < 0.16:
        name = names.landmark("hospital")
        placed += _large(land, rng)
        f.landmarks.append(Landmark(name, "hospital", _centre(block.rect)))
        compound = name
    elif roll < 0.25:
        name = names.landmark("mall")
        placed += _large(land, rng)
        f.landmarks.append(Landmark(name, "mall", _centre(block.rect)))
        compound = name
    elif roll < 0.40:
        compound = next(names.compound)
        placed += _towers(land, rng)
        f.walls.append(("wall", block.rect.inset(1.0).box().exterior))
    else:
        compound = next(names.compound)
        placed += _slabs(land, rng)
        f.walls.append(("wall", block.rect.inset(1.0).box().exterior))
    for i, (geom, floors) in enumerate(placed, start=1):
        building = Building(geom, floors, name=f"{compound}{i}号楼")
        f.buildings.append(building)
        _face(block, building, f)


def _face(block: Block, b: Building, f: Features) -> None:
    """Record which of its block's named roads a building faces, if it stands close to one."""
    x0, y0, x1, y1 = b.geom.bounds
    best = None
    for road in block.sides:
        if not road.name:
            continue
        dist, along, side, point = _frontage(road, x0, y0, x1, y1)
        if dist is not None and dist < 45 and (best is None or dist < best[0]):
            best = (dist, road, along, side, point)
    if best is not None:
        _, road, along, side, point = best
        f.fronts.setdefault(road, []).append((along, side, b, point))


def _centre(r: Rect) -> tuple[float, float]:
    return ((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2)


def _number_houses(f: Features) -> None:
    """House numbers along named roads: odd on one side, even on the other, rising along it.

    Runs after buildings on the canal and railway corridor were removed."""
    standing = {id(b) for b in f.buildings}
    for road, fronts in f.fronts.items():
        fronts.sort(key=lambda t: (t[0], t[1]))
        counters = {0: 1, 1: 2}
        for _, side, b, point in fronts:
            if id(b) not in standing:
                continue
            number = counters[side]
            counters[side] += 2
            b.road_name, b.house_number = road.name, str(number)
            f.houses.append((road.name, number, point[0], point[1]))


def _frontage(road: Road, x0: float, y0: float, x1: float, y1: float):  # type: ignore[no-untyped-def]
    """Distance from the road's edge to a building facing it, where along the road it
    stands, which side, and a point just inside the building's facing wall."""
    edge = road.width / 2
    if road.axis == "v":
        cy = (y0 + y1) / 2
        if not road.start <= cy <= road.end:
            return None, 0.0, 0, (0.0, 0.0)
        if x0 >= road.at:
            return x0 - road.at - edge, road.end - cy, 1, (x0 + 0.7, cy)
        if x1 <= road.at:
            return road.at - x1 - edge, road.end - cy, 0, (x1 - 0.7, cy)
        return None, 0.0, 0, (0.0, 0.0)
    cx = (x0 + x1) / 2
    if not road.start <= cx <= road.end:
        return None, 0.0, 0, (0.0, 0.0)
    if y1 <= road.at:
        return road.at - y1 - edge, cx - road.start, 1, (cx, y1 - 0.7)
    if y0 >= road.at:
        return y0 - road.at - edge, cx - road.start, 0, (cx, y0 + 0.7)
    return None, 0.0, 0, (0.0, 0.0)


def _annotate(
    layout: Layout, f: Features, river: geometry.Polygon, rail: geometry.LineString
) -> None:
    for c in layout.communities:
        x, y = _centre(c.rect)
        f.annotations.append((c.name, "community", x, y + 30, 0.0))
    for s in layout.streets:
        union = shapely.union_all([r.box() for r in s.rects])
        p = union.representative_point()
        f.annotations.append((s.name, "street", p.x, p.y - 60, 0.0))
    for lm in f.landmarks:
        f.annotations.append((lm.name, lm.kind, lm.point[0], lm.point[1], 0.0))
    water_name = f.water[0][0]
    p = river.representative_point()
    f.annotations.append((water_name, "water", p.x, p.y, 0.0))
    mid = rail.interpolate(0.3, normalized=True)
    f.annotations.append((f.railways[0][0], "railway", mid.x, mid.y + 12, 0.0))
