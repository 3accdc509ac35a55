"""Cached tiles answered before Flask: the same gateway steps, without its request machinery.

Most requests a CityGrid server answers are GETs of tiles already in the cache, and Flask's
request context, routing, hooks and response objects cost about a quarter of such a
request's time in the app (docs/performance.md). `HotPath` sits between the security
headers (auth.security_headers) and the Flask app and answers those requests itself, with
the same parts the Flask path runs, in the same order:

1. identity: `Gateway.identify` (certificate → active account, bearer token);
2. the tile rate limit: `Limiter.count_tile`;
3. the policy decision: the route's own declaration (`@requires` on tiles.views.tile),
   asked with the scope it derives from the URL;
4. the answer: tiles.tile_answer, as the view builds it (a tile not cached yet is rendered,
   as there);
5. the audit entry: `entry_of`, recorded by the gateway's writer before the answer leaves
   (503 if it cannot be, as the Flask path answers).

Anything else goes to the Flask app untouched: another method or route, a query string or
a body, a host not served, any refusal (identity, limit, policy) and any error of the look-up.
Those are answered, and audited, by the one general path. Nothing is done twice: a refusal
is found before anything is counted, or after the count, with the request marked counted
(`COUNTED_KEY`), so that Flask's limiter does not count it again. A URL this path takes is one
the Flask app routes to the same view (checked when the app is built).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from flask import Flask
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.http import parse_etags
from werkzeug.wsgi import get_host

from auth import policy
from auth.access import Declarations, Declared, ScopeContext
from auth.gateway import Gateway, client_address, entry_of
from auth.raw_responses import UNAVAILABLE
from auth.security_headers import REQUEST_ID_KEY, StartResponse, WsgiApp
from mapserver.rate_limits import COUNTED_KEY, Limiter
from mapserver.services import Services
from tiles.source import ASKING, Asking, Tiles
from tiles.tile_answer import answer_tile, tile_note

ENDPOINT = "tiles.tile"
# What tiles.scope accepts (map name, level, column, row.png): anything else goes to Flask.
_TILE = re.compile(
    r"/tiles/([a-z0-9]{1,32})/(0|[1-9][0-9]{0,6})/(0|[1-9][0-9]{0,6})/(0|[1-9][0-9]{0,6})\.png"
)
_STATUS = {200: "200 OK", 304: "304 NOT MODIFIED"}  # as werkzeug words them
# The gateway's answer when an entry cannot be recorded, as Flask's jsonify writes it.
_UNAVAILABLE = (
    json.dumps({"error": UNAVAILABLE.code, "message": UNAVAILABLE.message}, separators=(",", ":"))
    + "\n"
).encode()

log = logging.getLogger(__name__)


class Asked(NamedTuple):
    """What an audit entry says of the request itself."""

    remote_addr: str
    method: str
    path: str


class HotPath:
    """WSGI: cached tiles answered here, everything else by `app` (the Flask app)."""

    def __init__(
        self,
        app: WsgiApp,
        gateway: Gateway,
        limiter: Limiter,
        declared: Declared,
        scope: ScopeContext,
        tiles: Callable[[], Tiles],
        hosts: list[str] | None,
    ):
        self.app = app
        self.gateway = gateway
        self.limiter = limiter
        self.declared = declared
        self.scope = scope
        self.tiles = tiles
        self.hosts = None if hosts is None else tuple(hosts)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ["REQUEST_METHOD"] == "GET"
            and not environ.get("QUERY_STRING")
            and not environ.get("SCRIPT_NAME")
            and environ.get("CONTENT_LENGTH", "0") in ("", "0")
            and "HTTP_TRANSFER_ENCODING" not in environ
        ):
            found = _TILE.fullmatch(environ.get("PATH_INFO", ""))
            if found is not None and self._host_served(environ):
                answered = self.answer(environ, found, start_response)
                if answered is not None:
                    return answered
        return self.app(environ, start_response)

    def _host_served(self, environ: Mapping[str, Any]) -> bool:
        """Whether Flask takes the request's host (its TRUSTED_HOSTS, and a valid host)."""
        return _host_served(
            environ["wsgi.url_scheme"],
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            self.hosts,
        )

    def answer(
        self, environ: dict[str, Any], found: re.Match[str], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """The tile's answer, sent; None: the Flask app answers instead."""
        started = time.perf_counter()
        front = self.gateway.front
        try:
            who = self.gateway.identify(environ)
        except Exception:  # noqa: BLE001 - refused, or the accounts unreachable (503 there)
            return None  # nothing done yet: the Flask app answers and audits it
        name, z, x, y = found[1], int(found[2]), int(found[3]), int(found[4])
        try:
            if self.limiter.count_tile(who.cert_sha256, tuple(who.roles)) is not None:
                return None  # refused, not counted: the Flask app refuses it again
        except Exception:  # noqa: BLE001 - Redis unreachable: the Flask app answers 503
            return None
        environ[COUNTED_KEY] = True
        try:
            args = {"name": name, "z": found[2], "x": found[3], "y": found[4] + ".png"}
            req = self.declared.request(self.scope, args, {})
            policy.check(who.roles, req, who.streets)
            accel = front.is_proxy_channel(environ)
            etags = parse_etags(environ.get("HTTP_IF_NONE_MATCH"))
            asking = ASKING.set(Asking(who, etags))  # for a renderer in the other zone
            try:
                tile = answer_tile(self.tiles(), name, z, x, y, accel, etags)
            finally:
                ASKING.reset(asking)
        except Exception:  # noqa: BLE001 - refused, no such tile, the renderer unreachable…
            return None  # answered and audited by the Flask app (which asks the look-up again)
        request_id = environ[REQUEST_ID_KEY] = uuid.uuid4().hex
        addr = environ["REMOTE_ADDR"] = client_address(environ, front)
        asked = Asked(addr, "GET", environ["PATH_INFO"])
        audit = {"action": req.action, **tile_note(name, z, x, y)}
        entry = entry_of(
            who, audit, ENDPOINT, asked, tile.status, tile.sent_bytes, started, request_id
        )
        try:
            self.gateway.record(entry)
        except Exception:  # noqa: BLE001 - an unrecorded answer must not leave
            log.exception("audit entry not written")
            start_response(
                f"{UNAVAILABLE.status} SERVICE UNAVAILABLE",
                [("Content-Type", "application/json"), ("Content-Length", str(len(_UNAVAILABLE)))],
            )
            return [_UNAVAILABLE]
        start_response(_STATUS[tile.status], tile.headers)
        return [tile.body] if tile.body else []


@lru_cache(maxsize=256)
def _host_served(
    scheme: str,
    host: str | None,
    server: str | None,
    port: str | None,
    hosts: tuple[str, ...] | None,
) -> bool:
    """The check Flask makes of every request's host (werkzeug's get_host), remembered."""
    environ = {"wsgi.url_scheme": scheme, "HTTP_HOST": host, "SERVER_NAME": server}
    environ = {k: v for k, v in environ.items() if v is not None}
    if port is not None:
        environ["SERVER_PORT"] = port
    try:
        get_host(environ, hosts)
    except SecurityError:
        return False
    return True


class NotTheTileRoute(RuntimeError):
    """The app's URL map does not send what HotPath takes to the tile view."""


def for_app(
    app: Flask, gateway: Gateway, limiter: Limiter, declarations: Declarations, found: Services
) -> HotPath:
    """The path in front of `app.wsgi_app`, after checking that the app routes a URL this path
    takes, with GET, to the tile view, under the view's own declaration."""
    adapter = app.url_map.bind("citygrid.invalid")
    try:
        endpoint, args = adapter.match("/tiles/abc/1/2/3.png", method="GET")
    except HTTPException as exc:
        raise NotTheTileRoute(f"/tiles/abc/1/2/3.png is not routed ({exc.code})") from None
    if endpoint != ENDPOINT or args != {"name": "abc", "z": "1", "x": "2", "y": "3.png"}:
        raise NotTheTileRoute(f"/tiles/abc/1/2/3.png is routed to {endpoint} {args}")
    declared = declarations.of(app, ENDPOINT)
    if declared is None:
        raise NotTheTileRoute(f"{ENDPOINT} has no policy declaration")
    return HotPath(
        app.wsgi_app,
        gateway,
        limiter,
        declared,
        found,
        found.tile_source,
        app.config["TRUSTED_HOSTS"],
    )
