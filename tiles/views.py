"""HTTP: the tile descriptor and the tiles. Thin: parse, let the gateway decide, ask the service.

The scope of each route (product, scale, streets touched) is derived from the URL alone,
so the policy decides before the service reads its cache or answers 404.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, Response, g, jsonify, request

from audit.notes import note
from auth import policy
from auth.access import requires
from mapserver.services import services
from tiles.scope import descriptor_scope, tile_index, tile_scope
from tiles.tile_grid import TileRange

bp = Blueprint("tiles", __name__, url_prefix="/tiles")
MAX_AGE = 300


@bp.get("/<name>")
@requires("map.view", descriptor_scope)
def descriptor(name: str) -> Response:
    svc = services().tiles()
    product = svc.product(name)
    note(resource=f"tiles/{product.name}")
    who = g.identity

    def sees(scale: int) -> bool:
        return policy.permitted(who.roles, policy.Request("map.view", product.name, scale))

    within = None
    if policy.street_scoped(who.roles):
        streets = services().streets()

        def within(z: int) -> TileRange | None:
            return streets.extent(who.streets, z)

    return jsonify(svc.descriptor(product.name, sees, within))


@bp.get("/<name>/<z>/<x>/<y>")
@requires("tiles.read", tile_scope)
def tile(name: str, z: str, x: str, y: str) -> Response:
    zi, xi, yi = tile_index(z, x, y)
    note(resource=f"tile {name}/{zi}/{xi}/{yi}", map=name, level=zi, x=xi, y=yi)
    svc = services().tiles()
    data = svc.tile(name, zi, xi, yi)
    etag = hashlib.sha256(data).hexdigest()[:32]
    if etag in request.if_none_match:
        response = Response(status=304)
    else:
        response = Response(data, mimetype="image/png")
    response.set_etag(etag)
    # A product that changes with the workflow (cases) is asked again each time: 304 if same.
    fresh = svc.product(name).max_age is None
    cache_control = f"private, max-age={MAX_AGE}" if fresh else "private, no-cache"
    response.headers["Cache-Control"] = cache_control
    return response
