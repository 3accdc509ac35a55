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


def wanted(settings: Settings) -> bool:
    """Whether this install tells a city platform of its changes (a district in an exchange)."""
    return settings.exchange_role == "district" and bool(settings.exchange_peer_url)


def items(conn: psycopg.Connection, codes: Iterable[str]) -> list[dict[str, Any]]:
    """The changed components as the city is told of them (read where the map is kept)."""
    rows = conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM component WHERE code = ANY(%s) ORDER BY code",  # noqa: S608
        (list(codes),),
    ).fetchall()
    found = [dict(zip(_FIELDS, r, strict=True)) for r in rows]
    for item in found:
        item["grid"] = item.pop("grid_code")
    return found


def enqueue(
    conn: psycopg.Connection,
    settings: Settings,
    changed: list[dict[str, Any]],
    signed_action: int,
) -> dict[str, Any] | None:
    """Queue the changed components (`items`) for the city (a district in an exchange only)."""
    if not wanted(settings):
        return None
    return outbox.enqueue(
        conn, settings, kind="component.update", content={"components": changed},
        signed_action=signed_action,
    )  # fmt: skip
