"""The renderer service of the secure zone (`citygrid renderer serve`): a minimal app of its
own, apart from the gateway's, that owns the map database, Mapnik and the tile cache.

It answers four things and refuses everything else:

- `GET /tile/PRODUCT/Z/X/Y.png`: a tile's PNG bytes (with its ETag; 304 on If-None-Match);
- `POST /picture` `{"products", "frame": [z, left, top, width, height], "hidden"}`: a
  screen's picture as PNG (tiles.picture: the frame in the level's pixels, no coordinates);
- `GET /identify/PRODUCT/Z/X/Y?col=&row=`: what lies at a tile's pixel (codes and names,
  mapserver.identify.lookup), refused where the point's street is not the grant's;
- `GET /scope`: the tile indices the gateway decides with (served ranges per product and
  level, and which tiles touch which street), for the gateway's own grant only;
- `PUT /crl`: a new CRL, pushed by the gateway (tiles.crl_push; tiles.renderer_crl checks
  and stores it), so the secure zone never connects out for one and no person copies it.

and the case workflow's map parts (tiles.renderer_work) and a bureau's components
(tiles.renderer_components: component data stays in the map database, and a change is
applied here only under its person's signature, checked again).

Only a client holding a service certificate of CityGrid's CA gets an answer (the TLS
handshake already requires a certificate of the CA and checks the CRL; the app checks the
chain, clientAuth and the service SAN again), and each request must carry a grant
(tiles.grant) bound to that certificate and covering what it asks: the product, the level and,
for a street-scoped account, a tile touching one of the named streets; for a picture the
tiles outside those streets are masked here, whatever the gateway asked. Defence in depth:
the gateway decided already, and the renderer does not trust that decision. Every answer,
refusals included, is in the renderer's own audit log first (tiles.renderer_audit).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from psycopg_pool import ConnectionPool
from werkzeug.datastructures import ETags
from werkzeug.exceptions import HTTPException

from auth import pki
from auth.identity import Unauthenticated, parse_der, verify_chain
from mapserver.errors import CityGridError, InvalidInput
from mapserver.settings import Settings
from tiles import grant as grants
from tiles import renderer_audit, street_scope
from tiles.cache import Cached
from tiles.picture import Frame
from tiles.renderer_audit import Peer
from tiles.renderer_crl import Held, RendererCrl
from tiles.scope import map_name, tile_index
from tiles.service import TileService
from tiles.source import LocalTiles
from tiles.street_scope import StreetIndex

log = logging.getLogger("citygrid.renderer")
STREETS_TTL = 300.0
CHECKED_TTL = 60.0  # the CRL is checked in every handshake; the app's own check is reused
MAX_BODY = 256 * 1024  # a picture request: products, a frame and the hidden tiles
GATEWAY = "gateway"  # the account name of the gateway's own grant (for /scope)


class Refused(CityGridError):
    status = 403
    code = "forbidden"


class NoGrant(CityGridError):
    status = 401
    code = "unauthenticated"


def grant_public_key(settings: Settings) -> Path:
    return Path(settings.grant_key or settings.pki_dir / "grant" / "grant.pub")


class Renderer:
    """The tile service, the grant key, CityGrid's CA and the street index of one renderer."""

    def __init__(self, settings: Settings, service: TileService, render_threads: int = 8):
        from auth.ca_store import CaStore

        self.settings = settings
        self.service = service
        self.pool = ConnectionPool(
            settings.map_reader_database_url, min_size=1, max_size=4, open=True,
            kwargs={"autocommit": True},
        )  # fmt: skip
        self.tiles = LocalTiles(service, self.pool.connection, settings.srid, settings)
        self.public = grants.load_public(grant_public_key(settings))
        store = CaStore(settings.pki_dir)
        self.ca = store.certificate()
        self.crl = RendererCrl(store.crl_path, self.ca)
        self._streets: tuple[float, StreetIndex] | None = None
        self._lock = threading.Lock()
        # Checked again within CHECKED_TTL (keyed by the exact bytes): a service certificate's
        # chain and SAN, and a grant (until its own expiry) for the certificate it came with.
        self._certs: dict[bytes, tuple[float, tuple[Peer, int, str]]] = {}
        self._grants: dict[tuple[str, str], grants.Grant] = {}
        self._grant_expiry: dict[tuple[str, str], float] = {}
        self._rendering = ThreadPoolExecutor(render_threads, thread_name_prefix="render")

    def streets(self) -> StreetIndex:
        held = self._streets
        if held is not None and held[0] > time.monotonic():
            return held[1]
        import psycopg

        with self._lock:
            held = self._streets
            if held is None or held[0] <= time.monotonic():
                with psycopg.connect(self.settings.map_reader_database_url) as conn:
                    index = street_scope.load(conn, self.service.grid, self.settings.srid)
                held = (time.monotonic() + STREETS_TTL, index)
                self._streets = held
        return held[1]

    def client(self) -> str:
        """The presenting service certificate's SHA-256, after checking it again
        (`admit`); the request's peer and CRL are kept in `g` for its audit entry."""
        sock = request.environ.get("gunicorn.socket")
        getpeercert = getattr(sock, "getpeercert", None)
        der = getpeercert(binary_form=True) if getpeercert is not None else None
        peer, problem, g.crl = self.admit(der)
        g.peer = peer
        if problem:
            raise Refused(problem)
        return peer.sha256

    def admit(self, der: bytes | None) -> tuple[Peer, str, Held | None]:
        """The presenting certificate checked again: its chain, clientAuth and the service
        SAN (reused for CHECKED_TTL), and on every request the CRL held now
        (tiles.renderer_crl: a pushed CRL applies to open connections too). Returns the
        peer, the problem ("" if none) and that CRL."""
        held = self._certs.get(der) if der else None
        if held is None or held[0] <= time.monotonic():
            held = (time.monotonic() + CHECKED_TTL, self._check(der))
            if der:
                if len(self._certs) > 1000:
                    self._certs.clear()
                self._certs[der] = held
        peer, serial, problem = held[1]
        if problem:
            return peer, f"a service certificate is required ({problem})", None
        crl = self.crl.held()  # one look at the CRL file per request (see `checked`)
        if crl is not None and serial in crl.revoked:
            return peer, "the certificate is revoked", crl
        return peer, "", crl

    def _check(self, der: bytes | None) -> tuple[Peer, int, str]:
        try:
            cert = parse_der(der)
        except Unauthenticated as exc:
            return Peer("", "", ""), 0, exc.reason
        peer = Peer(
            pki.service_of(cert) or "", format(cert.serial_number, "x"), pki.thumbprint(cert)
        )
        try:
            verify_chain(cert, self.ca, pki.now())
        except Unauthenticated as exc:
            return peer, cert.serial_number, exc.reason
        return peer, cert.serial_number, "" if peer.service else "not a service"

    def grant(self, presenting: str, header: str | None = None) -> grants.Grant:
        """The request's grant (its Authorization `header`, by default the Flask request's),
        checked for the certificate `presenting` (its SHA-256, as `client` gave it); a grant
        already verified is reused until it expires."""
        if header is None:
            header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise NoGrant("a grant is required")
        token = header[len("Bearer ") :].strip()
        key = (token, presenting)
        held = self._grants.get(key)
        if held is not None and self._grant_expiry.get(key, 0.0) > time.time():
            return held
        try:
            found = grants.verify(self.public, token, presenting)
        except grants.Refused as exc:
            log.warning("grant refused: %s", exc.check)
            raise NoGrant(f"grant refused: {exc.check}") from None
        with self._lock:
            if len(self._grants) > 10_000:
                self._grants.clear()
                self._grant_expiry.clear()
            self._grants[key] = found
            self._grant_expiry[key] = grants.expiry(token)
        return found

    def in_streets(self, grant: grants.Grant, z: int, x: int, y: int) -> bool:
        if grant.streets is None:
            return True
        return bool(self.streets().streets_of_tile(z, x, y) & grant.streets)

    def tile(self, grant: grants.Grant, name: str, z: int, x: int, y: int, known: ETags) -> Cached:
        """A tile for `grant`, checked against its maps, level and streets. When one of the
        `known` versions (If-None-Match) is current, its ETag only (data None): a 304."""
        if not grants.covers_one(grant, map_name(name), z):
            raise Refused("the grant does not name this map and level")
        if not self.in_streets(grant, z, x, y):
            raise Refused("the tile is outside the grant's streets")
        hit = self.service.lookup(name, z, x, y, read=not known)
        if hit is None:  # rendered by one of a few threads (each holds Mapnik maps of its own)
            hit = self._rendering.submit(self.service.cached, name, z, x, y, not known).result()
        if hit.etag in known:
            return hit._replace(data=None)
        if hit.data is None:  # another version than the client's: the bytes after all
            hit = self.service.cached(name, z, x, y)
        return hit

    def scope(self) -> dict[str, Any]:
        grid = self.service.grid
        served: dict[str, dict[str, list[int]]] = {}
        for name in ("topo500", "topo2000", "grids", "cases"):
            try:
                product = self.service.product(name)
            except CityGridError:
                continue
            for level in grid.levels:
                rng = self.service.served_range(product, level.z)
                if rng is not None:
                    served.setdefault(name, {})[str(level.z)] = [rng.x0, rng.y0, rng.x1, rng.y1]
        streets = {
            code: {str(z): {str(y): [list(s) for s in row] for y, row in rows.items()}
                   for z, rows in levels.items()}
            for code, levels in self.streets().spans.items()
        }  # fmt: skip
        return {"top_tiles": grid.top_tiles, "served": served, "streets": streets}


