"""The renderer's answers for the case workflow's map parts (two zones): the gateway keeps
the cases, the renderer keeps the map, and each asks the other nothing more than this.

- `POST /place` `{"spec", "gps"}`: a case's place from what a person gave (a pixel of the
  map, an address, a unit grid or component code, a device's GPS fix), answered as codes,
  names, the unit grid's area and the finest level's pixel: never a coordinate
  (mapserver.cases.place.to_wire); refused outside the grant's streets.
- `GET /grid/CODE`: where a unit grid lies in the finest level's pixels (a device's
  picture is framed on it); 404 outside the grant's streets, as for a missing one.
- `POST /overlay/cases/Z/X/Y.png` `{"marks"}`: a tile of the cases overlay drawn from the
  gateway's cases, each a finest pixel, state group and overdue flag (tiles.case_marks).
- `GET|POST /hotspot/VARIANT/Z/X/Y.png`: a hot-spot tile; GET answers a fresh cached tile or
  409 `counts_needed`, POST `{"counts"}` (filed cases per unit grid code, counted by the
  gateway) draws its metatile (mapserver.evaluation.hotspot).
- `GET /areas`: the district's streets, communities and unit grids as codes, names and
  areas (no shape), for the gateway's own grant only (`citygrid renderer sync-areas`).

Each checks the grant like the tile routes (tiles.renderer_app): the map (`cases` for
places, grids and the overlay; `hotspot`), the level (the finest for places and grids) and
the street scope.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from mapserver.errors import CityGridError, InvalidInput, NotFound
from tiles import case_marks
from tiles import grant as grants
from tiles.scope import tile_index

bp = Blueprint("renderer_work", __name__)
CASES = "cases"
HOTSPOT = "hotspot"
_lock = threading.Lock()
MAX_COUNTS_BODY = 8 * 1024 * 1024  # a district's unit grids with their counts


class Refused(CityGridError):
    status = 403
    code = "forbidden"


class CountsNeeded(CityGridError):
    """No fresh hot-spot tile here: the gateway sends its counts (POST) to have it drawn."""

    status = 409
    code = "counts_needed"


def _renderer() -> Any:
    return current_app.extensions["citygrid-renderer"]


def _finest() -> int:
    return len(_renderer().service.grid.scales) - 1


def _covered(products: list[str], level: int) -> grants.Grant:
    grant: grants.Grant = g.grant
    if not grants.covers(grant, products, level):
        raise Refused("the grant does not name this map and level")
    return grant


def json_body() -> dict[str, Any]:
    """The request's body as a JSON object (400 for anything else)."""
    try:
        doc = json.loads(request.get_data())
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise InvalidInput("the body is a JSON object")
    return doc


@bp.post("/place")
def place_of() -> Response:
    from mapserver.cases import place

    grant = _covered([CASES], _finest())
    doc = json_body()
    spec = doc.get("spec")
    if isinstance(spec, Mapping) and "point" in spec:
        raise InvalidInput("a point is taken only inside the secure zone (citygrid case create)")
    found = _renderer().tiles.place(spec, allow_gps=doc.get("gps") is True)
    if grant.streets is not None and found.where.street_code not in grant.streets:
        raise Refused("the place is outside the grant's streets")
    return jsonify(place.to_wire(found))


@bp.get("/grid/<code>")
def grid_of(code: str) -> Response:
    grant = _covered([CASES], _finest())
    spot = _renderer().tiles.unit_grid(code)
    if spot is None or (grant.streets is not None and spot.street not in grant.streets):
        raise NotFound(f"no unit grid {code}")  # missing, or not the grant's: the same answer
    return jsonify(street=spot.street, centre=list(spot.centre), box=list(spot.box))


def _tile(product: str, z: str, x: str, y: str) -> tuple[int, int, int]:
    zi, xi, yi = tile_index(z, x, y)
    grant = _covered([product], zi)
    renderer = _renderer()
    if not renderer.in_streets(grant, zi, xi, yi):
        raise Refused("the tile is outside the grant's streets")
    renderer.service.check(product, zi, xi, yi)
    return zi, xi, yi


@bp.post("/overlay/cases/<z>/<x>/<y>")
def cases_overlay(z: str, x: str, y: str) -> Response:
    zi, xi, yi = _tile(CASES, z, x, y)
    marks = case_marks.parse(json_body().get("marks"))
    service = _renderer().service
    data = case_marks.draw(service.grid, service.source.srs, zi, xi, yi, marks)
    return Response(data, mimetype="image/png")


@bp.route("/hotspot/<name>/<z>/<x>/<y>", methods=["GET", "POST"])
def hotspot_tile(name: str, z: str, x: str, y: str) -> Response:
    from mapserver.evaluation import hotspot

    which = hotspot.checked_name(name)
    zi, xi, yi = _tile(HOTSPOT, z, x, y)
    renderer = _renderer()
    service = renderer.service
    if request.method == "GET":
        data = hotspot.cached(service, which, zi, xi, yi)
        if data is None:
            raise CountsNeeded("no fresh tile of this variant: send the counts")
    else:
        request.max_content_length = MAX_COUNTS_BODY
        draw = hotspot.CountedHotspotRenderer(_hotspot_base(), json_body().get("counts", {}))
        data = hotspot.tile(service, draw, which, zi, xi, yi)
    response = Response(data, mimetype="image/png")
    response.set_etag(hotspot_etag(data))
    return response


def hotspot_etag(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:32]


def _hotspot_base() -> Any:
    """This renderer's hot-spot style and connection (the counts come with each drawing)."""
    from mapserver.evaluation import hotspot

    app = current_app
    found = app.extensions.get("citygrid-renderer-hotspot")
    if found is None:
        with _lock:
            found = app.extensions.get("citygrid-renderer-hotspot")
            if found is None:
                renderer = _renderer()
                found = hotspot.local_renderer(renderer.settings, renderer.service)
                app.extensions["citygrid-renderer-hotspot"] = found
    return found


@bp.get("/areas")
def areas() -> Response:
    """Codes, names and unit grid areas of the map's areas: what a gateway registers so that
    organisations and cases can name them (mapserver.cases.areas.sync)."""
    grant: grants.Grant = g.grant
    if grant.account != "gateway" or grant.products or grant.streets is not None:
        raise Refused("the areas are for the gateway's own grant")
    with _renderer().pool.connection() as conn:
        district = conn.execute("SELECT code, name FROM district ORDER BY code LIMIT 1").fetchone()
        streets = conn.execute("SELECT code, name FROM street ORDER BY code").fetchall()
        communities = conn.execute(
            "SELECT code, street_code, name FROM community ORDER BY code"
        ).fetchall()
        grids = conn.execute(
            "SELECT code, community_code, area_m2 FROM unit_grid ORDER BY code"
        ).fetchall()
    return jsonify(
        district=list(district) if district else None,
        streets=[list(r) for r in streets],
        communities=[list(r) for r in communities],
        grids=[[code, community, float(area)] for code, community, area in grids],
    )
