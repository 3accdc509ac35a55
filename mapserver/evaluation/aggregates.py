"""The counted facts of case histories in PostgreSQL (migration 0016): per-day counts kept by
a trigger on `case_event` in the same transaction as the event, their rebuild from the one
definition (view `eval_fact`), the same sums by a full scan (to check and to measure
against), and the cases behind a figure."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

import psycopg

from mapserver import class_text
from mapserver.errors import Conflict
from mapserver.evaluation.indicators import CENTRES

Counts = dict[str, dict[str, int]]  # subject → measure → count
# Measures of a street that an inspector of that street is evaluated by (miss rate).
INSPECTOR_STREET_MEASURES = ("filed", "filed_public")


def zone(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT timezone FROM eval_setting").fetchone()
    assert row is not None, "migration 0016 inserts the setting row"
    return str(row[0])


def require_zone(conn: psycopg.Connection, timezone: str) -> None:
    """Days were counted in the zone the aggregates were built in: refuse another one."""
    built = zone(conn)
    if built != timezone:
        raise Conflict(
            f"the evaluation's days are counted in {built}, the work calendar is in "
            f"{timezone}: run `citygrid eval rebuild`"
        )


def day_counts(conn: psycopg.Connection, kind: str, first: dt.date, last: dt.date) -> Counts:
    """Counts per subject and measure for days first..last (inclusive), from the per-day
    aggregates."""
    rows = conn.execute(
        "SELECT subject, measure, sum(n)::bigint FROM case_day_fact"
        " WHERE subject_kind = %s AND day BETWEEN %s AND %s GROUP BY subject, measure",
        (kind, first, last),
    ).fetchall()
    return _nest(rows)


def scan_counts(conn: psycopg.Connection, kind: str, first: dt.date, last: dt.date) -> Counts:
    """The same counts by a full scan of the case histories (no aggregates)."""
    rows = conn.execute(
        "SELECT subject, measure, count(*) FROM eval_fact"
        " WHERE subject_kind = %s AND day BETWEEN %s AND %s GROUP BY subject, measure",
        (kind, first, last),
    ).fetchall()
    return _nest(rows)


def _nest(rows: Iterable[tuple[str, str, int]]) -> Counts:
    found: Counts = defaultdict(dict)
    for subject, measure, n in rows:
        found[subject][measure] = int(n)
    return dict(found)


def subject_counts(
    conn: psycopg.Connection,
    kind: str,
    first: dt.date,
    last: dt.date,
    streets: dict[str, str | None] | None = None,
    scan: bool = False,
) -> Counts:
    """Counts of every subject of `kind`; an inspector's also hold the filed cases of the
    street of the inspector's organisation (`streets`: account → street code)."""
    read = scan_counts if scan else day_counts
    found = read(conn, kind, first, last)
    if kind == "inspector" and streets:
        by_street = read(conn, "street", first, last)
        for account, street in streets.items():
            mine = found.setdefault(account, {})
            for measure in INSPECTOR_STREET_MEASURES:
                n = by_street.get(street or "", {}).get(measure)
                if n:
                    mine[measure] = n
    return found


def subjects(conn: psycopg.Connection, kind: str) -> list[tuple[str, str]]:
    """(code, name) of every subject of a kind, in code order."""
    if kind == "centre":
        return list(CENTRES.items())
    query = {
        "inspector": """SELECT DISTINCT a.name, coalesce(nullif(a.display_name, ''), a.name)
                        FROM account a JOIN account_role r ON r.account_id = a.id
                        WHERE r.role = 'inspector' ORDER BY 1""",
        "bureau": "SELECT code, name FROM organisation WHERE kind = 'bureau' ORDER BY code",
        "street": "SELECT code, name FROM street ORDER BY code",
        "community": "SELECT code, name FROM community ORDER BY code",
        "grid": "SELECT code, code FROM unit_grid ORDER BY code",
    }[kind]
    return [(str(a), str(b)) for a, b in conn.execute(query).fetchall()]


