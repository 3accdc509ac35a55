"""Bench-only baselines for bench/gateway.py: the same cached tile files with no identity,
policy, rate limit or audit. `app` sends the bytes itself; `accel_app` answers as CityGrid
does behind nginx (X-Accel-Redirect to nginx's internal location of the cache), so that nginx
sends them. Never part of the product."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(os.environ["BENCH_TILE_DIR"])
PATH = re.compile(r"^/tiles/([a-z0-9]+)/(\d+)/(\d+)/(\d+)\.png$")


def app(environ, start_response):  # type: ignore[no-untyped-def]
    m = PATH.match(environ.get("PATH_INFO", ""))
    if not m:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    data = (ROOT / m[1] / m[2] / m[3] / f"{m[4]}.png").read_bytes()
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(len(data)))])
    return [data]


ACCEL_PREFIX = "/_citygrid_tiles/"  # as tiles.tile_answer.ACCEL_PREFIX


def accel_app(environ, start_response):  # type: ignore[no-untyped-def]
    m = PATH.match(environ.get("PATH_INFO", ""))
    if not m:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    accel = f"{ACCEL_PREFIX}{m[1]}/{m[2]}/{m[3]}/{m[4]}.png"
    start_response("200 OK", [("Content-Type", "image/png"), ("X-Accel-Redirect", accel)])
    return [b""]
