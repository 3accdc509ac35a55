"""The cases overlay drawn from marks handed in: a renderer of two zones draws the gateway's
cases (whose database is outside) with the overlay's own style (styles/cases.xml).

A mark is a case's pixel of the finest level (counted from the grid's secret origin, known
here only), its state group and whether it is overdue, in the style's drawing order. This
module places each mark at its pixel's centre on the ground and draws one tile with Mapnik
exactly as the `cases` product would from the map database's own cases.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import mapnik

from mapserver.errors import InvalidInput
from tiles import png
from tiles.renderer import PNG_FORMAT, register_fonts
from tiles.style import render_style
from tiles.tile_grid import TILE_PX, TileGrid

GROUPS = frozenset({"open", "handling", "checking", "closed"})  # mapserver.cases.on_map
MAX_MARKS = 5000
BUFFER_PX = 16  # the largest symbol (14 px with its ring) reaches this far over an edge


class Mark(NamedTuple):
    gx: int  # the finest level's global pixel column
    gy: int  # and row
    group: str
    overdue: int


def parse(raw: Any) -> list[Mark]:
    """`[[gx, gy, group, overdue], ...]`, checked (else 400)."""
    if not isinstance(raw, list) or len(raw) > MAX_MARKS:
        raise InvalidInput(f"marks are a list of at most {MAX_MARKS}")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 4):
            raise InvalidInput("a mark is [gx, gy, group, overdue]")
        gx, gy, group, overdue = item
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (gx, gy, overdue)):
            raise InvalidInput("a mark's pixel and overdue flag are integers")
        if group not in GROUPS or overdue not in (0, 1):
            raise InvalidInput("a mark's group is open, handling, checking or closed")
        out.append(Mark(gx, gy, group, overdue))
    return out


_xml: dict[str, str] = {}
_lock = threading.Lock()


def _style_xml(srs: str) -> str:
    with _lock:
        if srs not in _xml:
            _xml[srs] = render_style("cases.xml", srs).xml
        return _xml[srs]


def draw(grid: TileGrid, srs: str, z: int, x: int, y: int, marks: Sequence[Mark]) -> bytes:
    """Tile z/x/y of the cases overlay with `marks` on it, as a clean palette PNG."""
    register_fonts()
    m = mapnik.Map(TILE_PX, TILE_PX)
    if marks:
        mapnik.load_map_from_string(m, _style_xml(srs), True, "")
        res = grid.levels[-1].resolution
        features = [
            {
                "type": "Feature",
                "geometry": {
                    "type": "Point",
                    "coordinates": [
                        grid.origin_x + (mk.gx + 0.5) * res,
                        grid.origin_y - (mk.gy + 0.5) * res,
                    ],
                },
                "properties": {"grp": mk.group, "overdue": mk.overdue},
            }
            for mk in marks
        ]
        inline = json.dumps({"type": "FeatureCollection", "features": features})
        m.layers[0].datasource = mapnik.Datasource(type="geojson", inline=inline)
        m.buffer_size = BUFFER_PX
    else:
        m.srs = srs
    m.zoom_to_box(mapnik.Box2d(*grid.tile_bbox(z, x, y)))
    image = mapnik.Image(TILE_PX, TILE_PX)
    mapnik.render(m, image)
    return png.strip(image.to_string(PNG_FORMAT))