def inspector_streets(conn: psycopg.Connection) -> dict[str, str | None]:
    """The street whose grids each inspector answers for: that of the inspector's
    organisation (None when it has no street)."""
    rows = conn.execute(
        """SELECT DISTINCT a.name, o.street_code FROM account a
           JOIN account_role r ON r.account_id = a.id AND r.role = 'inspector'
           LEFT JOIN organisation o ON o.code = a.org_code"""
    ).fetchall()
    return {str(a): (str(s) if s else None) for a, s in rows}


def areas(conn: psycopg.Connection, kind: str) -> dict[str, float]:
    """Managed area in km² of each street, community or unit grid (the sum of its grids)."""
    key = {"street": "left(community_code, 9)", "community": "community_code", "grid": "code"}
    rows = conn.execute(
        f"SELECT {key[kind]}, sum(area_m2) / 1e6 FROM unit_grid GROUP BY 1"  # noqa: S608
    ).fetchall()
    return {str(code): float(km2) for code, km2 in rows}


def drill(
    conn: psycopg.Connection,
    kind: str,
    subjects_: list[str],
    measures: Iterable[str],
    first: dt.date,
    last: dt.date,
) -> dict[str, dict[int, str]]:
    """The units behind each measure (unit id → case number) for the subjects and days."""
    rows = conn.execute(
        """SELECT f.measure, f.unit, c.number FROM case_fact f JOIN city_case c ON c.id = f.case_id
           WHERE f.subject_kind = %s AND f.subject = ANY(%s) AND f.measure = ANY(%s)
             AND f.day BETWEEN %s AND %s""",
        (kind, subjects_, list(measures), first, last),
    ).fetchall()
    found: dict[str, dict[int, str]] = defaultdict(dict)
    for measure, unit, number in rows:
        found[measure][int(unit)] = str(number)
    return dict(found)


def rebuild(conn: psycopg.Connection, timezone: str) -> tuple[int, int]:
    """Recompute every fact and day count from the case histories, counting days in
    `timezone`; returns (facts, day rows). Holds case_event against changes meanwhile."""
    conn.execute("LOCK TABLE case_event IN SHARE MODE")
    conn.execute("UPDATE eval_setting SET timezone = %s", (timezone,))
    conn.execute("TRUNCATE case_fact, case_day_fact")
    facts = conn.execute(
        """INSERT INTO case_fact (unit, measure, subject_kind, subject, case_id, day)
           SELECT unit, measure, subject_kind, subject, case_id, day FROM eval_fact"""
    ).rowcount
    days = conn.execute(
        """INSERT INTO case_day_fact (subject_kind, day, subject, measure, n)
           SELECT subject_kind, day, subject, measure, count(*) FROM case_fact
           GROUP BY subject_kind, day, subject, measure"""
    ).rowcount
    return facts, days


# Measures of the per-class breakdown: an area's, summed over the district's streets.
CLASS_MEASURES = ("filed", "filed_cancelled", "closed", "closed_on_time")


def class_counts(
    conn: psycopg.Connection, first: dt.date, last: dt.date, locale: str = class_text.BASE
) -> list[tuple[str, str, str, dict[str, int]]]:
    """(kind, major class, its name, measure → count) of the district's cases filed in the
    period, per kind and major class (its name in `locale`)."""
    rows = conn.execute(
        """SELECT c.kind, c.major, f.measure, count(*) FROM case_fact f
           JOIN city_case c ON c.id = f.case_id
           WHERE f.subject_kind = 'street' AND f.measure = ANY(%s) AND f.day BETWEEN %s AND %s
           GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2""",
        (list(CLASS_MEASURES), first, last),
    ).fetchall()
    names = {
        (str(k), str(m)): str(n)
        for k, m, n in conn.execute(
            "SELECT DISTINCT kind, major, major_name"  # noqa: S608 (a locale code)
            f" FROM {class_text.relation(locale)}"
        ).fetchall()
    }
    found: dict[tuple[str, str], dict[str, int]] = {}
    for kind, major, measure, n in rows:
        found.setdefault((str(kind), str(major)), {})[str(measure)] = int(n)
    return [(k, m, names.get((k, m), m), counts) for (k, m), counts in found.items()]
