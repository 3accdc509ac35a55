"""Requests per client certificate, counted in Redis across workers, on every route but the
pages' static files.

Tiles have their own per-role limits, one count for every tile route; so do a device's upload
chunks (tus PATCH and HEAD: a photo of a few MB is some twenty chunks of 128 KiB, which the API
limit would hold to a trickle on a fast link); every other route (API, pages, unknown paths)
counts against the API limits, one count per route. The pages' static
files are not counted (`uncounted` endpoints): a page asks for a score of them, and a person
clicking quickly through the case pages ran into the API limit on the icon; they are still
served to an identified client only, and audited, as every route. A sliding-window counter
(the current and the previous fixed window, the previous one weighted by how much of it
still overlaps the sliding window) decided and counted by one Lua script.
A refused request is not counted. No rate-limit headers are sent, but Retry-After on a 429. A
Redis outage answers 503 (mapserver.errors): never unlimited.

Leases: a worker takes a client's requests from Redis in blocks rather than one by one. The
script counts a whole block at once, only if the limit has room for it (less if less is left),
and the worker answers that many of the client's requests without asking again. A client that
uses up its block within FAST seconds gets twice as many next time, up to a 64th of its limit
and BLOCK_MOST; one that does not, gets one at a time, as without leases. So a client at
full speed costs a round trip per block, and a slow one is counted exactly. Counting ahead
never lets a request past its limit: a block is counted before it is used. What a lease leaves
unused when its window ends or it is LEASE_SECONDS old stays counted, so a fast client may be
refused up to a block per worker before its limit. A lease is no older than LEASE_SECONDS: a
Redis outage is refused within that time, or within a block of requests if sooner.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import redis
from flask import Blueprint, Flask, Response, g, jsonify, request
from limits import parse

from mapserver.settings import Settings, rate_table

PREFIX = "citygrid:rl"
COUNTED_KEY = "citygrid.rate_counted"  # WSGI environ: this request is counted already
BLOCK_MOST = 32  # requests a worker may take at once for one client
BLOCK_SHARE = 64  # and at most this part of the client's limit
FAST = 1.0  # seconds: a block used up sooner than this doubles the next
LEASE_SECONDS = 2.0  # a block's requests are answered for at most this long
LEASES_MOST = 4096  # clients' leases a worker keeps before it drops the ended ones

# KEYS: the current and the previous window's counters. ARGV: the limit, the window (s),
# the part of the current window already passed (0..1), the block wanted. Counts and returns
# {granted, current, previous}: granted is 0 when the limit has no room for one more request
# (the sliding count, the previous window weighted, plus one would pass it), else the block
# or as many whole requests as there is room for.
SLIDING_WINDOW = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local room = tonumber(ARGV[1]) - previous * (1 - tonumber(ARGV[3])) - current
if room < 1 then
    return {0, current, previous}
end
local granted = math.min(tonumber(ARGV[4]), math.floor(room))
current = redis.call('INCRBY', KEYS[1], granted)
if current == granted then
    redis.call('EXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
end
return {granted, current, previous}
"""


@dataclass
class Lease:
    """A block of a client's requests that Redis has counted and this worker may answer."""

    number: int  # the fixed window it was counted in
    left: int  # requests not answered yet
    block: int  # how many were asked for
    granted: float  # time.monotonic() when counted

    def take(self, number: int, now: float) -> bool:
        if self.left <= 0 or self.number != number or now - self.granted >= LEASE_SECONDS:
            return False
        self.left -= 1
        return True


def next_block(lease: Lease | None, now: float, most: int) -> int:
    """How many requests to ask for: twice the last block if it was used up within FAST
    seconds, else one."""
    if lease is None or lease.left > 0 or now - lease.granted >= FAST:
        return 1
    return min(2 * lease.block, most)


