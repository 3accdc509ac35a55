"""A case placed by a street-scoped person (an inspector, a street office) lies in that
person's streets. The same rule in one process and across zones: here it is checked after
the place is found; in two zones the renderer already refuses the place under the person's
grant, and its refusal is given the same answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auth import policy
from auth.identity import Identity
from mapserver.cases.place import Place
from mapserver.errors import InvalidInput, OutsideDistrict
from tiles.remote import RendererRefused
from tiles.source import Tiles


class OutsideStreets(InvalidInput):
    """A street-scoped person's place outside their streets (pages say it in their language)."""

    code = "outside_streets"


def place_in_own_streets(
    tiles: Tiles, spec: Mapping[str, Any], who: Identity, field: str, allow_gps: bool = False
) -> Place:
    """`tiles.place(spec)`, refused with a 400 naming `field` when a street-scoped person's
    place lies outside their streets."""
    outside = OutsideStreets(f"{field}: the place lies outside your streets")
    try:
        resolved = tiles.place(spec, allow_gps=allow_gps)
    except RendererRefused:  # the renderer's street scope
        raise outside from None
    except OutsideDistrict:  # outside the district is outside one's streets too
        if policy.street_scoped(who.roles):
            raise outside from None
        raise
    if policy.street_scoped(who.roles) and resolved.where.street_code not in who.streets:
        raise outside
    return resolved
