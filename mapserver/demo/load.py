"""Writing a generated district into PostGIS: one transaction, old demo rows out, COPY in.

Every row carries origin 'demo', so a re-run deletes exactly what the last run wrote and
leaves imported data alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
import shapely
from shapely import geometry

from mapserver.demo.areas import community_code, street_code
from mapserver.demo.district import DemoDistrict
from mapserver.errors import Conflict

ORIGIN = "demo"
SURVEY_DATE = dt.date(2025, 6, 30)  # fixed, so that a re-run writes identical rows
# Children before parents, so foreign keys never see a dangling row.
DEMO_TABLES = (
    "component",
    "address",
    "annotation",
    "wall",
    "railway",
    "green",
    "water",
    "road_line",
    "road_surface",
    "building",
    "unit_grid",
    "community",
    "street",
    "district",
)


def ewkb(geoms: Sequence[Any] | np.ndarray, srid: int) -> list[str]:
    """Hex EWKB of each geometry in `srid`, what PostGIS's text input accepts in COPY."""
    arr = shapely.set_srid(np.asarray(geoms, dtype=object), srid)
    return list(shapely.to_wkb(arr, hex=True, include_srid=True))


def multi(g: Any) -> geometry.base.BaseGeometry:
    """Promote to Multi*, dropping stray parts of another dimension (from overlays)."""
    if isinstance(g, geometry.Polygon):
        return geometry.MultiPolygon([g])
    if isinstance(g, geometry.LineString | geometry.LinearRing):
        return geometry.MultiLineString([geometry.LineString(g.coords)])
    if isinstance(g, geometry.GeometryCollection) and not isinstance(
        g, geometry.MultiPolygon | geometry.MultiLineString
    ):
        polys = [p for p in g.geoms if isinstance(p, geometry.Polygon)]
        if polys:
            return geometry.MultiPolygon(polys)
        lines = [
            geometry.LineString(p.coords) for p in g.geoms if isinstance(p, geometry.LineString)
        ]
        return geometry.MultiLineString(lines)
    return g


