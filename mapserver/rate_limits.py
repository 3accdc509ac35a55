"""Requests per client certificate, counted in Redis across workers, on every route.

Tiles have their own per-role limits; every other route (API, pages, static files, unknown
paths) counts against the API limits. A Redis outage answers 503: never unlimited.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask, g, request
from flask_limiter import Limiter
from limits import parse

from mapserver.settings import Settings, rate_table


def per_role(table: dict[str, str]) -> Callable[[], str]:
    """The most generous limit among the requester's roles (callable for Flask-Limiter)."""

    def limit() -> str:
        who = g.get("identity")
        roles = who.roles if who else ()
        candidates = [table[r] for r in roles if r in table] or [table["*"]]
        return max(candidates, key=lambda s: parse(s).amount / parse(s).get_expiry())

    return limit


def certificate_key() -> str:
    who = g.get("identity")
    return f"cert:{who.cert_sha256}" if who else f"addr:{request.remote_addr}"


def request_identifier() -> str:
    """Flask-Limiter exempts unrouted requests and static files; CityGrid counts them."""
    endpoint = request.endpoint
    if endpoint is None:
        return "unrouted"
    if endpoint.rsplit(".", 1)[-1] == "static":
        return endpoint + "_files"
    return endpoint


def init_app(app: Flask, settings: Settings, tiles_blueprint: Blueprint) -> Limiter:
    limiter = Limiter(
        key_func=certificate_key,
        default_limits=[per_role(rate_table(settings.rate_limit_api))],
        storage_uri=settings.redis_url,
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2},
        strategy="moving-window",
        headers_enabled=True,
        swallow_errors=False,
        in_memory_fallback_enabled=False,
        key_prefix="citygrid",
        request_identifier=request_identifier,
    )
    limiter.limit(per_role(rate_table(settings.rate_limit_tiles)), scope="tiles")(tiles_blueprint)
    limiter.init_app(app)
    return limiter
