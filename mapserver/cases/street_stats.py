"""Per-street case statistics for a period (街道统计报表), by class and by community, and
their CSV and XLSX exports.

For the days [from, to] in the install's work time zone, per street:
- reported: cases created in the period;
- filed: cases filed (立案) in the period;
- closed: cases closed in the period;
- on_time: of those closed, the ones none of whose stages finished late;
- overdue: of those reported, the ones with a stage finished late or open past its deadline;
- reminders, orders, escalated: supervision sent in the period (totals only), escalated
  meaning an order not answered by its due time.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from mapserver import class_text
from mapserver import days as iso
from mapserver.errors import InvalidInput

MAX_DAYS = 366
# The days a period may name (the day after 9999-12-31 is none: a 500 before).
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2999, 12, 31)
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a cell starting so is read as a formula
COUNTS = ("reported", "filed", "closed", "on_time", "overdue")
SUPERVISION = ("reminders", "orders", "escalated")
HEADINGS = {
    "reported": "上报",
    "filed": "立案",
    "closed": "结案",
    "on_time": "按时结案",
    "overdue": "超时",
    "reminders": "提醒",
    "orders": "督办",
    "escalated": "督办逾期升级",
}


def period(args: Mapping[str, str]) -> tuple[dt.date, dt.date]:
    """`from` and `to` (ISO dates, inclusive); 400 naming the bad one."""
    days = []
    for name in ("from", "to"):
        text = args.get(name)
        if not text:
            raise InvalidInput(f"{name} is required (YYYY-MM-DD)")
        try:
            day = iso.day(text)
        except ValueError:
            raise InvalidInput(f"{name} must be a date YYYY-MM-DD") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise InvalidInput(f"{name} must be a day from {FIRST_DAY} to {LAST_DAY}")
        days.append(day)
    first, last = days
    if last < first:
        raise InvalidInput("to is before from")
    if (last - first).days >= MAX_DAYS:
        raise InvalidInput(f"a period is at most {MAX_DAYS} days")
    return first, last


def _bounds(first: dt.date, last: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(first, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    return start, end


_FLAGS = """
WITH c AS (
    SELECT c.id, c.street_code, c.community_code, c.kind, c.major, c.minor, c.created_at,
           c.closed_at, c.state, c.stage_deadline
    FROM city_case c WHERE c.street_code = ANY(%(streets)s) AND c.created_at < %(b)s
        -- a case closed before the period can count for nothing in it
        AND (c.created_at >= %(a)s OR c.closed_at IS NULL OR c.closed_at >= %(a)s)
), ev AS (  -- one pass over the events of those cases
    SELECT e.case_id,
           bool_or(e.transition = 'file' AND e.at >= %(a)s AND e.at < %(b)s) AS filed,
           bool_or(e.on_time = false) AS late
    FROM case_event e WHERE e.case_id IN (SELECT id FROM c) GROUP BY e.case_id
), f AS (
    SELECT c.street_code, c.community_code, c.kind, c.major, c.minor,
        (c.created_at >= %(a)s) AS reported,
        coalesce(ev.filed, false) AS filed,
        coalesce(c.closed_at >= %(a)s AND c.closed_at < %(b)s, false) AS closed,
        coalesce(ev.late, false) AS late,
        (c.state NOT IN ('closed', 'rejected', 'cancelled') AND c.stage_deadline < now())
            AS late_now
    FROM c LEFT JOIN ev ON ev.case_id = c.id
)
SELECT street_code, community_code, kind, major, minor,
    GROUPING(community_code) = 0 AS by_community, GROUPING(major) = 0 AS by_class,
    count(*) FILTER (WHERE reported), count(*) FILTER (WHERE filed),
    count(*) FILTER (WHERE closed), count(*) FILTER (WHERE closed AND NOT late),
    count(*) FILTER (WHERE reported AND (late OR coalesce(late_now, false)))
FROM f WHERE reported OR filed OR closed
GROUP BY GROUPING SETS ((street_code), (street_code, kind, major, minor),
                        (street_code, community_code))
