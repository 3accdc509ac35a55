"""Click-to-identify: a pixel of a tile → its unit grid, community, street and the nearest
components. The answer names and codes things; it never carries a coordinate."""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from mapserver import geocode
from mapserver.codes import STATE_NAMES
from mapserver.errors import InvalidInput, NotFound
from tiles.views import service

bp = Blueprint("map", __name__, url_prefix="/map")
NEAREST = 5
SEARCH_M = 30.0
_INT = re.compile(r"^(0|[1-9]\d{0,6})$")


def _int_arg(name: str, upper: int | None = None) -> int:
    raw = request.args.get(name, "")
    if not _INT.match(raw):
        raise InvalidInput(f"{name} must be a non-negative integer")
    value = int(raw)
    if upper is not None and value >= upper:
        raise InvalidInput(f"{name} must be below {upper}")
    return value


@bp.get("/identify")
def identify() -> Response:
    name = request.args.get("map", "topo500")
    z, x, y = _int_arg("level"), _int_arg("x"), _int_arg("y")
    col, row = _int_arg("col", 256), _int_arg("row", 256)
    svc = service()
    product = svc.check(name, z, x, y)
    scale = svc.grid.level(z).scale
    current_app.extensions["citygrid.note"](resource=f"identify {product.name}/{z}/{x}/{y}")
    px, py = svc.grid.ground(z, x, y, col + 0.5, row + 0.5)
    pool = current_app.extensions.get("citygrid.pool")
    conn_cm = pool.connection() if pool else _connect()
    with conn_cm as conn:
        try:
            where = geocode.locate_point(conn, px, py)
        except NotFound:
            current_app.extensions["citygrid.guard"]("map.identify", product.name, scale)
            return jsonify(grid=None, message="此处不属于任何单元网格")
        current_app.extensions["citygrid.guard"](
            "map.identify", product.name, scale, where.street_code
        )
        rows = conn.execute(
            """SELECT c.code, k.name, c.state, round(ST_Distance(c.geom, p.geom)::numeric, 1)
               FROM component c JOIN component_class k ON (k.major, k.minor) = (c.major, c.minor),
                    (SELECT ST_SetSRID(ST_MakePoint(%s, %s), %s) AS geom) p
               WHERE ST_DWithin(c.geom, p.geom, %s)
               ORDER BY c.geom <-> p.geom LIMIT %s""",
            (px, py, current_app.config["CITYGRID"].srid, SEARCH_M, NEAREST),
        ).fetchall()
    return jsonify(
        grid=where.grid_code,
        community={"code": where.community_code, "name": where.community_name},
        street={"code": where.street_code, "name": where.street_name},
        components=[
            {
                "code": code,
                "class": cls,
                "state": state,
                "state_name": STATE_NAMES[state],
                "distance_m": float(dist),
            }
            for code, cls, state, dist in rows
        ],
    )


def _connect():  # type: ignore[no-untyped-def]
    from mapserver import db

    return db.connect(current_app.config["CITYGRID"])


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
