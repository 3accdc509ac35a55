"""The 1:2000 map as a generalisation of the 1:500 data: block-level buildings, named
roads without lanes, simplified water and green, the main annotations only."""

from __future__ import annotations

from dataclasses import dataclass

import shapely
from shapely import geometry

from mapserver.demo.buildings import Features
from mapserver.demo.layout import Layout

CLOSE_M = 8.0
SIMPLIFY_M = 2.0


@dataclass
class Generalised:
    buildings: list[tuple[geometry.base.BaseGeometry, int]]
    road_kinds: frozenset[str]
    water: list[tuple[str, str, geometry.base.BaseGeometry]]
    green: list[tuple[str, str, geometry.base.BaseGeometry]]
    annotation_kinds: frozenset[str]


def generalise(layout: Layout, features: Features) -> Generalised:
    # Buildings of one block merge into block-level footprints (closing by buffer out/in).
    polys = [b.geom for b in features.buildings]
    floors = [b.floors for b in features.buildings]
    blocks = [blk.rect.box() for blk in layout.blocks]
    tree = shapely.STRtree(polys)
    merged: list[tuple[geometry.base.BaseGeometry, int]] = []
    for block in blocks:
        idx = tree.query(block, predicate="intersects")
        if not len(idx):
            continue
        members = [polys[i] for i in idx]
        union = shapely.union_all(shapely.buffer(members, CLOSE_M, join_style="mitre"))
        shape = union.buffer(-CLOSE_M, join_style="mitre").simplify(SIMPLIFY_M)
        shape = shape.intersection(block)
        if not shape.is_empty and shape.area > 50:
            merged.append((shape, max(floors[i] for i in idx)))
    water = [(n, k, g.simplify(5.0)) for n, k, g in features.water if g.area > 2000]
    green = [(n, k, g.simplify(5.0)) for n, k, g in features.green if g.area > 2500]
    return Generalised(
        buildings=merged,
        road_kinds=frozenset({"arterial", "secondary", "branch"}),
        water=water,
        green=green,
        annotation_kinds=frozenset(
            {"street", "community", "water", "railway", "park", "school", "hospital", "mall"}
        ),
    )
