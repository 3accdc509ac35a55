"""Click-to-identify: a pixel of a tile → its unit grid, community, street and the nearest
components. The answer names and codes things; it never carries a coordinate."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import psycopg
from flask import Blueprint, Response, jsonify, request

from audit.notes import note
from auth import policy
from auth.access import ScopeContext, requires
from auth.gateway import refine
from mapserver import class_text, geocode, locales
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import services
from tiles.scope import tile_request
from tiles.tile_grid import TileGrid

bp = Blueprint("map", __name__, url_prefix="/map")
NEAREST = 5
SEARCH_M = 30.0
_INT = re.compile(r"^(0|[1-9][0-9]{0,6})\Z")


def _int(raw: str, name: str, upper: int | None = None) -> int:
    if not _INT.match(raw):
        raise InvalidInput(f"{name} must be a non-negative integer")
    value = int(raw)
    if upper is not None and value >= upper:
        raise InvalidInput(f"{name} must be below {upper}")
    return value


def _identify_scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    """The tile the pixel lies in decides first; the exact point's street is checked after."""
    z, x, y = (_int(args.get(k, ""), k) for k in ("level", "x", "y"))
    return tile_request("map.identify", ctx, args.get("map", "topo500"), z, x, y)


@bp.get("/identify")
@requires("map.identify", _identify_scope)
def identify() -> Response:
    name = request.args.get("map", "topo500")
    z, x, y = (_int(request.args.get(k, ""), k) for k in ("level", "x", "y"))
    col, row = (
        _int(request.args.get("col", ""), "col", 256),
        _int(request.args.get("row", ""), "row", 256),
    )
    found = services()
    tiles = found.tile_source()  # in this process, or the renderer's (tiles.source)
    product = tiles.product(name)
    scale = tiles.scale_of(z)
    note(resource=f"identify {product.name}/{z}/{x}/{y}")
    answer = tiles.identify(product.name, z, x, y, col, row)
    if answer is None:
        from webclient.messages import translate

        return jsonify(grid=None, message=translate(found.settings.locale, "identify.no_grid"))
    street = str(answer["street"]["code"])
    refine(policy.Request("map.identify", product.name, scale, frozenset({street})))
    return jsonify(answer)


def lookup(
    conn: psycopg.Connection,
    grid: TileGrid,
    srid: int,
    z: int,
    x: int,
    y: int,
    col: int,
    row: int,
    locale: str = class_text.BASE,
) -> dict[str, Any] | None:
    """What lies at pixel (col, row) of tile z/x/y: its unit grid, community and street, and
    the nearest components (codes and names, never a coordinate); None outside every grid.
    Runs where the map is: in this process, or in the renderer of the secure zone."""
    from webclient.messages import translate

    px, py = grid.ground(z, x, y, col + 0.5, row + 0.5)
    try:
        where = geocode.locate_point(conn, px, py)
    except NotFound:
        return None
    rows = conn.execute(
        """SELECT c.code, k.name, c.state, round(ST_Distance(c.geom, p.geom)::numeric, 1)
           FROM component c JOIN class_text(%s) k
                ON k.kind = 'component' AND (k.major, k.minor) = (c.major, c.minor),
                (SELECT ST_SetSRID(ST_MakePoint(%s, %s), %s) AS geom) p
           WHERE ST_DWithin(c.geom, p.geom, %s)
           ORDER BY c.geom <-> p.geom LIMIT %s""",
        (locales.get(locale).code, px, py, srid, SEARCH_M, NEAREST),
    ).fetchall()
    return {
        "grid": where.grid_code,
        "community": {"code": where.community_code, "name": where.community_name},
        "street": {"code": where.street_code, "name": where.street_name},
        "components": [
            {
                "code": code,
                "class": cls,
                "state": state,
                "state_name": translate(locale, f"component_state.{state}"),
                "distance_m": float(dist),
            }
            for code, cls, state, dist in rows
        ],
    }
