"""The remote implementation of the tile interface: the gateway asks the renderer service.

Over mutual TLS (the gateway presents its service certificate, and checks the renderer's
server certificate against CityGrid's CA), on kept-alive connections shared by the worker's
threads: a request takes the connection used last (LIFO, so that few connections stay warm
and a thread that has not asked before needs no handshake of its own), and opens one only
when every connection is busy, so a worker holds at most as many as it serves requests at
once (its threads); at most POOL_MOST stay open when idle, none idle longer than
IDLE_SECONDS (the renderer closes them after its keep-alive of 75 s). Every
request carries a grant (tiles.grant) for the account the gateway decided for, signed with
the gateway's grant key. The gateway holds no map-database credentials: what it needs for
its decisions (served tile ranges, which tiles touch which street) comes from the renderer
as tile indices, never as coordinates (`/scope`), and is re-read every SCOPE_TTL seconds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from flask import g, has_request_context, request
from werkzeug.datastructures import ETags

from auth import pki, policy
from mapserver.errors import CityGridError, Conflict, InvalidInput, NotFound, OutsideDistrict
from mapserver.settings import Settings
from tiles import grant as grants
from tiles import source
from tiles.cache import Cached
from tiles.picture import Frame
from tiles.products import Product
from tiles.street_scope import StreetIndex
from tiles.tile_grid import Level, TileGrid, TileRange
from tiles.tile_line import Reply, TileLine

if TYPE_CHECKING:
    from mapserver.cases.place import GridSpot, Place

SCOPE_TTL = 300.0  # as mapserver.services.STREETS_TTL
TIMEOUT = 30.0
POOL_MOST = 32  # idle connections kept per worker (more than gunicorn's threads: 8)
IDLE_SECONDS = 60.0  # an idle connection older than this is not used (the renderer: 75 s)
CASES = "cases"
DRAWN_MAX = 512  # overlay tiles kept by the digest of their marks
Marks = Callable[[int, int, int], Sequence[tuple[int, int, str, int]]]


class Answer(NamedTuple):
    status: int
    etag: str
    body: bytes


class RendererUnavailable(CityGridError):
    status = 503
    code = "unavailable"


class RelayedConflict(Conflict):
    """The renderer's 409 (a component changed since the person looked, say), with its
    details (the current version) passed on."""

    def __init__(self, message: str, details: Mapping[str, object]):
        super().__init__(message)
        self._details = dict(details)

    @property
    def details(self) -> dict[str, object]:
        return self._details


class RendererRefused(CityGridError):
    """The renderer refused what the gateway allowed: the two disagree (fail closed)."""

    status = 403
    code = "forbidden"


def current_asker() -> source.Asker:
    asking = source.ASKING.get()
    return asking.asker if asking is not None else g.identity


def client_etags() -> ETags:
    """The versions the client says it holds (If-None-Match), passed on to the renderer."""
    asking = source.ASKING.get()
    if asking is not None:
        return asking.etags
    return request.if_none_match if has_request_context() else ETags()


class Line(Protocol):
    """A kept-alive connection to the renderer that exchanges one request at a time."""

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Reply: ...

    def close(self) -> None: ...


class AppLine:
    """A connection to the renderer's app (`http.client`: any method, bodies)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float):
        self.conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)

    def exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Reply:
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return Reply(response.status, response.getheader("ETag") or "", data, response.will_close)

    def close(self) -> None:
        self.conn.close()


