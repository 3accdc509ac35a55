"""Requests per client certificate, counted in Redis across workers, on every route.

Tiles have their own per-role limits, one count for every tile route; every other route (API,
pages, static files, unknown paths) counts against the API limits, one count per route. A
sliding-window counter (the current and the previous fixed window, the previous one weighted
by how much of it still overlaps the sliding window) decided and counted by one Lua script:
one round trip per request. A refused request is not counted. No rate-limit headers are sent,
but Retry-After on a 429. A Redis outage answers 503 (mapserver.errors): never unlimited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import lru_cache

import redis
from flask import Blueprint, Flask, Response, g, jsonify, request
from limits import parse

from mapserver.settings import Settings, rate_table

PREFIX = "citygrid:rl"

# KEYS: the current and the previous window's counters. ARGV: the limit, the window (s),
# the part of the current window already passed (0..1). Returns {allowed, current, previous}.
SLIDING_WINDOW = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local limit = tonumber(ARGV[1])
if previous * (1 - tonumber(ARGV[3])) + current >= limit then
    return {0, current, previous}
end
current = redis.call('INCR', KEYS[1])
if current == 1 then
    redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
end
return {1, current, previous}
"""


@lru_cache(maxsize=64)
def _rate(limit: str) -> tuple[int, int]:
    item = parse(limit)
    return int(item.amount), int(item.get_expiry())


def per_role(table: dict[str, str]) -> Callable[[tuple[str, ...]], tuple[int, int]]:
    """The most generous (amount, window seconds) among the requester's roles."""

    def limit(roles: tuple[str, ...]) -> tuple[int, int]:
        candidates = [_rate(table[r]) for r in roles if r in table] or [_rate(table["*"])]
        return max(candidates, key=lambda a_w: a_w[0] / a_w[1])

    return limit


def certificate_key() -> str:
    who = g.get("identity")
    return f"cert:{who.cert_sha256}" if who else f"addr:{request.remote_addr}"


def request_identifier(tiles_blueprint: str) -> str:
    """Which count a request goes to: all tile routes share one; other routes one each
    (unrouted requests and static files are counted too)."""
    endpoint = request.endpoint
    if endpoint is None:
        return "unrouted"
    if request.blueprint == tiles_blueprint:
        return "tiles"
    return endpoint


def retry_after(amount: int, window: int, elapsed: float, current: int, previous: int) -> int:
    """Seconds until the sliding count falls below `amount` again (at least 1)."""
    if current >= amount or previous <= 0:
        wait = window - elapsed  # the next window, where this one is the weighted previous
    else:
        # previous·(1 - t/window) + current < amount ⇔ t > window·(1 - (amount - current)/previous)
        wait = window * (1 - (amount - current) / previous) - elapsed
    return max(1, math.ceil(wait))


class Limiter:
    def __init__(
        self,
        client: redis.Redis,
        tiles: Callable[[tuple[str, ...]], tuple[int, int]],
        api: Callable[[tuple[str, ...]], tuple[int, int]],
        tiles_blueprint: str,
    ):
        self.script = client.register_script(SLIDING_WINDOW)
        self.tiles = tiles
        self.api = api
        self.tiles_blueprint = tiles_blueprint

    def check(self) -> Response | None:
        scope = request_identifier(self.tiles_blueprint)
        who = g.get("identity")
        roles = tuple(who.roles) if who else ()
        amount, window = (self.tiles if scope == "tiles" else self.api)(roles)
        now = time.time()
        number = int(now // window)
        elapsed = now - number * window
        key = f"{PREFIX}:{certificate_key()}:{scope}:{amount}/{window}"
        allowed, current, previous = self.script(
            keys=[f"{key}:{number}", f"{key}:{number - 1}"], args=[amount, window, elapsed / window]
        )
        if allowed:
            return None
        response = jsonify(
            error="too_many_requests", message=f"more than {amount} requests in {window} s"
        )
        response.status_code = 429
        response.headers["Retry-After"] = str(
            retry_after(amount, window, elapsed, int(current), int(previous))
        )
        return response


def init_app(app: Flask, settings: Settings, tiles_blueprint: Blueprint) -> Limiter:
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
    )
    limiter = Limiter(
        client,
        per_role(rate_table(settings.rate_limit_tiles)),
        per_role(rate_table(settings.rate_limit_api)),
        tiles_blueprint.name,
    )
    app.before_request(limiter.check)
    return limiter
