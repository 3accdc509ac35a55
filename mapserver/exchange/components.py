"""Component updates for the city platform: what a district tells of its changed components
(codes, classes, names, states, grids, departments, versions; never a point)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from mapserver.exchange import outbox
from mapserver.settings import Settings

_FIELDS = ("code", "major", "minor", "name", "state", "in_use", "grid_code", "responsible_dept",
           "owner_dept", "maintainer_dept", "data_source", "version")  # fmt: skip


def enqueue(
    conn: psycopg.Connection, settings: Settings, codes: Iterable[str], signed_action: int
) -> dict[str, Any] | None:
    """Queue the changed components for the city (a district in an exchange only)."""
    if settings.exchange_role != "district" or not settings.exchange_peer_url:
        return None
    rows = conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM component WHERE code = ANY(%s) ORDER BY code",  # noqa: S608
        (list(codes),),
    ).fetchall()
    items = [dict(zip(_FIELDS, r, strict=True)) for r in rows]
    for item in items:
        item["grid"] = item.pop("grid_code")
    return outbox.enqueue(
        conn, settings, kind="component.update", content={"components": items},
        signed_action=signed_action,
    )  # fmt: skip
