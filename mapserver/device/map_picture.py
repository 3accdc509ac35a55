"""The map picture for a device's small screen (`GET /device/v1/map`): one PNG of the area
around a case (or a unit grid), with the case and the inspector's other tasks marked, and
the marks' places in that picture's pixels (`CityGrid-Marks`), never a coordinate.

The scale is the finest level at which the case's unit grid fits the screen; the picture is
drawn by tiles.picture (base map by scale, the grids overlay), covered outside the tiles of
the asker's streets (the same rule as for tiles), marked here with Pillow. A picture is kept
in memory for a minute under a key of everything that went into it, so that a device asking
again with its ETag gets a 304 without a render.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import psycopg
from PIL import Image, ImageDraw

from auth import policy
from auth.identity import Identity
from mapserver.cases import reading
from mapserver.device import tasks
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import Services
from tiles import picture
from tiles.picture import Frame
from tiles.tile_grid import BBox, TileGrid

MIN_PX, MAX_PX = 120, 1080
MARK_RADIUS = 8
CASE_RGB = (228, 0, 43)  # the case the picture is of
TASK_RGB = (31, 111, 235)  # the inspector's other tasks
OUTLINE_RGB = (255, 255, 255)
AROUND_M = 50.0  # what a case without a unit grid must show around it
KEEP_S = 60.0  # a picture is kept this long (cases turn overdue, the map is re-imported)
KEEP_MAX = 32
_SIDE = re.compile(r"^[1-9]\d{0,3}$")
_GRID = re.compile(r"^\d{14,15}$")


class Ask(NamedTuple):
    """What the device asked: a case number or a unit grid code, and its screen."""

    case: str | None
    grid: str | None
    width: int
    height: int


class Mark(NamedTuple):
    number: str
    kind: str  # "case" (the picture's case) or "task"
    col: int
    row: int


class Plan(NamedTuple):
    """Everything a picture is drawn from (its key, and so its ETag, derive from it)."""

    frame: Frame
    products: tuple[str, ...]
    hidden: tuple[tuple[int, int], ...]  # tiles of the frame's level covered over
    marks: tuple[Mark, ...]

    def key(self, install: str) -> str:
        return hashlib.sha256(repr((install, self)).encode()).hexdigest()


def _side(args: Mapping[str, str], name: str) -> int:
    raw = args.get(name, "")
    value = int(raw) if _SIDE.match(raw) else 0
    if not MIN_PX <= value <= MAX_PX:
        raise InvalidInput(f"{name} must be a whole number of pixels from {MIN_PX} to {MAX_PX}")
    return value


def parse(args: Mapping[str, str]) -> Ask:
    """`case=NUMBER` or `grid=CODE` (exactly one), `w` and `h` in pixels."""
    case, grid = args.get("case"), args.get("grid")
    if (case is None) == (grid is None):
        raise InvalidInput("ask for a picture of exactly one of case=NUMBER or grid=CODE")
    if case is not None and not reading.NUMBER.match(case):
        raise InvalidInput("case must be a case number such as 2026-000123")
    if grid is not None and not _GRID.match(grid):
        raise InvalidInput("grid must be a unit grid code")
    return Ask(case, grid, _side(args, "w"), _side(args, "h"))


def header(marks: Sequence[Mark]) -> str:
    """`NUMBER:col,row` per mark, `;`-separated, the picture's case first."""
    return ";".join(f"{m.number}:{m.col},{m.row}" for m in marks)


# -- the plan (database)


def _target(conn: psycopg.Connection, who: Identity, ask: Ask) -> tuple[tuple[float, float], BBox]:
    """The point to centre on and the area the picture must hold, within the asker's scope
    (404 for what is missing or not the asker's alike)."""
    if ask.case is not None:
        reading.require_visible(conn, ask.case, who)  # the case list's scope
        row = conn.execute(
            "SELECT ST_X(c.geom), ST_Y(c.geom), ST_XMin(g.geom), ST_YMin(g.geom),"
            " ST_XMax(g.geom), ST_YMax(g.geom)"
            " FROM city_case c LEFT JOIN unit_grid g ON g.code = c.grid_code"
            " WHERE c.number = %s",
            (ask.case,),
        ).fetchone()
        assert row is not None, "the case was just seen"
        x, y = float(row[0]), float(row[1])
        holds = BBox(x, y, x, y).buffered(AROUND_M)
        if row[2] is not None:
            holds = BBox(*(float(v) for v in row[2:6]))
        return (x, y), holds
    row = conn.execute(
        "SELECT ST_X(p), ST_Y(p), ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom),"
        " street_code FROM (SELECT ST_PointOnSurface(g.geom) AS p, g.geom, m.street_code"
        " FROM unit_grid g JOIN community m ON m.code = g.community_code WHERE g.code = %s) u",
        (ask.grid,),
    ).fetchone()
    if row is None or (policy.street_scoped(who.roles) and row[6] not in who.streets):
        raise NotFound(f"no unit grid {ask.grid}")
    return (float(row[0]), float(row[1])), BBox(*(float(v) for v in row[2:6]))


