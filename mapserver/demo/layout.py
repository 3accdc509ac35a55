"""The demo district's plan: arterials, streets, communities, branch roads, lanes and blocks.

Beijing's plan is mostly rectilinear, so every road here runs north–south or east–west,
with jittered spacing. Arterials cut the district into superblocks; secondary roads split
superblocks into communities (0.25–0.9 km²); branch roads and lanes split communities into
blocks. Community and street boundaries run along road centre lines.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from shapely import geometry

from mapserver.demo.names import Names

CENTRE_X = 441_000.0  # Haidian, in EPSG:4548 metres (other CRSs: mapserver.demo.placement)
CENTRE_Y = 4_428_000.0
SUPERBLOCK_M = 1000.0
MAX_COMMUNITY_M2 = 750_000.0
BRANCH_SPACING_M = 170.0


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height

    def box(self) -> geometry.Polygon:
        return geometry.box(self.x0, self.y0, self.x1, self.y1)

    def inset(self, d: float) -> Rect:
        return Rect(self.x0 + d, self.y0 + d, self.x1 - d, self.y1 - d)


@dataclass(frozen=True)
class Road:
    """A straight road: `axis` 'v' runs north–south at x = `at`, 'h' east–west at y = `at`."""

    name: str
    kind: str  # arterial | secondary | branch | lane
    width: float
    axis: str
    at: float
    start: float
    end: float

    def line(self) -> geometry.LineString:
        if self.axis == "v":
            return geometry.LineString([(self.at, self.start), (self.at, self.end)])
        return geometry.LineString([(self.start, self.at), (self.end, self.at)])

    def surface(self) -> geometry.Polygon:
        h = self.width / 2
        if self.axis == "v":
            return geometry.box(self.at - h, self.start, self.at + h, self.end)
        return geometry.box(self.start, self.at - h, self.end, self.at + h)


@dataclass
class Community:
    code: str
    name: str
    street_code: str
    rect: Rect
    old_town: bool  # hutong-style lanes inside its blocks


@dataclass
class Street:
    code: str
    name: str
    rects: list[Rect] = field(default_factory=list)


@dataclass(frozen=True)
class Block:
    """Buildable land between roads, with the roads on its four sides (W, E, S, N)."""

    rect: Rect
    community: str
    sides: tuple[Road, Road, Road, Road]


@dataclass
class Layout:
    district: Rect
    roads: list[Road]
    streets: list[Street]
    communities: list[Community]
    blocks: list[Block]


def _cuts(lo: float, hi: float, spacing: float, jitter: float, rng: random.Random) -> list[float]:
    """Interior cut positions between lo and hi at about `spacing`, jittered."""
    n = max(1, round((hi - lo) / spacing))
    step = (hi - lo) / n
    return [lo + step * i + rng.uniform(-jitter, jitter) * step for i in range(1, n)]


def plan(
    area_km2: float,
    seed: int,
    names: Names,
    centre: tuple[float, float] = (CENTRE_X, CENTRE_Y),
) -> Layout:
    """The district's square around `centre` (CRS metres); the same seed gives the same plan
    relative to its centre."""
    rng = random.Random(f"layout-{seed}")
    side = math.sqrt(area_km2) * 1000.0
    cx, cy = centre
    district = Rect(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    n = max(2, round(side / SUPERBLOCK_M))
    xs = [district.x0, *_cuts(district.x0, district.x1, side / n, 0.12, rng), district.x1]
    ys = [district.y0, *_cuts(district.y0, district.y1, side / n, 0.12, rng), district.y1]
    # Guarantee n columns/rows even when rounding gave fewer cuts.
    roads: list[Road] = []
    # A boundary road is a virtual side (width 0) so blocks at the district edge have 4 sides.
    edge = {
        "W": Road("", "edge", 0.0, "v", district.x0, district.y0, district.y1),
        "E": Road("", "edge", 0.0, "v", district.x1, district.y0, district.y1),
        "S": Road("", "edge", 0.0, "h", district.y0, district.x0, district.x1),
        "N": Road("", "edge", 0.0, "h", district.y1, district.x0, district.x1),
    }
    v_art = [
        Road(
            next(names.arterial),
            "arterial",
            rng.choice([30, 36, 40, 44, 50]),
            "v",
            x,
            district.y0,
            district.y1,
        )
        for x in xs[1:-1]
    ]
    h_art = [
        Road(
            next(names.arterial),
            "arterial",
            rng.choice([30, 36, 40, 44, 50]),
            "h",
            y,
            district.x0,
            district.x1,
        )
        for y in ys[1:-1]
    ]
    roads += v_art + h_art
    vside = [edge["W"], *v_art, edge["E"]]
    hside = [edge["S"], *h_art, edge["N"]]

    cols, rows = len(xs) - 1, len(ys) - 1
    group_c = 2 if cols >= 4 else 1
    group_r = 2 if rows >= 4 else rows
    streets: dict[tuple[int, int], Street] = {}
    communities: list[Community] = []
    blocks: list[Block] = []
    # Streets and communities are numbered west→east, then north→south, like grids.
    for r in reversed(range(rows)):
        for c in range(cols):
            key = (c // group_c, (rows - 1 - r) // group_r)
            if key not in streets:
                code = f"{len(streets) + 1:03d}"
                streets[key] = Street(code, next(names.street))
            street = streets[key]
            sb = Rect(xs[c], ys[r], xs[c + 1], ys[r + 1])
            street.rects.append(sb)
            west, east, south, north = vside[c], vside[c + 1], hside[r], hside[r + 1]
            for rect, sides in _split_superblock(sb, (west, east, south, north), names, rng, roads):
                ccode = f"{sum(1 for k in communities if k.street_code == street.code) + 1:03d}"
                community = Community(
                    ccode, next(names.community), street.code, rect, old_town=rng.random() < 0.35
                )
                communities.append(community)
                blocks += _blocks(community, sides, names, rng, roads)
    return Layout(district, roads, list(streets.values()), communities, blocks)


def _split_superblock(
    sb: Rect,
    sides: tuple[Road, Road, Road, Road],
    names: Names,
    rng: random.Random,
    roads: list[Road],
) -> list[tuple[Rect, tuple[Road, Road, Road, Road]]]:
    """Split a superblock into communities along secondary roads (strips on its long side)."""
    k = max(1, math.ceil(sb.area / MAX_COMMUNITY_M2))
    west, east, south, north = sides
    if k == 1:
        return [(sb, sides)]
    out = []
    if sb.width >= sb.height:
        cuts = [
            sb.x0 + sb.width * i / k + rng.uniform(-0.06, 0.06) * sb.width / k for i in range(1, k)
        ]
        bounds = [sb.x0, *cuts, sb.x1]
        secondary = [
            Road(next(names.secondary), "secondary", rng.choice([16, 18, 20]), "v", x, sb.y0, sb.y1)
            for x in cuts
        ]
        roads += secondary
        walls = [west, *secondary, east]
        for i in range(k):
            out.append(
                (
                    Rect(bounds[i], sb.y0, bounds[i + 1], sb.y1),
                    (walls[i], walls[i + 1], south, north),
                )
            )
    else:
        cuts = [
            sb.y0 + sb.height * i / k + rng.uniform(-0.06, 0.06) * sb.height / k
            for i in range(1, k)
        ]
        bounds = [sb.y0, *cuts, sb.y1]
        secondary = [
            Road(next(names.secondary), "secondary", rng.choice([16, 18, 20]), "h", y, sb.x0, sb.x1)
            for y in cuts
        ]
        roads += secondary
        walls = [south, *secondary, north]
        for i in range(k):
            out.append(
                (Rect(sb.x0, bounds[i], sb.x1, bounds[i + 1]), (west, east, walls[i], walls[i + 1]))
            )
    return out


def _blocks(
    community: Community,
    sides: tuple[Road, Road, Road, Road],
    names: Names,
    rng: random.Random,
    roads: list[Road],
) -> list[Block]:
    """Branch roads (and lanes in old-town communities) cut a community into blocks."""
    rect = community.rect
    west, east, south, north = sides
    xcuts = _cuts(rect.x0, rect.x1, BRANCH_SPACING_M, 0.1, rng)
    ycuts = _cuts(rect.y0, rect.y1, BRANCH_SPACING_M, 0.1, rng)
    kind, widths, pool = (
        ("lane", [6, 7], names.lane)
        if community.old_town
        else ("branch", [10, 12], names.secondary)
    )
    v = [Road(next(pool), kind, rng.choice(widths), "v", x, rect.y0, rect.y1) for x in xcuts]
    h = [Road(next(pool), kind, rng.choice(widths), "h", y, rect.x0, rect.x1) for y in ycuts]
    roads += v + h
    vs, hs = [west, *v, east], [south, *h, north]
    out = []
    for i in range(len(vs) - 1):
        for j in range(len(hs) - 1):
            w, e, s, n = vs[i], vs[i + 1], hs[j], hs[j + 1]
            inner = Rect(
                max(w.at, rect.x0) + w.width / 2,
                max(s.at, rect.y0) + s.width / 2,
                min(e.at, rect.x1) - e.width / 2,
                min(n.at, rect.y1) - n.width / 2,
            )
            if inner.width > 20 and inner.height > 20:
                out.append(Block(inner, community.code, (w, e, s, n)))
    return out
