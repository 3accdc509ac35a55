"""The map picture for a device's small screen (`GET /device/v1/map`): one PNG of the area
around a case (or a unit grid), with the case and the inspector's other tasks marked, and
the marks' places in that picture's pixels (`CityGrid-Marks`), never a coordinate.

The scale is the finest level at which the case's unit grid fits the screen; the picture is
drawn where the map is (tiles.source.Tiles.picture: in this process, or the renderer of two
zones; base map by scale, the grids overlay), covered outside the tiles of the asker's
streets (the same rule as for tiles), marked here with Pillow. A picture is kept
in memory for a minute under a key of everything that went into it, so that a device asking
again with its ETag gets a 304 without a render.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import psycopg
from PIL import Image, ImageDraw
from psycopg import sql

from auth import policy
from auth.identity import Identity
from mapserver.cases import on_map, reading
from mapserver.device import tasks
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import Services
from tiles import picture
from tiles.picture import Frame
from tiles.tile_grid import BBox, Level, TileGrid

MIN_PX, MAX_PX = 120, 1080
MARK_RADIUS = 8
CASE_RGB = (228, 0, 43)  # the case the picture is of
TASK_RGB = (31, 111, 235)  # the inspector's other tasks
OUTLINE_RGB = (255, 255, 255)
AROUND_M = 50.0  # what a case without a unit grid must show around it
KEEP_S = 60.0  # a picture is kept this long (cases turn overdue, the map is re-imported)
KEEP_MAX = 32
_SIDE = re.compile(r"^[1-9][0-9]{0,3}\Z")
_GRID = re.compile(r"^[0-9]{14,15}\Z")


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


# -- the plan (database, and the map where it is)
#
# Planned in the finest level's pixels, counted from the grid's origin: the same whether the
# origin is known here (one process) or only to the renderer (two zones). `_plane` is that
# pixel matrix as a grid whose origin is (0, 0); frames and marks come out the same as on
# the install's own grid, since levels share their origin and halve their resolution.


def _plane(levels: Sequence[Level]) -> TileGrid:
    return TileGrid(0.0, 0.0, levels[0].matrix_width, tuple(lv.scale for lv in levels))


def _ground(plane: TileGrid, gx: float, gy: float) -> tuple[float, float]:
    """A point of the finest pixel matrix on the plane (pixel centres at +0.5)."""
    res = plane.levels[-1].resolution
    return gx * res, -gy * res


def _box(plane: TileGrid, box: tuple[int, int, int, int]) -> BBox:
    (minx, maxy), (maxx, miny) = (
        _ground(plane, box[0], box[1]),
        _ground(plane, box[2] + 1, box[3] + 1),
    )
    return BBox(minx, miny, maxx, maxy)


def _target(
    conn: psycopg.Connection, found: Services, who: Identity, ask: Ask, plane: TileGrid
) -> tuple[tuple[float, float], BBox]:
    """The point to centre on and the area the picture must hold, within the asker's scope
    (404 for what is missing or not the asker's alike)."""
    tiles = found.tile_source()
    if ask.case is not None:
        reading.require_visible(conn, ask.case, who)  # the case list's scope
        gx, gy = _case_pixels(conn, found, [ask.case])[ask.case]
        x, y = _ground(plane, gx + 0.5, gy + 0.5)
        holds = BBox(x, y, x, y).buffered(AROUND_M)
        spot = tiles.unit_grid(_grid_of(conn, ask.case))
        if spot is not None:
            holds = _box(plane, spot.box)
        return (x, y), holds
    assert ask.grid is not None
    spot = tiles.unit_grid(ask.grid)
    if spot is None or (policy.street_scoped(who.roles) and spot.street not in who.streets):
        raise NotFound(f"no unit grid {ask.grid}")
    return _ground(plane, spot.centre[0] + 0.5, spot.centre[1] + 0.5), _box(plane, spot.box)


def _grid_of(conn: psycopg.Connection, number: str) -> str:
    row = conn.execute("SELECT grid_code FROM city_case WHERE number = %s", (number,)).fetchone()
    assert row is not None, "the case was just seen"
    return str(row[0])


def _case_pixels(
    conn: psycopg.Connection, found: Services, numbers: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """The finest pixels of cases (mapserver.cases.on_map.pixel_columns)."""
    px, py = on_map.pixel_columns(found)
    rows = conn.execute(
        sql.SQL("SELECT c.number, {}, {} FROM city_case c WHERE c.number = ANY(%s)").format(px, py),
        (list(numbers),),
    ).fetchall()
    return {str(n): (int(x), int(y)) for n, x, y in rows}


def _task_points(
    conn: psycopg.Connection, found: Services, who: Identity
) -> list[tuple[str, int, int]]:
    numbers = [t["number"] for t in tasks.load(conn, found, who)]
    pixels = _case_pixels(conn, found, numbers)
    return [(n, *pixels[n]) for n in sorted(pixels)]


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
    plane = _plane(found.tile_source().levels())
    centre, holds = _target(conn, found, who, ask, plane)
    scales = _scales(who, plane)
    if not scales:
        raise policy.Forbidden("not allowed: no map scale to draw")
    frame = picture.fit(plane, centre, holds, ask.width, ask.height, scales)
    shown = _shown(found, who, frame.z)
    hidden = tuple(t for t in frame.tiles().tiles() if not shown(*t))
    points: list[tuple[str, str, float, float]] = [
        (number, "task", *_ground(plane, gx + 0.5, gy + 0.5))
        for number, gx, gy in _task_points(conn, found, who)
        if number != ask.case
    ]
    if ask.case is not None:
        points.insert(0, (ask.case, "case", *centre))
    marks = []
    for number, kind, x, y in points:
        at = frame.pixel(plane, x, y)
        if at is not None and frame.tile_at(*at) not in hidden:
            marks.append(Mark(number, kind, *at))
    return Plan(frame, picture.products_at(plane.level(frame.z).scale), hidden, tuple(marks))


def _shown(found: Services, who: Identity, z: int) -> Callable[[int, int], bool]:
    """Street scope on pictures: a tile of level z shows only if it meets one of the asker's
    streets (the tiles' own rule), for the roles that see only their streets."""
    if not policy.street_scoped(who.roles):
        return lambda x, y: True
    streets = found.streets()
    own = frozenset(who.streets)
    return lambda x, y: bool(streets.streets_of_tile(z, x, y) & own)


# -- the picture (Mapnik where the map is, Pillow here)


def draw(found: Services, planned: Plan) -> bytes:
    """The plan's frame drawn where the map is, its hidden tiles covered (there too), its
    marks drawn here, encoded clean."""
    data = found.tile_source().picture(planned.products, planned.frame, planned.hidden)
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
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
