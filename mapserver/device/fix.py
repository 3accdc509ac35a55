"""A device's GPS fix: its signature covers only a salted digest of it, so the case's
signed evidence (bundles every case reader may fetch) never holds a coordinate. The fix
and its salt travel beside the signed envelope and stay inside (device_report)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from mapserver.errors import InvalidInput

_SALT = re.compile(r"^[0-9a-f]{32,128}\Z")
_DIGEST = re.compile(r"^[0-9a-f]{64}\Z")


class Fix(NamedTuple):
    lon: float
    lat: float
    salt: str


def digest(lon: float, lat: float, salt: str) -> str:
    """sha256 of `salt \\n lon \\n lat`, degrees with 7 decimals (about 1 cm)."""
    return hashlib.sha256(f"{salt}\n{lon:.7f}\n{lat:.7f}".encode()).hexdigest()


def from_request(signed_place: Any, beside: Any) -> Fix | None:
    """The fix sent beside a report whose signed place is {gps: DIGEST}, checked against it
    (None when the place is not a GPS fix)."""
    if not isinstance(signed_place, Mapping) or "gps" not in signed_place:
        if beside is not None:
            raise InvalidInput("fix sent without a signed place {gps: digest}")
        return None
    wanted = signed_place["gps"]
    if not isinstance(wanted, str) or not _DIGEST.match(wanted):
        raise InvalidInput("place.gps must be the fix's digest (64 hex digits), never a coordinate")
    if not isinstance(beside, Mapping):
        raise InvalidInput("a signed place {gps: digest} needs fix {lon, lat, salt} beside it")
    unknown = sorted(set(beside) - set(Fix._fields), key=str)
    if unknown:
        raise InvalidInput(f"fix takes lon, lat and salt only, not {str(unknown[0])[:40]!r}")
    lon, lat = _degrees(beside.get("lon"), 180.0), _degrees(beside.get("lat"), 90.0)
    salt = beside.get("salt")
    if not isinstance(salt, str) or not _SALT.match(salt):
        raise InvalidInput("fix.salt must be 32 to 128 hex digits")
    if digest(lon, lat, salt) != wanted:
        raise InvalidInput("the fix does not match the signed place.gps digest")
    return Fix(lon, lat, salt)


def _degrees(value: Any, most: float) -> float:
    """A JSON number within ±`most` degrees as a float; JSON's integers are unbounded, so one
    too large for a float is refused like any other non-number."""
    wrong = InvalidInput("fix.lon and fix.lat must be numbers (WGS84 degrees)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise wrong
    try:
        degrees = float(value)
    except OverflowError:
        raise wrong from None
    if not (math.isfinite(degrees) and -most <= degrees <= most):
        raise wrong
    return degrees