class Connections:
    """Kept-alive connections to one address of the renderer, shared by a worker's threads
    (module docstring: the one used last first, a new one only when all are busy)."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext,
        line: Callable[[str, int, ssl.SSLContext, float], Line] = AppLine,
    ):  # fmt: skip
        self.host, self.port, self.context, self.line = host, port, context, line
        # kept alive, with when each was released: the one used last at the end
        self._idle: list[tuple[float, Line]] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far (each a TLS handshake)

    def take(self, fresh: bool = False) -> Line:
        """The idle connection used last, or a new one when all are busy, all idle ones are
        older than IDLE_SECONDS or `fresh` is asked for (after a kept-alive one failed)."""
        stale: list[tuple[float, Line]] = []
        with self._lock:
            if self._idle and not fresh and self._idle[-1][0] > time.monotonic() - IDLE_SECONDS:
                return self._idle.pop()[1]
            stale, self._idle = self._idle, []  # the rest is older still, or as suspect
            self.opened += 1
        for _, conn in stale:
            conn.close()
        return self.line(self.host, self.port, self.context, TIMEOUT)

    def give(self, conn: Line) -> None:
        """Back to the pool once its answer is read (closed if too many are idle)."""
        with self._lock:
            if len(self._idle) < POOL_MOST:
                self._idle.append((time.monotonic(), conn))
                return
        conn.close()


def _address(url: str, setting: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput(f"{setting} must be https://HOST:PORT")
    return parts.hostname, parts.port or 443


class RemoteTiles:
    def __init__(
        self,
        url: str,
        context: ssl.SSLContext,
        signer: grants.Signer,
        asker: Callable[[], source.Asker] = current_asker,
        known_etags: Callable[[], ETags] = client_etags,
        tile_url: str = "",
        locale: str = "zh-CN",
    ):
        self.host, self.port = _address(url, "renderer_url")
        self.locale = locale  # the install's language: the maps' titles
        self.context = context
        self.connections = Connections(self.host, self.port, context)
        # Tiles on the renderer's tile channel (tiles.tile_channel) where it has one.
        self.tile_connections = (
            Connections(*_address(tile_url, "renderer_tile_url"), context, TileLine)
            if tile_url
            else self.connections
        )
        self.signer = signer
        self.asker = asker
        self.known_etags = known_etags
        self._scope: tuple[float, dict[str, Any], StreetIndex] | None = None
        self._lock = threading.Lock()
        self._levels: tuple[int, tuple[Level, ...]] | None = None
        # The cases overlay: the gateway's cases on a tile (mapserver.cases.on_map.marks_near),
        # drawn by the renderer; its tiles kept here by the marks' digest.
        self.marks: Marks | None = None
        self._drawn: OrderedDict[str, bytes] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteTiles:
        cert = Path(settings.renderer_client_cert or settings.pki_dir / "service" / "gateway.crt")
        key = Path(settings.renderer_client_key or settings.pki_dir / "service" / "gateway.key")
        grant_key = Path(settings.grant_key or settings.pki_dir / "grant" / "grant.key")
        ca = settings.pki_dir / "ca.crt"
        for path in (cert, key, grant_key, ca):
            if not path.is_file():
                raise CityGridError(f"two zones: {path.name} is missing (see README)")
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
        leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
        signer = grants.Signer(grants.load_private(grant_key), pki.thumbprint(leaf))
        return cls(
            settings.renderer_url, context, signer, tile_url=settings.renderer_tile_url,
            locale=settings.locale,
        )  # fmt: skip

    # -- the wire

    def _ask(
        self, method: str, path: str, token: str, body: bytes | None = None,
        headers: dict[str, str] | None = None, via: Connections | None = None,
    ) -> Answer:  # fmt: skip
        sent = {"Authorization": f"Bearer {token}", **(headers or {})}
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        pool = via or self.connections
        for attempt in (1, 2):  # a kept-alive connection the renderer closed: once more
            conn = pool.take(fresh=attempt == 2)
            try:
                reply = conn.exchange(method, path, body, sent)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if attempt == 2:
                    raise RendererUnavailable("the renderer is unreachable; try later") from exc
            else:
                if reply.will_close:
                    conn.close()
                else:
                    pool.give(conn)
                return Answer(reply.status, reply.etag, reply.body)
        raise AssertionError("unreachable")

    def _checked(self, response: Answer) -> None:
        if response.status in (200, 304):
            return
        try:
            doc = json.loads(response.body)
            message = str(doc.get("message", ""))
        except (ValueError, AttributeError):
            doc, message = {}, ""
        if response.status == 409:
            details = {k: v for k, v in doc.items() if k not in ("error", "message")}
            raise RelayedConflict(message or "conflict", details)
        if response.status == 404:
            raise NotFound(message or "not found")
        if response.status == 400:
            if doc.get("error") == OutsideDistrict.code:
                raise OutsideDistrict(message)
            raise InvalidInput(message or "refused by the renderer")
        if response.status in (401, 403):
            raise RendererRefused(f"refused by the renderer: {message or response.status}")
        raise RendererUnavailable(f"the renderer answered {response.status}; try later")

    def _grant(self, products: Sequence[str], level: int) -> str:
        who = self.asker()
        streets = frozenset(who.streets) if policy.street_scoped(who.roles) else None
        return self.signer.token(grants.Grant(who.account, tuple(products), level, streets))

    def _service_grant(self) -> str:
        """The gateway's own grant, for `/scope` (tile indices of the whole district)."""
        return self.signer.token(grants.Grant("gateway", (), -1, None))

    # -- what the gateway needs for its decisions

    def scope(self) -> tuple[dict[str, Any], StreetIndex]:
        held = self._scope
        if held is not None and held[0] > time.monotonic():
            return held[1], held[2]
        with self._lock:
            held = self._scope
            if held is None or held[0] <= time.monotonic():
                response = self._ask("GET", "/scope", self._service_grant())
                self._checked(response)
                doc = json.loads(response.body)
                index = StreetIndex(
                    {
                        code: {
                            int(z): {int(y): tuple(map(tuple, row)) for y, row in rows.items()}
                            for z, rows in levels.items()
                        }
                        for code, levels in doc["streets"].items()
                    }
                )
                held = (time.monotonic() + SCOPE_TTL, doc, index)
                self._scope = held
        return held[1], held[2]

    @property
    def files(self) -> Path | None:
        return None

    def product(self, name: str) -> Product:
        return source.product(name)

    def levels(self) -> tuple[Level, ...]:
        """The levels of the renderer's matrix (scales and sizes, the same whatever the
        origin: the gateway never learns it)."""
        top = int(self.scope()[0]["top_tiles"])
        held = self._levels
        if held is None or held[0] != top:
            held = (top, TileGrid(0.0, 0.0, top).levels)
            self._levels = held
        return held[1]

    def scale_of(self, z: int) -> int | None:
        levels = self.levels()
        return levels[z].scale if 0 <= z < len(levels) else None

    def served_range(self, product: Product, z: int) -> TileRange | None:
        found = self.scope()[0]["served"].get(product.name, {}).get(str(z))
        return TileRange(z, *found) if found else None

    def descriptor(
        self, name: str, sees: source.Sees = lambda scale: True, within: source.Within | None = None
    ) -> dict[str, Any]:
        return source.describe(name, self.levels(), self.served_range, sees, within, self.locale)

    def street_index(self) -> StreetIndex | None:
        return self.scope()[1]

    # -- tiles, pictures, identify

    def identify(
        self, name: str, z: int, x: int, y: int, col: int, row: int
    ) -> dict[str, Any] | None:
        self.product(name)
        path = f"/identify/{name}/{z}/{x}/{y}?col={int(col)}&row={int(row)}"
        response = self._ask("GET", path, self._grant([name], z))
        self._checked(response)
        found = json.loads(response.body).get("found")
        return found if isinstance(found, dict) else None

    def cached(self, name: str, z: int, x: int, y: int, read: bool = True) -> Cached:
        self.product(name)
        if name == CASES and self.marks is not None:
            return self._cases_tile(z, x, y)
        path, grant = f"/tile/{name}/{z}/{x}/{y}.png", self._grant([name], z)
        known = self.known_etags()
        if known:  # the client holds a version: the renderer answers 304, without bytes, if same
            sent = {"If-None-Match": known.to_header()}
            response = self._ask("GET", path, grant, headers=sent, via=self.tile_connections)
            self._checked(response)
            etag = response.etag.strip('"')
            if response.status == 304 and etag and etag in known:
                return Cached(Path(path[len("/tile/") :]), etag, 0, b"")
            if response.status == 200:
                return Cached(Path(path[len("/tile/") :]), etag, len(response.body), response.body)
        response = self._ask("GET", path, grant, via=self.tile_connections)
        self._checked(response)
        data = response.body
        etag = response.etag.strip('"')
        return Cached(Path(f"{name}/{z}/{x}/{y}.png"), etag, len(data), data)

    def picture(
        self, products: Sequence[str], frame: Frame, hidden: Iterable[tuple[int, int]] = ()
    ) -> bytes:
        body = json.dumps(
            {"products": list(products), "frame": list(frame), "hidden": [list(t) for t in hidden]}
        ).encode()
        response = self._ask("POST", "/picture", self._grant(products, frame.z), body)
        self._checked(response)
        return response.body

    def post(
        self, path: str, products: Sequence[str], body: bytes, headers: dict[str, str] | None = None
    ) -> bytes:
        """POST `body` to the renderer at `path` under the asker's grant for `products` at the
        finest level; the answer's body (a refusal raised as the renderer's status says)."""
        token = self._grant(products, len(self.levels()) - 1)
        response = self._ask("POST", path, token, body, headers)
        self._checked(response)
        return response.body

    # -- the case workflow's map parts (tiles.renderer_work answers them)

    def _finest_grant(self) -> str:
        return self._grant([CASES], len(self.levels()) - 1)

    def place(
        self, spec: Mapping[str, Any], allow_gps: bool = False, anywhere: bool = False
    ) -> Place:
        from mapserver.cases.place import from_wire

        body = json.dumps({"spec": spec, "gps": allow_gps}).encode()
        token = self._finest_grant()
        if anywhere:  # the gateway decided: a district-wide submission, whoever sends it
            finest = len(self.levels()) - 1
            grant = grants.Grant(self.asker().account, (CASES,), finest, None)
            token = self.signer.token(grant)
        response = self._ask("POST", "/place", token, body)
        self._checked(response)
        return from_wire(json.loads(response.body))

    def unit_grid(self, code: str) -> GridSpot | None:
        from mapserver.cases.place import GridSpot

        if not (code.isascii() and code.isdigit()) or len(code) > 15:
            raise InvalidInput("a unit grid code is 14 or 15 digits")
        response = self._ask("GET", f"/grid/{code}", self._finest_grant())
        if response.status == 404:
            return None
        self._checked(response)
        doc = json.loads(response.body)
        centre, box = tuple(map(int, doc["centre"])), tuple(map(int, doc["box"]))
        return GridSpot(str(doc["street"]), centre, box)  # type: ignore[arg-type]

    def areas(self) -> dict[str, Any]:
        """The map's streets, communities and unit grids as codes, names and areas (the
        gateway's own grant; mapserver.cases.areas.sync)."""
        response = self._ask("GET", "/areas", self._service_grant())
        self._checked(response)
        doc: dict[str, Any] = json.loads(response.body)
        return doc

    def cases_changed(self, pixel: Mapping[str, int]) -> int:
        """Nothing cached to drop: overlay tiles are drawn from the marks they show."""
        return 0

    def _cases_tile(self, z: int, x: int, y: int) -> Cached:
        assert self.marks is not None
        marks = [list(m) for m in self.marks(z, x, y)]
        etag = hashlib.sha256(json.dumps([z, x, y, marks]).encode()).hexdigest()[:32]
        kept = f"{etag} {self.asker().account}"  # each account's tiles checked by the renderer
        data = self._drawn.get(kept)
        if data is None:
            body = json.dumps({"marks": marks}).encode()
            path = f"/overlay/cases/{z}/{x}/{y}.png"
            response = self._ask("POST", path, self._grant([CASES], z), body)
            self._checked(response)
            data = response.body
            with self._lock:
                self._drawn[kept] = data
                while len(self._drawn) > DRAWN_MAX:
                    self._drawn.popitem(last=False)
        return Cached(Path(f"{CASES}/{z}/{x}/{y}.png"), etag, len(data), data)

    def hotspot(
        self, name: str, z: int, x: int, y: int, counts: Callable[[], Mapping[str, int]]
    ) -> bytes:
        path = f"/hotspot/{name}/{z}/{x}/{y}.png"
        token = self._grant(["hotspot"], z)
        response = self._ask("GET", path, token)
        if response.status == 409:  # no fresh tile there: our counts, to draw it
            body = json.dumps({"counts": dict(counts())}).encode()
            response = self._ask("POST", path, token, body)
        self._checked(response)
        return response.body
