"""Cases on the map: the `cases` overlay's state groups, dropping its cached tiles around a
case that was created or changed state, and the viewer's click on a case.

The overlay itself is a tile product like any other (styles/cases.xml, drawn by Mapnik as
the read-only map role; which cases show and in which group is migration 0013's
`case_map_group`). A click answers numbers, states and class names of the cases under the
pixel that the asker may see (the same scope as the case list); never a coordinate.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psycopg
from flask import Blueprint, Response, jsonify, request
from psycopg import sql

from audit.notes import note
from auth import policy
from auth.access import ScopeContext, requires
from auth.gateway import identity
from mapserver.cases import place, reading
from mapserver.errors import InvalidInput, NotFound
from mapserver.services import Services, services
from tiles.scope import tile_request
from tiles.tile_grid import TILE_PX, TileGrid
from webclient.messages import translate

if TYPE_CHECKING:
    from tiles.service import TileService
    from tiles.source import Tiles

log = logging.getLogger("citygrid.cases")

PRODUCT = "cases"
# State group → its name in the viewer and the states in it; the database's case_map_group()
# must say the same (a test holds them equal). Rejected and cancelled cases are not drawn.
GROUPS: dict[str, tuple[str, frozenset[str]]] = {
    "open": ("待受理立案", frozenset({"reported", "accepted", "filed", "suspended"})),
    "handling": ("处置中", frozenset({"dispatched", "handling"})),
    "checking": ("待核查", frozenset({"handled", "feedback", "checking"})),
    "closed": ("已结案（30 天内）", frozenset({"closed"})),
}
GROUP_OF = {state: group for group, (_, states) in GROUPS.items() for state in states}
EXPIRE_PX = 10  # half the largest symbol (14 px and its ring) plus rounding: tiles it touches
PICK_PX = 9  # a click this close to a case's point picks it
MAX_PICKED = 10

bp = Blueprint("case_map", __name__, url_prefix="/map")
_INT = re.compile(r"^(0|[1-9][0-9]{0,6})\Z")


def pixel_of_case(conn: psycopg.Connection, grid: TileGrid, number: str) -> dict[str, int]:
    """Where case `number` shows in the finest level's pictures (read inside the change's
    transaction, handed to `expire` after it commits)."""
    row = conn.execute(
        "SELECT ST_X(geom), ST_Y(geom) FROM city_case WHERE number = %s", (number,)
    ).fetchone()
    assert row is not None, f"case {number} was just written"
    return place.pixel_of(grid, float(row[0]), float(row[1]))._asdict()


def expire(tiles: TileService, pixel: Mapping[str, int]) -> int:
    """Drop the cached overlay tiles around a case at `pixel` (a case's place in the finest
    level's pictures, as every case answer gives it); call after the change committed.

    A failure to drop is logged, never raised: the change is committed, and the overlay's
    tiles expire by themselves within the product's max_age.
    """
    try:
        x, y = tiles.grid.ground(
            pixel["level"], pixel["x"], pixel["y"], pixel["col"] + 0.5, pixel["row"] + 0.5
        )
        return tiles.invalidate_point(PRODUCT, x, y, EXPIRE_PX)
    except OSError as exc:
        log.warning("cases overlay tiles not dropped: %s", exc.strerror or type(exc).__name__)
        return 0


def redraw(tiles: Tiles, pixel: Mapping[str, int]) -> None:
    """After a case's change committed: redraw the overlay around it. A failure costs a
    stale picture for at most the product's max_age, never the answer of a change that is
    done and logged."""
    try:
        tiles.cases_changed(pixel)
    except Exception:  # noqa: BLE001 - the change stands; its answer must say so
        log.exception("cases overlay not redrawn")


def _index(args: Mapping[str, str], name: str, upper: int | None = None) -> int:
    raw = args.get(name, "")
    if not _INT.match(raw):
        raise InvalidInput(f"{name} must be a non-negative integer")
    value = int(raw)
    if upper is not None and value >= upper:
        raise InvalidInput(f"{name} must be below {upper}")
    return value


def _scope(
    ctx: ScopeContext, view_args: Mapping[str, Any], args: Mapping[str, str]
) -> policy.Request:
    """Reading cases, on the overlay's tile under the pixel: its scale and streets decide."""
    z, x, y = (_index(args, k) for k in ("level", "x", "y"))
    return tile_request("case.read", ctx, PRODUCT, z, x, y)


def pixel_columns(found: Services) -> tuple[sql.Composable, sql.Composable]:
    """SQL of a case's finest global pixel: kept with it; in one process, for a case written
    before pixels were kept, found from its point with this process's grid."""
    if found.settings.renderer_url:  # two zones: every case here was written with its pixel
        return sql.SQL("c.pixel_x"), sql.SQL("c.pixel_y")
    grid = found.tiles().grid
    res = sql.Literal(grid.levels[-1].resolution)
    return (
        sql.SQL("coalesce(c.pixel_x, floor((ST_X(c.geom) - {}) / {}))").format(
            sql.Literal(grid.origin_x), res
        ),
        sql.SQL("coalesce(c.pixel_y, floor(({} - ST_Y(c.geom)) / {}))").format(
            sql.Literal(grid.origin_y), res
        ),
    )


def near_pixel(found: Services, gx: float, gy: float, radius: float) -> sql.Composable:
    """SQL: a case (its pixel's centre) within `radius` finest pixels of point (gx, gy) of
    the finest level's pixel matrix."""
    px, py = pixel_columns(found)
    return sql.SQL("({px} + 0.5 - {gx}) ^ 2 + ({py} + 0.5 - {gy}) ^ 2 <= {r} ^ 2").format(
        px=px, py=py, gx=sql.Literal(float(gx)), gy=sql.Literal(float(gy)),
        r=sql.Literal(float(radius)),
    )  # fmt: skip


def marks_near(found: Services, z: int, x: int, y: int) -> list[tuple[int, int, str, int]]:
    """The cases the overlay draws on tile z/x/y (and so far around it that their symbols
    reach it): their finest pixels, state groups and whether overdue, in the style's order.
    For a renderer of two zones, which draws the gateway's cases from these."""
    finest = len(services().tile_source().levels()) - 1
    k = 2 ** (finest - z)
    side, margin = TILE_PX * k, EXPIRE_PX * k
    px, py = pixel_columns(found)
    # Past MAX_MARKS (a coarse tile of a busy district), the overdue and the unfinished are
    # kept before the closed; then drawn in the style's order, the overdue last, on top.
    query = sql.SQL(
        """SELECT gx, gy, grp, overdue FROM (
               SELECT gx, gy, grp, overdue, id FROM (
                   SELECT {px} AS gx, {py} AS gy, case_map_group(c.state, c.closed_at) AS grp,
                          case_overdue(c.state, c.stage_deadline)::int AS overdue, c.id
                   FROM city_case c
                   WHERE {px} BETWEEN %(x0)s AND %(x1)s AND {py} BETWEEN %(y0)s AND %(y1)s) m
               WHERE grp IS NOT NULL
               ORDER BY overdue DESC, (grp = 'closed'), id DESC LIMIT %(most)s) kept
           ORDER BY (grp = 'closed') DESC, overdue, id"""
    ).format(px=px, py=py)
    bounds = {
        "x0": x * side - margin, "x1": (x + 1) * side + margin,
        "y0": y * side - margin, "y1": (y + 1) * side + margin, "most": MAX_MARKS,
    }  # fmt: skip
    with found.pool.connection() as conn:
        rows = conn.execute(query, bounds).fetchall()
    return [(int(a), int(b), str(g), int(o)) for a, b, g, o in rows]


MAX_MARKS = 5000  # cases drawn on one overlay tile at most (a renderer refuses more)


def _served(tiles: Tiles, z: int, x: int, y: int) -> None:
    for level in tiles.descriptor(PRODUCT)["levels"]:
        t = level["tiles"]
        if level["level"] == z and t["x_min"] <= x <= t["x_max"] and t["y_min"] <= y <= t["y_max"]:
            return
    raise NotFound(f"tile {z}/{x}/{y} is outside map {PRODUCT}")


@bp.get("/cases")
@requires("case.read", _scope)
def cases_at() -> Response:
    """The cases drawn under a pixel of the overlay (level, x, y, col, row) that the asker
    may see: numbers, states, classes and where to open them. Counted in the finest level's
    pixels, so the same where the map's origin is not known (a gateway of two zones)."""
    args = request.args
    z, x, y = (_index(args, k) for k in ("level", "x", "y"))
    col, row = _index(args, "col", TILE_PX), _index(args, "row", TILE_PX)
    found = services()
    tiles = found.tile_source()
    _served(tiles, z, x, y)
    note(resource=f"cases at {PRODUCT}/{z}/{x}/{y}")
    finest = len(tiles.levels()) - 1
    k = 2 ** (finest - z)
    gx, gy = (x * TILE_PX + col + 0.5) * k, (y * TILE_PX + row + 0.5) * k
    near = sql.SQL("{} AND case_map_group(c.state, c.closed_at) IS NOT NULL").format(
        near_pixel(found, gx, gy, PICK_PX * k)
    )
    with found.pool.connection() as conn:
        # The case list's own scope (streets, a bureau's cases), so a click shows no more.
        listed = reading.listing(conn, found, identity(), {"per_page": str(MAX_PICKED)}, extra=near)
    cases = []
    for case in listed["cases"]:
        group = GROUP_OF[case["state"]]
        cases.append(
            {
                "number": case["number"],
                "state": case["state"],
                "state_name": translate(found.settings.locale, f"state.{case['state']}"),
                "group": group,
                "group_name": translate(found.settings.locale, f"case_group.{group}"),
                "overdue": case["overdue"],
                "kind": case["kind"],
                "class": case["class"]["name"],
                "grid": case["grid"],
                "href": f"/inbox/{case['number']}",
            }
        )
    return jsonify(cases=cases, more=listed["total"] > len(cases))
