"""HTTP: the tile descriptor and the tiles. Thin: parse, let the gateway decide, ask the service.

The scope of each route (product, scale, streets touched) is derived from the URL alone,
so the policy decides before the service reads its cache or answers 404.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from audit.notes import note
from auth import policy
from auth.access import requires
from mapserver.services import services
from tiles.scope import descriptor_scope, tile_index, tile_scope
from tiles.tile_grid import TileRange

bp = Blueprint("tiles", __name__, url_prefix="/tiles")
MAX_AGE = 300
ACCEL_PREFIX = "/_citygrid_tiles/"  # nginx's internal location of the tile cache


@bp.get("/<name>")
@requires("map.view", descriptor_scope)
def descriptor(name: str) -> Response:
    svc = services().tile_source()
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
    """A cached tile is sent without hashing it (its ETag was stored with it). Behind nginx
    the app answers with X-Accel-Redirect to nginx's internal ACCEL_PREFIX location, after
    authorising and auditing: nginx sends the file's bytes."""
    zi, xi, yi = tile_index(z, x, y)
    note(resource=f"tile {name}/{zi}/{xi}/{yi}", map=name, level=zi, x=xi, y=yi)
    found = services()
    svc = found.tile_source()  # in this process, or the renderer's (tiles.source)
    files = svc.files  # None when remote: the bytes come from the renderer, never X-Accel
    accel = files is not None and found.gateway.front.is_proxy_channel(request.environ)
    hit = svc.cached(name, zi, xi, yi, read=not accel)
    if hit.etag in request.if_none_match:
        response = Response(status=304)
    elif accel and files is not None:
        response = Response(mimetype="image/png")
        rel = hit.path.relative_to(files).as_posix()
        response.headers["X-Accel-Redirect"] = f"{ACCEL_PREFIX}{rel}"
        g.sent_bytes = hit.size
    else:
        response = Response(hit.data, mimetype="image/png")
    response.set_etag(hit.etag)
    # A product that changes with the workflow (cases) is asked again each time: 304 if same.
    fresh = svc.product(name).max_age is None
    cache_control = f"private, max-age={MAX_AGE}" if fresh else "private, no-cache"
    response.headers["Cache-Control"] = cache_control
    return response