"""


def report(
    conn: psycopg.Connection,
    streets: Iterable[str],
    first: dt.date,
    last: dt.date,
    tz: ZoneInfo,
    locale: str = class_text.BASE,
) -> dict[str, Any]:
    """The statistics of `streets` (every street listed, also those with nothing to count);
    class names in `locale`."""
    wanted = sorted(set(streets))
    a, b = _bounds(first, last, tz)
    names: dict[str, str] = dict(
        conn.execute("SELECT code, name FROM street WHERE code = ANY(%s)", (wanted,)).fetchall()
    )
    communities: dict[str, str] = dict(
        conn.execute(
            "SELECT code, name FROM community WHERE street_code = ANY(%s)", (wanted,)
        ).fetchall()
    )
    classes = {
        (k, x, y): n
        for k, x, y, n in conn.execute(
            "SELECT kind, major, minor, name"  # noqa: S608 (a locale code, not input)
            f" FROM {class_text.relation(locale)}"
        ).fetchall()
    }
    shown: dict[str, dict[str, Any]] = {
        code: {
            "street": {"code": code, "name": names[code]},
            "total": dict.fromkeys(COUNTS + SUPERVISION, 0),
            "by_class": [],
            "by_community": [],
        }
        for code in wanted
        if code in names
    }
    rows = conn.execute(_FLAGS, {"a": a, "b": b, "streets": list(shown)}).fetchall()
    for street, community, kind, major, minor, by_community, by_class, *n in rows:
        counts = dict(zip(COUNTS, (int(v) for v in n), strict=True))
        entry = shown[street]
        if by_community:
            entry["by_community"].append(
                {"code": community, "name": communities.get(community, ""), **counts}
            )
        elif by_class:
            entry["by_class"].append(
                {
                    "kind": kind,
                    "major": major,
                    "minor": minor,
                    "name": classes.get((kind, major, minor), ""),
                    **counts,
                }
            )
        else:
            entry["total"].update(counts)
    for street, reminders, orders, escalated in conn.execute(
        """SELECT street_code, count(*) FILTER (WHERE kind = 'reminder'),
                  count(*) FILTER (WHERE kind = 'order'),
                  count(*) FILTER (WHERE kind = 'order'
                                   AND coalesce(answered_at, ended_at, now()) > due_at)
           FROM case_order WHERE street_code = ANY(%s) AND at >= %s AND at < %s
           GROUP BY street_code""",
        (list(shown), a, b),
    ).fetchall():
        shown[street]["total"].update(
            reminders=int(reminders), orders=int(orders), escalated=int(escalated)
        )
    for entry in shown.values():
        entry["by_class"].sort(key=lambda r: (r["kind"], r["major"], r["minor"]))
        entry["by_community"].sort(key=lambda r: r["code"])
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": str(tz),
        "headings": HEADINGS,
        "streets": list(shown.values()),
    }


def rows(shown: Mapping[str, Any]) -> list[list[Any]]:
    """The report as one table: a heading row, then per street its total, classes and
    communities (what CSV and the XLSX's first sheet hold)."""
    out: list[list[Any]] = [
        ["street_code", "street", "breakdown", "code", "name", *COUNTS, *SUPERVISION]
    ]
    for entry in shown["streets"]:
        s = entry["street"]
        t = entry["total"]
        out.append([s["code"], s["name"], "total", "", "", *(t[k] for k in COUNTS + SUPERVISION)])
        for r in entry["by_class"]:
            code = f"{r['kind']}/{r['major']}/{r['minor']}"
            out.append([s["code"], s["name"], "class", code, r["name"], *(r[k] for k in COUNTS)])
        for r in entry["by_community"]:
            out.append(
                [s["code"], s["name"], "community", r["code"], r["name"], *(r[k] for k in COUNTS)]
            )
    return out


def as_csv(shown: Mapping[str, Any]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows(shown):
        writer.writerow([f"'{c}" if isinstance(c, str) and c[:1] in FORMULA else c for c in row])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")  # BOM: spreadsheet programs read UTF-8


def as_xlsx(shown: Mapping[str, Any], words: Mapping[str, str] | None = None) -> bytes:
    """A workbook: the whole table, then one sheet per breakdown with headings in the words
    of `words` (a locale's message catalogue, webclient.messages; default zh-CN)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    if words is None:
        from webclient.messages import catalogue

        words = catalogue("zh-CN")

    def head(key: str) -> list[str]:
        return words[f"export.street_{key}"].split("|")

    def heading(k: str) -> str:
        return words.get(f"street_heading.{k}", HEADINGS[k])

    book = Workbook()
    sheet = book.active
    sheet.title = words["export.street_sheet_all"]
    for row in rows(shown):
        sheet.append(row)
    heads = [heading(k) for k in COUNTS]
    summary = book.create_sheet(words["export.street_sheet_summary"])
    summary.append([*head("summary_head"), *heads, *(heading(k) for k in SUPERVISION)])
    by_class = book.create_sheet(words["export.street_sheet_by_class"])
    by_class.append([*head("class_head"), *heads])
    by_community = book.create_sheet(words["export.street_sheet_by_community"])
    by_community.append([*head("community_head"), *heads])
    for entry in shown["streets"]:
        s, t = entry["street"], entry["total"]
        summary.append([s["code"], s["name"], *(t[k] for k in COUNTS + SUPERVISION)])
        for r in entry["by_class"]:
            by_class.append(
                [s["name"], r["kind"], r["major"], r["minor"], r["name"], *(r[k] for k in COUNTS)]
            )
        for r in entry["by_community"]:
            by_community.append([s["name"], r["code"], r["name"], *(r[k] for k in COUNTS)])
    for ws in book.worksheets:
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for row in ws.iter_rows():  # names are data, never formulas (openpyxl reads "=…" so)
            for cell in row:
                if cell.data_type == "f":
                    cell.data_type = "s"
    book.properties.title = words["export.street_title"].format(
        first=shown["from"], last=shown["to"]
    )
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