def _task_points(
    conn: psycopg.Connection, found: Services, who: Identity
) -> list[tuple[str, float, float]]:
    numbers = [t["number"] for t in tasks.load(conn, found, who)]
    rows = conn.execute(
        "SELECT number, ST_X(geom), ST_Y(geom) FROM city_case WHERE number = ANY(%s)"
        " ORDER BY number",
        (numbers,),
    ).fetchall()
    return [(str(n), float(x), float(y)) for n, x, y in rows]


def _scales(who: Identity, grid: TileGrid) -> list[int]:
    """The levels whose base map the asker may see."""
    return [
        s
        for s in grid.scales
        if (base := picture.products_at(s, ()))
        and policy.permitted(who.roles, policy.Request("tiles.read", base[0], s))
    ]


def plan(conn: psycopg.Connection, found: Services, who: Identity, ask: Ask) -> Plan:
    """Which frame, products, covered tiles and marks the asked picture has."""
    grid = found.tiles().grid
    centre, holds = _target(conn, who, ask)
    scales = _scales(who, grid)
    if not scales:
        raise policy.Forbidden("not allowed: no map scale to draw")
    frame = picture.fit(grid, centre, holds, ask.width, ask.height, scales)
    shown = _shown(found, who, frame.z)
    hidden = tuple(t for t in frame.tiles().tiles() if not shown(*t))
    points: list[tuple[str, str, float, float]] = [
        (number, "task", x, y)
        for number, x, y in _task_points(conn, found, who)
        if number != ask.case
    ]
    if ask.case is not None:
        points.insert(0, (ask.case, "case", *centre))
    marks = []
    for number, kind, x, y in points:
        at = frame.pixel(grid, x, y)
        if at is not None and frame.tile_at(*at) not in hidden:
            marks.append(Mark(number, kind, *at))
    return Plan(frame, picture.products_at(grid.level(frame.z).scale), hidden, tuple(marks))


def _shown(found: Services, who: Identity, z: int) -> Callable[[int, int], bool]:
    """Street scope on pictures: a tile of level z shows only if it meets one of the asker's
    streets (the tiles' own rule), for the roles that see only their streets."""
    if not policy.street_scoped(who.roles):
        return lambda x, y: True
    streets = found.streets()
    own = frozenset(who.streets)
    return lambda x, y: bool(streets.streets_of_tile(z, x, y) & own)


# -- the picture (Mapnik, Pillow)


def draw(found: Services, planned: Plan) -> bytes:
    """Render the plan's frame, cover its hidden tiles, draw its marks, encode it clean."""
    svc = found.tiles()
    source = svc.source
    if not isinstance(source, picture.PictureSource):
        raise RuntimeError("this tile service's renderer draws no pictures")
    hidden = frozenset(planned.hidden)
    image = picture.render(
        source, svc.grid, planned.frame, planned.products, lambda x, y: (x, y) not in hidden
    )
    _draw_marks(image, planned.marks)
    return picture.encode(image)


def _draw_marks(image: Image.Image, marks: Sequence[Mark]) -> None:
    """Filled circles, tasks first, the picture's case last (on top)."""
    pen = ImageDraw.Draw(image)
    for m in sorted(marks, key=lambda m: m.kind == "case"):
        r = MARK_RADIUS
        fill = CASE_RGB if m.kind == "case" else TASK_RGB
        pen.ellipse(
            (m.col - r, m.row - r, m.col + r, m.row + r), fill=fill, outline=OUTLINE_RGB, width=2
        )


# -- kept pictures


class Kept:
    """Pictures by plan key for KEEP_S seconds, at most KEEP_MAX of them (per process)."""

    def __init__(self, keep_s: float = KEEP_S, most: int = KEEP_MAX):
        self.keep_s, self.most = keep_s, most
        self._held: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], bytes]) -> bytes:
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key)
            if held is not None and held[0] > now:
                return held[1]
        data = make()  # outside the lock: two renders of one picture at worst, never a wait
        with self._lock:
            self._held = {k: v for k, v in self._held.items() if v[0] > now}
            while len(self._held) >= self.most:
                self._held.pop(next(iter(self._held)))
            self._held[key] = (now + self.keep_s, data)
        return data


def etag(data: bytes, marks: str) -> str:
    """A strong validator of the picture and its marks (a mark may hide under another)."""
    return '"' + hashlib.sha256(data + b"\n" + marks.encode()).hexdigest()[:32] + '"'


def answer_parts(found: Services, who: Identity, ask: Ask, kept: Kept) -> tuple[Plan, bytes]:
    """The plan (under a pooled connection, given back before the render) and its PNG."""
    with found.pool.connection() as conn:
        planned = plan(conn, found, who, ask)
    install = found.settings.database_url
    return planned, kept.get(planned.key(install), lambda: draw(found, planned))


PICTURES = Kept()  # this process's kept pictures (an empty dict until the first picture)
