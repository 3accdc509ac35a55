"""Reading an evaluation report from the database: the one place the pages, the exports and
the big screen get it from."""

from __future__ import annotations

from typing import Any

from mapserver.evaluation import aggregates, config, report
from mapserver.services import services


def load_report(kind: str, when: report.Period) -> dict[str, Any]:
    """The report of every subject of `kind` for a period, beside the previous one."""
    before = when.previous()
    found = services()
    with found.pool.connection() as conn:
        aggregates.require_zone(conn, found.settings.work_timezone)
        streets = aggregates.inspector_streets(conn) if kind == "inspector" else None
        now = aggregates.subject_counts(conn, kind, when.first, when.last, streets)
        past = aggregates.subject_counts(conn, kind, before.first, before.last, streets)
        areas = aggregates.areas(conn, kind) if kind in ("street", "community", "grid") else {}
        names = aggregates.subjects(conn, kind)
        cfg = config.current(conn)
    return report.build(kind, names, now, past, areas, cfg.config, cfg.version, when)