def _copy(
    conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def refuse_if_cases(conn: psycopg.Connection) -> None:
    """Cases keep their unit grids: demo data is rebuilt only in an install without cases."""
    cases = conn.execute("SELECT count(*) FROM city_case").fetchone()
    if cases and cases[0]:
        raise Conflict(
            f"the district has {cases[0]} cases, which keep their unit grids: the demo data "
            "can only be rebuilt in an install without cases"
        )


def clear(conn: psycopg.Connection) -> None:
    refuse_if_cases(conn)
    for table in DEMO_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE origin = %s", (ORIGIN,))


def load(
    conn: psycopg.Connection,
    d: DemoDistrict,
    srid: int,
    district_name: str,
    step: Callable[[str], None] = lambda _: None,
) -> dict[str, int]:
    """Replace the demo data with `d`; the caller owns the transaction."""
    counts: dict[str, int] = {}
    step("clear")
    clear(conn)
    code = d.district_code
    lay = d.layout
    step("divisions")
    counts["district"] = _copy(
        conn,
        "district",
        ("code", "name", "geom", "origin"),
        [(code, district_name, ewkb([multi(lay.district.box())], srid)[0], ORIGIN)],
    )
    street_geoms = [shapely.union_all([r.box() for r in s.rects]) for s in lay.streets]
    counts["street"] = _copy(
        conn,
        "street",
        ("code", "district_code", "name", "geom", "origin"),
        [
            (street_code(code, s.code), code, s.name, g, ORIGIN)
            for s, g in zip(lay.streets, ewkb([multi(g) for g in street_geoms], srid), strict=True)
        ],
    )
    counts["community"] = _copy(
        conn,
        "community",
        ("code", "street_code", "name", "geom", "origin"),
        [
            (community_code(code, c), street_code(code, c.street_code), c.name, g, ORIGIN)
            for c, g in zip(
                lay.communities,
                ewkb([multi(c.rect.box()) for c in lay.communities], srid),
                strict=True,
            )
        ],
    )
    offices = {street_code(code, s.code): f"{s.name}办事处" for s in lay.streets}
    responsible = {
        community_code(code, c): offices[street_code(code, c.street_code)] for c in lay.communities
    }
    counts["unit_grid"] = _copy(
        conn,
        "unit_grid",
        (
            "code",
            "community_code",
            "area_m2",
            "land_use",
            "management_level",
            "responsible",
            "geom",
            "origin",
        ),
        [
            (
                g.code,
                g.community_code,
                g.rect.area,
                "城市建设用地",
                "区级",
                responsible[g.community_code],
                wkb,
                ORIGIN,
            )
            for g, wkb in zip(
                d.grids, ewkb([multi(g.rect.box()) for g in d.grids], srid), strict=True
            )
        ],
    )
    step("organisations")
    _organisations(conn, d, offices)
    step("basemap")
    counts.update(_basemap(conn, d, srid))
    step("load_addresses")
    a = d.addresses
    full = [
        f"{r}{n}号" if k == "house" else nm
        for k, r, n, nm in zip(a.kind, a.road, a.number, a.name, strict=True)
    ]
    counts["address"] = _copy(
        conn,
        "address",
        ("kind", "road_name", "house_number", "name", "full_text", "grid_code", "geom", "origin"),
        zip(
            a.kind,
            a.road,
            a.number,
            a.name,
            full,
            a.grid,
            ewkb(shapely.points(a.x, a.y), srid),
            [ORIGIN] * len(full),
            strict=True,
        ),
    )
    step("load_components")
    counts["component"] = _components(conn, d, srid)
    return counts


def _organisations(conn: psycopg.Connection, d: DemoDistrict, offices: dict[str, str]) -> None:
    rows: list[tuple[str, str, str, str | None, str | None]] = [
        ("district", "区政府", "district", None, None),
        ("supervision", "城市管理监督中心", "supervision_centre", None, "district"),
        ("command", "城市管理指挥中心", "command_centre", None, "district"),
    ]
    departments = conn.execute(
        "SELECT DISTINCT department FROM component_class"
        " UNION SELECT DISTINCT department FROM event_class"
    ).fetchall()
    for i, (dept,) in enumerate(sorted(departments), start=1):
        if dept:
            rows.append((f"bureau-{i:02d}", dept, "bureau", None, "district"))
    for scode, name in offices.items():
        rows.append((f"street-{scode[-3:]}", name, "street_office", scode, "district"))
    for code, name, kind, street, parent in rows:
        conn.execute(
            """INSERT INTO organisation (code, name, kind, street_code, parent_code)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (code) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                   street_code = excluded.street_code, parent_code = excluded.parent_code""",
            (code, name, kind, street, parent),
        )


def _basemap(conn: psycopg.Connection, d: DemoDistrict, srid: int) -> dict[str, int]:
    f, g, lay = d.features, d.general, d.layout
    counts: dict[str, int] = {}
    b = f.buildings
    counts["building_500"] = _copy(
        conn,
        "building",
        ("scale", "name", "road_name", "house_number", "floors", "structure", "geom", "origin"),
        [
            (500, x.name, x.road_name, x.house_number, x.floors, x.structure, w, ORIGIN)
            for x, w in zip(b, ewkb([multi(x.geom) for x in b], srid), strict=True)
        ],
    )
    counts["building_2000"] = _copy(
        conn,
        "building",
        ("scale", "floors", "geom", "origin"),
        [
            (2000, fl, w, ORIGIN)
            for (_, fl), w in zip(
                g.buildings, ewkb([multi(s) for s, _ in g.buildings], srid), strict=True
            )
        ],
    )
    roads = [r for r in lay.roads if r.kind != "edge"]
    rows_lines, rows_surf = [], []
    for scale in (500, 2000):
        chosen = roads if scale == 500 else [r for r in roads if r.kind in g.road_kinds]
        lines = ewkb([multi(r.line()) for r in chosen], srid)
        surfs = ewkb([multi(r.surface()) for r in chosen], srid)
        rows_lines += [
            (scale, r.name, r.kind, r.width, w, ORIGIN) for r, w in zip(chosen, lines, strict=True)
        ]
        rows_surf += [(scale, r.kind, w, ORIGIN) for r, w in zip(chosen, surfs, strict=True)]
    counts["road_line"] = _copy(
        conn, "road_line", ("scale", "name", "kind", "width_m", "geom", "origin"), rows_lines
    )
    counts["road_surface"] = _copy(
        conn, "road_surface", ("scale", "kind", "geom", "origin"), rows_surf
    )
    rows: list[tuple[Any, ...]]
    for table, items_500, items_2000 in (("water", f.water, g.water), ("green", f.green, g.green)):
        rows = []
        for scale, items in ((500, items_500), (2000, items_2000)):
            geoms = ewkb([multi(x[2]) for x in items], srid)
            rows += [(scale, n, k, w, ORIGIN) for (n, k, _), w in zip(items, geoms, strict=True)]
        counts[table] = _copy(conn, table, ("scale", "name", "kind", "geom", "origin"), rows)
    rows = []
    for scale in (500, 2000):
        geoms = ewkb([multi(line) for _, line in f.railways], srid)
        rows += [(scale, n, w, ORIGIN) for (n, _), w in zip(f.railways, geoms, strict=True)]
    counts["railway"] = _copy(conn, "railway", ("scale", "name", "geom", "origin"), rows)
    geoms = ewkb([multi(w) for _, w in f.walls], srid)
    counts["wall"] = _copy(
        conn,
        "wall",
        ("scale", "kind", "geom", "origin"),
        [(500, k, w, ORIGIN) for (k, _), w in zip(f.walls, geoms, strict=True)],
    )
    rows = []
    for scale in (500, 2000):
        notes = (
            f.annotations
            if scale == 500
            else [a for a in f.annotations if a[1] in g.annotation_kinds]
        )
        geoms = ewkb(shapely.points([a[2] for a in notes], [a[3] for a in notes]), srid)
        rows += [(scale, a[0], a[1], a[4], w, ORIGIN) for a, w in zip(notes, geoms, strict=True)]
    counts["annotation"] = _copy(
        conn, "annotation", ("scale", "text", "kind", "angle", "geom", "origin"), rows
    )
    return counts


def _components(conn: psycopg.Connection, d: DemoDistrict, srid: int) -> int:
    classes = {
        (major, minor): (name, dept)
        for major, minor, name, dept in conn.execute(
            "SELECT major, minor, name, department FROM component_class"
        ).fetchall()
    }
    c = d.components
    surveyed = SURVEY_DATE
    geoms = ewkb(shapely.points(c.x, c.y), srid)
    codes = [
        f"{d.district_code}{ma}{mi}{s:06d}"
        for ma, mi, s in zip(c.major, c.minor, c.serial, strict=True)
    ]
    if c.serial.max(initial=0) > 999_999:
        raise ValueError("more than 999,999 components of one class")

    def rows():  # type: ignore[no-untyped-def]
        for code, ma, mi, state, grid, wkb in zip(
            codes, c.major, c.minor, c.state, c.grid, geoms, strict=True
        ):
            name, dept = classes[(str(ma), str(mi))]
            yield (
                code,
                name,
                str(state),
                dept,
                dept,
                dept,
                str(grid),
                "surveyed",
                surveyed,
                surveyed,
                wkb,
                ORIGIN,
            )

    return _copy(
        conn,
        "component",
        (
            "code",
            "name",
            "state",
            "responsible_dept",
            "owner_dept",
            "maintainer_dept",
            "grid_code",
            "data_source",
            "created_on",
            "changed_on",
            "geom",
            "origin",
        ),
        rows(),
    )
