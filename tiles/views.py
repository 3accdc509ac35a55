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
from tiles.products import PRODUCTS
from tiles.scope import descriptor_request, descriptor_scope, tile_index, tile_scope
from tiles.tile_answer import answer_tile, tile_note
from tiles.tile_grid import TileRange

bp = Blueprint("tiles", __name__, url_prefix="/tiles")


@bp.get("")
@requires("map.view")
def index() -> Response:
    """The names of the maps whose descriptors this account may ask for, in the order maps
    are listed. A page asks for those and no others, so that loading it leaves no refusals
    in the audit log (a viewer's page used to be refused 1:500 and the cases overlay at
    each load). Names only: no extent, no level."""
    who = g.identity
    note(resource="tiles")
    names = [
        name
        for name in PRODUCTS
        if policy.permitted(who.roles, descriptor_request(name), who.streets)
    ]
    return jsonify({"maps": names})


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
    """A tile (tiles.tile_answer). A well-formed GET of a tile is answered by tiles.hot_path
    before Flask is reached; this view answers the rest (HEAD, a refusal, a tile not found,
    an error)."""
    zi, xi, yi = tile_index(z, x, y)
    note(**tile_note(name, zi, xi, yi))
    found = services()
    svc = found.tile_source()  # in this process, or the renderer's (tiles.source)
    accel = found.gateway.front.is_proxy_channel(request.environ)
    answer = answer_tile(svc, name, zi, xi, yi, accel, request.if_none_match)
    g.sent_bytes = answer.sent_bytes
    return Response(answer.body, status=answer.status, headers=answer.headers)
