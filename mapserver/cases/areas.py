"""The areas a case names, registered on a gateway of two zones.

A case references its unit grid (and, through it, its community and street), and the case
lists name them. A gateway's own database holds no map, so when the renderer places a case
the gateway registers what it answered, codes, names and the grid's area, without shapes
(migration 0032's `register_case_area`, which refuses to touch a database with map data).
"""

from __future__ import annotations

import psycopg

from mapserver.cases.place import Place
from mapserver.errors import InvalidInput
from mapserver.settings import Settings


def register(conn: psycopg.Connection, settings: Settings, found: Place) -> None:
    """Make the place's unit grid, community and street known here (no-op where known)."""
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
