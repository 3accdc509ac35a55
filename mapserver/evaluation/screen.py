"""The command centre's big screen (监督指挥大屏): the district's state for a wall display,
asked again every few seconds by the page with the ETag of what it has (304 when nothing
changed). Counters, this month's rankings and the latest events: case numbers, states,
class and street names, never a coordinate, a description or a caller's contact.

Its pages (mapserver.evaluation.pages) and this state are read under `screen.read`, which
the read-only `screen` role holds (auth.policy) besides the overview map.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from flask import Blueprint, Response, request

from audit.notes import note
from auth.access import requires
from mapserver import class_text, locales
from mapserver.evaluation import report
from mapserver.evaluation.reading import load_report
from mapserver.services import services
from webclient.messages import catalogue, translate

bp = Blueprint("screen", __name__, url_prefix="/screen")
LATEST = 12
RANKED = 8
POLL_SECONDS = 5


def counters(conn: psycopg.Connection, since: dt.datetime) -> dict[str, int]:
    """Reports since the start of today, open and overdue cases, closed today."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE created_at >= %(since)s),
                  count(*) FILTER (WHERE state NOT IN ('closed', 'rejected', 'cancelled')),
                  count(*) FILTER (WHERE case_overdue(state, stage_deadline)),
                  count(*) FILTER (WHERE state = 'closed' AND closed_at >= %(since)s)
           FROM city_case""",
        {"since": since},
    ).fetchone()
    assert row is not None
    return dict(zip(("reported_today", "open", "overdue", "closed_today"), map(int, row),
                    strict=True))  # fmt: skip


def latest(
    conn: psycopg.Connection, zone: ZoneInfo, locale: str = class_text.BASE
) -> list[dict[str, Any]]:
    """The latest case events: when, which case, what happened, its class (named in
    `locale`) and street."""
    rows = conn.execute(
        """SELECT e.id, e.at, c.number, e.transition, e.to_state, s.name,
                  coalesce(k.name, c.major || c.minor)
           FROM (SELECT * FROM case_event ORDER BY id DESC LIMIT %s) e
           JOIN city_case c ON c.id = e.case_id
           LEFT JOIN street s ON s.code = c.street_code
           LEFT JOIN class_text(%s) k ON (k.kind, k.major, k.minor) = (c.kind, c.major, c.minor)
           ORDER BY e.id DESC""",
        (LATEST, locales.get(locale).code),
    ).fetchall()
    out = []
    for event_id, at, number, transition, state, street, cls in rows:
        what = catalogue(locale).get(f"transition.{transition}", transition)
        out.append(
            {
                "id": int(event_id),
                "at": at.astimezone(zone).isoformat(timespec="seconds"),
                "number": number,
                "event": what,
                "transition": transition,  # the code: pages name it in their language
                "state": translate(locale, f"state.{state}"),
                "street": street or "",
                "class": cls,
            }
        )
    return out


def _ranked(kind: str, when: report.Period) -> list[dict[str, Any]]:
    rows = load_report(kind, when)["subjects"]
    return [
        {"rank": r["rank"], "name": r["name"], "score": r["score"], "grade": r["grade"]}
        for r in rows
        if r["rank"] is not None
    ][:RANKED]


def state(now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the screen shows, as of now in the work calendar's zone."""
    found = services()
    zone = ZoneInfo(found.settings.work_timezone)
    today = (now or dt.datetime.now(zone)).astimezone(zone).date()
    since = dt.datetime.combine(today, dt.time(), zone)
    month = report.Period(today.replace(day=1), today)
    with found.pool.connection() as conn:
        counted = counters(conn, since)
        events = latest(conn, zone, found.settings.locale)
    return {
        "today": today.isoformat(),
        "counters": counted,
        "rankings": {
            "period": month.as_json(),
            "bureau": _ranked("bureau", month),
            "street": _ranked("street", month),
        },
        "latest": events,
        "poll_seconds": POLL_SECONDS,
    }


@bp.get("/state")
@requires("screen.read")
def screen_state() -> Response:
    """The screen's state; If-None-Match with the last ETag answers 304 when unchanged."""
    note(resource="screen state")
    body = json.dumps(state(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    etag = hashlib.sha256(body.encode()).hexdigest()[:32]
    if etag in request.if_none_match:
        response = Response(status=304)
    else:
        response = Response(body, mimetype="application/json")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