def _problem(
    status: int, code: str, message: str, details: dict[str, object] | None = None
) -> Response:
    response = jsonify({**(details or {}), "error": code, "message": message})
    response.status_code = status
    return response


def create_app(settings: Settings | None = None, service: TileService | None = None) -> Flask:
    from mapserver import settings as settings_mod

    settings = settings or settings_mod.load()
    threads = int(os.environ.get("CITYGRID_TLS_RENDERER_THREADS", "8"))
    renderer = Renderer(settings, service or TileService.from_settings(settings), threads)
    app = Flask("citygrid-renderer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["citygrid-renderer"] = renderer
    renderer_audit.init_app(app, renderer_audit.open_writer(settings))

    @app.before_request
    def checked() -> None:
        presenting = renderer.client()
        if request.endpoint == "crl":  # a CA-signed CRL from a service: also when stale
            return
        renderer.crl.current(g.crl)
        g.grant = renderer.grant(presenting)

    @app.get("/tile/<name>/<z>/<x>/<y>")
    def tile(name: str, z: str, x: str, y: str) -> Response:
        # the gateway passes its client's If-None-Match on
        hit = renderer.tile(g.grant, name, *tile_index(z, x, y), request.if_none_match)
        if hit.data is None:
            response = Response(status=304)
        else:
            response = Response(hit.data, mimetype="image/png")
        response.set_etag(hit.etag)
        return response

    @app.post("/picture")
    def picture() -> Response:
        grant: grants.Grant = g.grant
        try:
            doc = json.loads(request.get_data())
            products = [map_name(str(p)) for p in doc["products"]]
            frame = Frame(*(int(v) for v in doc["frame"]))
            hidden = {(int(t[0]), int(t[1])) for t in doc.get("hidden", [])}
        except (ValueError, TypeError, KeyError, IndexError):
            raise InvalidInput(
                'a picture is {"products": [...], "frame": [z, left, top, width, height]}'
            ) from None
        if not products or not grants.covers(grant, products, frame.z):
            raise Refused("the grant does not name these maps and this level")
        if grant.streets is not None:  # mask what the grant's streets do not reach, here too
            hidden |= {
                t for t in frame.tiles().tiles() if not renderer.in_streets(grant, frame.z, *t)
            }
        data = renderer.tiles.picture(products, frame, hidden)
        return Response(data, mimetype="image/png")

    @app.get("/identify/<name>/<z>/<x>/<y>")
    def identify(name: str, z: str, x: str, y: str) -> Response:
        zi, xi, yi = tile_index(z, x, f"{y}.png")
        grant: grants.Grant = g.grant
        if not grants.covers(grant, [map_name(name)], zi):
            raise Refused("the grant does not name this map and level")
        if not renderer.in_streets(grant, zi, xi, yi):
            raise Refused("the tile is outside the grant's streets")
        try:
            col, row = int(request.args["col"]), int(request.args["row"])
        except (KeyError, ValueError):
            raise InvalidInput("col and row are integers") from None
        if not (0 <= col < 256 and 0 <= row < 256):
            raise InvalidInput("col and row are pixels of a tile (0..255)")
        found = renderer.tiles.identify(name, zi, xi, yi, col, row)
        street = found["street"]["code"] if found is not None else None
        if street is not None and grant.streets is not None and street not in grant.streets:
            raise Refused("the point is outside the grant's streets")
        return jsonify(found=found)

    @app.get("/scope")
    def scope() -> Response:
        grant: grants.Grant = g.grant
        if grant.account != GATEWAY or grant.products or grant.streets is not None:
            raise Refused("the scope is for the gateway's own grant")
        return jsonify(renderer.scope())

    @app.put("/crl")
    def crl() -> Response:
        """The gateway pushes each new CRL here (tiles.crl_push): kept if CityGrid's CA
        signed it, its number grows and it is current; used from the next request on."""
        held, installed = renderer.crl.install(request.get_data())
        log.warning("CRL %d %s", held.number, "installed" if installed else "already held")
        return jsonify(installed=installed, number=held.number,
                       next_update=held.next_update.isoformat())  # fmt: skip

    # The case workflow's map parts: places, unit grids, the cases overlay, hot spots.
    from tiles import renderer_work

    app.register_blueprint(renderer_work.bp)
    # Component online update: the components are map data and are changed here.
    from tiles import renderer_components

    app.register_blueprint(renderer_components.bp)

    @app.errorhandler(CityGridError)
    def refused(exc: CityGridError) -> Response:
        return _problem(exc.status, exc.code, exc.message, exc.details)

    from mapserver.errors import foreign_statuses

    for kind, status, code, message in foreign_statuses():
        app.register_error_handler(kind, lambda exc, s=status, c=code, m=message: _problem(s, c, m))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _problem(exc.code or 500, "http", exc.name)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        log.exception("renderer error")
        return _problem(500, "internal", "internal error")

    return app
