"""The areas a case names, registered on a gateway of two zones.

A case references its unit grid (and, through it, its community and street), and the case
lists name them; an organisation of a street names its street. A gateway's own database
holds no map, so it registers what the renderer answered, codes, names and the grid's area,
without shapes (migration 0032's `register_case_area`, which refuses to touch a database
with map data): a case's areas when the renderer places it, or all of them at once
(`sync`, `citygrid renderer sync-areas`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from mapserver.cases.place import Place
from mapserver.errors import InvalidInput
from mapserver.settings import Settings


def register(conn: psycopg.Connection, settings: Settings, found: Place) -> None:
    """Make the place's unit grid, community and street (and its component) known here,
    without shapes (no-op where known)."""
    where = found.where
    if found.area_m2 is None or found.area_m2 <= 0:
        raise InvalidInput("the renderer's place has no unit grid area")
    conn.execute(
        "SELECT register_case_area(%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            where.street_code[:6],
            settings.district_name,
            where.street_code,
            where.street_name,
            where.community_code,
            where.community_name,
            where.grid_code,
            found.area_m2,
        ),
    )
    part = found.component
    if part is not None:  # a component case links to its component (migration 0034)
        conn.execute(
            "SELECT register_case_component(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                part.code, part.name, part.state, part.grid_code, part.responsible_dept,
                part.owner_dept, part.maintainer_dept, part.data_source, part.changed_on,
            ),
        )  # fmt: skip


def sync(conn: psycopg.Connection, settings: Settings, doc: Any) -> int:
    """Register every unit grid of the renderer's `GET /areas` answer with its community,
    street and district (known ones are kept); how many unit grids it names."""
    try:
        district = doc["district"]
        streets = {str(code): str(name) for code, name in doc["streets"]}
        communities = {str(c): (str(s), str(n)) for c, s, n in doc["communities"]}
        grids = [(str(code), str(comm), float(area)) for code, comm, area in doc["grids"]]
        name = str(district[1]) if district else settings.district_name
        rows = []
        for code, community, area in grids:
            street, community_name = communities[community]
            rows.append(
                (street[:6], name, street, streets[street], community, community_name, code, area)
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"the renderer's areas are malformed ({type(exc).__name__})") from None
    with conn.cursor() as cur:
        cur.executemany("SELECT register_case_area(%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    return len(rows)