def block_most(amount: int) -> int:
    return max(1, min(BLOCK_MOST, amount // BLOCK_SHARE))


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


def request_identifier(tiles_blueprint: str, chunks: frozenset[str] = frozenset()) -> str:
    """Which count a request goes to: all tile routes share one, the upload chunks' routes
    another; other routes one each (unrouted requests are counted too)."""
    endpoint = request.endpoint
    if endpoint is None:
        return "unrouted"
    if request.blueprint == tiles_blueprint:
        return "tiles"
    if endpoint in chunks:
        return "uploads"
    return endpoint


def retry_after(amount: int, window: int, elapsed: float, current: int, previous: int) -> int:
    """Seconds until the sliding count has room for one more request (at least 1)."""
    room = amount - 1 - current  # what the weighted previous window may still hold
    if room < 0 or previous <= 0:
        wait = window - elapsed  # the next window, where this one is the weighted previous
    else:
        # previous·(1 - t/window) ≤ room ⇔ t ≥ window·(previous - room)/previous
        wait = window * (previous - room) / previous - elapsed
    return max(1, math.ceil(wait))


class Limiter:
    def __init__(
        self,
        client: redis.Redis,
        tiles: Callable[[tuple[str, ...]], tuple[int, int]],
        api: Callable[[tuple[str, ...]], tuple[int, int]],
        tiles_blueprint: str,
        uncounted: frozenset[str] = frozenset(),
        uploads: Callable[[tuple[str, ...]], tuple[int, int]] | None = None,
        chunks: frozenset[str] = frozenset(),
    ):
        self.script = client.register_script(SLIDING_WINDOW)
        self.uncounted = uncounted  # endpoints no limit applies to (the pages' static files)
        self.tiles = tiles
        self.api = api
        self.uploads = uploads or api
        self.chunks = chunks  # the upload chunks' endpoints, counted by `uploads`
        self.tiles_blueprint = tiles_blueprint
        self.leases: dict[str, Lease] = {}
        self._leases_lock = threading.Lock()

    def check(self) -> Response | None:
        if request.environ.get(COUNTED_KEY):
            return None  # counted already, by the cached tiles' own path (tiles.hot_path)
        if request.endpoint in self.uncounted:
            return None
        scope = request_identifier(self.tiles_blueprint, self.chunks)
        who = g.get("identity")
        roles = tuple(who.roles) if who else ()
        limit = {"tiles": self.tiles, "uploads": self.uploads}.get(scope, self.api)
        amount, window = limit(roles)
        key = f"{PREFIX}:{certificate_key()}:{scope}:{amount}/{window}"
        wait = self.count(key, amount, window)
        if wait is None:
            return None
        response = jsonify(
            error="too_many_requests", message=f"more than {amount} requests in {window} s"
        )
        response.status_code = 429
        response.headers["Retry-After"] = str(wait)
        return response

    def count_tile(self, cert_sha256: str, roles: tuple[str, ...]) -> int | None:
        """`count` for a tile request of an identified client, as `check` counts it."""
        amount, window = self.tiles(roles)
        return self.count(f"{PREFIX}:cert:{cert_sha256}:tiles:{amount}/{window}", amount, window)

    def count(self, key: str, amount: int, window: int) -> int | None:
        """None if the client behind `key` may make one more request (counted), else the
        seconds until it may (not counted)."""
        now, mono = time.time(), time.monotonic()
        number = int(now // window)
        with self._leases_lock:
            lease = self.leases.get(key)
            if lease is not None and lease.take(number, mono):
                return None
            block = next_block(lease, mono, block_most(amount))
        elapsed = now - number * window
        granted, current, previous = self.script(
            keys=[f"{key}:{number}", f"{key}:{number - 1}"],
            args=[amount, window, elapsed / window, block],
        )
        if granted:
            self._keep(key, Lease(number, int(granted) - 1, block, mono))
            return None
        return retry_after(amount, window, elapsed, int(current), int(previous))

    def _keep(self, key: str, lease: Lease) -> None:
        with self._leases_lock:
            if len(self.leases) >= LEASES_MOST:
                mono = time.monotonic()
                self.leases = {
                    k: v for k, v in self.leases.items() if mono - v.granted < LEASE_SECONDS
                }
            old = self.leases.get(key)
            if (
                old is not None
                and old.number == lease.number
                and lease.granted - old.granted < LEASE_SECONDS
            ):
                lease.left += old.left  # another thread's block, counted meanwhile
            self.leases[key] = lease


def init_app(
    app: Flask,
    settings: Settings,
    tiles_blueprint: Blueprint,
    uncounted: frozenset[str] = frozenset(),
    chunks: frozenset[str] = frozenset(),
) -> Limiter:
    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
    )
    limiter = Limiter(
        client,
        per_role(rate_table(settings.rate_limit_tiles)),
        per_role(rate_table(settings.rate_limit_api)),
        tiles_blueprint.name,
        uncounted,
        per_role(rate_table(settings.rate_limit_uploads)),
        chunks,
    )
    app.before_request(limiter.check)
    return limiter
