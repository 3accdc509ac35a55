"""What a tile-shaped request asks for, derived from its URL alone (no I/O): the map
product, the level's scale and the streets the tile touches. The gateway's policy decision
uses it before any view runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from auth import policy
from auth.access import ScopeContext
from mapserver.errors import InvalidInput
from tiles.products import PRODUCTS

_INDEX = re.compile(r"^(0|[1-9][0-9]{0,6})\Z")
_Y = re.compile(r"^(0|[1-9][0-9]{0,6})\.png\Z")
_NAME = re.compile(r"^[a-z0-9]{1,32}\Z")


def map_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput("map names are lower-case letters and digits")
    return name


def tile_index(z: str, x: str, y: str) -> tuple[int, int, int]:
    if not (_INDEX.match(z) and _INDEX.match(x) and _Y.match(y)):
        raise InvalidInput("a tile is /tiles/MAP/LEVEL/X/Y.png with non-negative integers")
    return int(z), int(x), int(y[:-4])


def tile_request(
    action: str, ctx: ScopeContext, name: str, z: int, x: int, y: int
) -> policy.Request:
    """A tile-shaped request: its product, its level's scale, the streets the tile touches."""
    return policy.Request(action, map_name(name), ctx.scale_of(z), ctx.streets_of_tile(z, x, y))


def descriptor_scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    """A descriptor is allowed at the coarsest scale of the product (the role then sees the
    levels it may see)."""
    return descriptor_request(view_args["name"])


def descriptor_request(name: str) -> policy.Request:
    """What asking for the descriptor of map `name` asks of the policy."""
    product = PRODUCTS.get(map_name(name))
    scale = max(product.scales) if product else None
    return policy.Request("map.view", name, scale)


def tile_scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    z, x, y = tile_index(view_args["z"], view_args["x"], view_args["y"])
    return tile_request("tiles.read", ctx, view_args["name"], z, x, y)
