"""The duplicate hint: open cases of the same class close to a case in place and time, so an
operator can cancel a second complaint about the same overflowing bin as a duplicate.

Computed inside the secure zone (PostGIS ST_DWithin on the cases' points, which stay there),
or on a gateway of two zones, whose cases keep no point, on their pixels of the finest level
(`pixel_m` metres each); what leaves is case numbers and states only.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg import sql

from mapserver.cases import flow

_EVERY_CASE = sql.SQL("true")
RADIUS_M = 50.0  # the install's CRS is projected in metres (README "Architecture")
WINDOW = dt.timedelta(hours=24)
LIMIT = 20


def nearby(
    conn: psycopg.Connection,
    case_id: int,
    scope: sql.Composable = _EVERY_CASE,
    scope_values: list[object] | None = None,
    pixel_m: float = 0.14,
) -> list[dict[str, str]]:
    """Open cases (other than `case_id`) of its kind and class within RADIUS_M and WINDOW of
    its creation, nearest in time first, limited to those `scope` lets the asker see."""
    rows = conn.execute(
        sql.SQL(
            """SELECT c.number, c.state
               FROM city_case me
               JOIN city_case c
                 ON c.id <> me.id
                AND c.kind = me.kind AND c.major = me.major AND c.minor = me.minor
                AND (ST_DWithin(c.geom, me.geom, %s)
                     OR ((c.geom IS NULL OR me.geom IS NULL)
                         AND (c.pixel_x - me.pixel_x) ^ 2 + (c.pixel_y - me.pixel_y) ^ 2
                             <= (%s / %s) ^ 2))
                AND c.created_at BETWEEN me.created_at - %s AND me.created_at + %s
               WHERE me.id = %s AND c.state = ANY(%s) AND {}
               ORDER BY abs(extract(epoch FROM c.created_at - me.created_at)), c.id
               LIMIT %s"""
        ).format(scope),
        [
            RADIUS_M,
            RADIUS_M,
            pixel_m,
            WINDOW,
            WINDOW,
            case_id,
            sorted(flow.OPEN),
            *(scope_values or []),
            LIMIT,
        ],
    ).fetchall()
    return [{"number": number, "state": state} for number, state in rows]
