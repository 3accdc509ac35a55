"""HTTP: the tile descriptor and the tiles. Thin: parse, ask the policy, ask the service."""

from __future__ import annotations

import hashlib
import re

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from mapserver.errors import InvalidInput
from tiles.service import TileService

bp = Blueprint("tiles", __name__, url_prefix="/tiles")
_INDEX = re.compile(r"^(0|[1-9]\d{0,6})$")
_Y = re.compile(r"^(0|[1-9]\d{0,6})\.png$")
_NAME = re.compile(r"^[a-z0-9]{1,32}$")
MAX_AGE = 300


def service() -> TileService:
    svc = current_app.extensions.get("citygrid.tiles")
    if svc is None:
        svc = TileService.from_settings(current_app.config["CITYGRID"])
        current_app.extensions["citygrid.tiles"] = svc
    return svc


def guard(action: str, product: str | None = None, scale: int | None = None) -> None:
    """The gateway's policy check (installed by auth.gateway); see mapserver.create_app."""
    current_app.extensions["citygrid.guard"](action, product, scale)


def _name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput("map names are lower-case letters and digits")
    return name


@bp.get("/<name>")
def descriptor(name: str) -> Response:
    svc = service()
    product = svc.product(_name(name))
    guard("map.view", product.name, min(product.scales))
    current_app.extensions["citygrid.note"](resource=f"tiles/{product.name}")
    return jsonify(svc.descriptor(product.name))


@bp.get("/<name>/<z>/<x>/<y>")
def tile(name: str, z: str, x: str, y: str) -> Response:
    if not (_INDEX.match(z) and _INDEX.match(x) and _Y.match(y)):
        raise InvalidInput("a tile is /tiles/MAP/LEVEL/X/Y.png with non-negative integers")
    zi, xi, yi = int(z), int(x), int(y[:-4])
    svc = service()
    product = svc.check(_name(name), zi, xi, yi)
    current_app.extensions["citygrid.note"](
        resource=f"tile {product.name}/{zi}/{xi}/{yi}", map=product.name, level=zi, x=xi, y=yi
    )
    guard("tiles.read", product.name, svc.grid.level(zi).scale)
    data = svc.tile(product.name, zi, xi, yi)
    etag = hashlib.sha256(data).hexdigest()[:32]
    if etag in request.if_none_match:
        response = Response(status=304)
    else:
        response = Response(data, mimetype="image/png")
    response.set_etag(etag)
    response.headers["Cache-Control"] = f"private, max-age={MAX_AGE}"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
