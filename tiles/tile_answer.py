"""The answer to a tile request once it is authorised: status, headers and body, as a plain
value, so that the Flask view (tiles.views) and the cached tiles' own path (tiles.hot_path)
send the same bytes and the same headers."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple

from tiles.source import Tiles

MAX_AGE = 300
ACCEL_PREFIX = "/_citygrid_tiles/"  # nginx's internal location of the tile cache


class TileAnswer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    sent_bytes: int  # what reaches the client: the body, or the file nginx sends


def tile_note(name: str, z: int, x: int, y: int) -> dict[str, Any]:
    """What a tile request's audit entry says it touched."""
    return {"resource": f"tile {name}/{z}/{x}/{y}", "map": name, "level": z, "x": x, "y": y}


def answer_tile(
    svc: Tiles, name: str, z: int, x: int, y: int, accel: bool, etags: Collection[str]
) -> TileAnswer:
    """A cached tile is sent without hashing it (its ETag was stored with it); 304 when the
    client holds it (`etags`: its If-None-Match). With `accel` (behind nginx, a cache on disk)
    the answer is an X-Accel-Redirect to nginx's internal ACCEL_PREFIX location, and nginx
    sends the file's bytes. Raises what the look-up raises (no such map, level or tile)."""
    files: Path | None = svc.files if accel else None
    hit = svc.cached(name, z, x, y, read=files is None)
    # A product that changes with the workflow (cases) is asked again each time: 304 if same.
    fresh = svc.product(name).max_age is None
    cache_control = f"private, max-age={MAX_AGE}" if fresh else "private, no-cache"
    tagged = [("ETag", f'"{hit.etag}"'), ("Cache-Control", cache_control)]
    if hit.etag in etags:
        return TileAnswer(304, tagged, b"", 0)
    if files is not None:
        rel = hit.path.relative_to(files).as_posix()
        headers = [
            ("Content-Type", "image/png"),
            ("X-Accel-Redirect", f"{ACCEL_PREFIX}{rel}"),
            *tagged,
            ("Content-Length", "0"),
        ]
        return TileAnswer(200, headers, b"", hit.size)
    data = hit.data or b""
    headers = [("Content-Type", "image/png"), *tagged, ("Content-Length", str(len(data)))]
    return TileAnswer(200, headers, data, len(data))
