"""An evaluation report from counts: every subject's indicators, scores, grades and rank,
beside the previous period of the same length. Pure: no I/O."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from mapserver import days
from mapserver.errors import InvalidInput
from mapserver.evaluation import indicators, scoring

MAX_DAYS = 1100  # three years
# The days a period may name: its previous period, its trend's months and a hot spot's cache
# name all fit the calendar (0001-01-01 or 9999-12-31 was a 500 on every evaluation route).
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2999, 12, 31)


class Period(NamedTuple):
    first: dt.date
    last: dt.date  # inclusive

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        """The period of the same length that ends the day before this one starts."""
        last = self.first - dt.timedelta(days=1)
        return Period(last - dt.timedelta(days=self.days - 1), last)

    def as_json(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


def _date(args: Mapping[str, str], name: str) -> dt.date:
    text = args.get(name)
    if not text:
        raise InvalidInput(f"the parameter {name!r} is required (a date, YYYY-MM-DD)")
    try:
        found = days.day(text)
    except ValueError:
        raise InvalidInput(f"{name} must be a date, YYYY-MM-DD") from None
    if not FIRST_DAY <= found <= LAST_DAY:
        raise InvalidInput(f"{name} must be a day from {FIRST_DAY} to {LAST_DAY}")
    return found


def period(args: Mapping[str, str]) -> Period:
    """`from` and `to` (inclusive) of a query, at most three years apart."""
    found = Period(_date(args, "from"), _date(args, "to"))
    if found.last < found.first:
        raise InvalidInput("to must not be before from")
    if found.days > MAX_DAYS:
        raise InvalidInput(f"the period spans {found.days} days; at most {MAX_DAYS}")
    return found


def subject_kind(args: Mapping[str, str]) -> str:
    kind = args.get("subject", "")
    if kind not in indicators.SUBJECT_KINDS:
        raise InvalidInput("subject must be one of " + ", ".join(indicators.SUBJECT_KINDS))
    return kind


def _values(
    kind: str, subject: str, counts: Mapping[str, int], area: float | None
) -> dict[str, indicators.Value]:
    return {
        i.key: indicators.evaluate(i, counts, area)
        for i in indicators.of_kind(kind)
        if indicators.applies(i, subject)
    }


def build(
    kind: str,
    names: list[tuple[str, str]],
    current: Mapping[str, Mapping[str, int]],
    previous: Mapping[str, Mapping[str, int]],
    areas: Mapping[str, float],
    config: scoring.Config,
    config_version: int,
    when: Period,
) -> dict[str, Any]:
    """The report for every subject of `kind` (ranked by total score)."""
    rows: list[dict[str, Any]] = []
    for code, name in names:
        area = areas.get(code)
        now = _values(kind, code, current.get(code, {}), area)
        before = _values(kind, code, previous.get(code, {}), area)
        score = scoring.score({k: v.value for k, v in now.items()}, config)
        score_before = scoring.score({k: v.value for k, v in before.items()}, config)
        parts = {p.key: p for p in score.parts}
        rows.append(
            {
                "subject": code,
                "name": name,
                "score": score.total,
                "grade": score.grade,
                "previous_score": score_before.total,
                "change": (
                    round(score.total - score_before.total, 2)
                    if score.total is not None and score_before.total is not None
                    else None
                ),
                "indicators": {
                    key: {
                        "numerator": v.numerator,
                        "denominator": v.denominator,
                        "value": v.value,
                        "grade": parts[key].grade if key in parts else None,
                        "points": parts[key].points if key in parts else None,
                        "weight": config.rules[key].weight,
                        "score": parts[key].score if key in parts else None,
                        "previous_value": before[key].value,
                    }
                    for key, v in now.items()
                },
            }
        )
    ranks = scoring.rank({r["subject"]: r["score"] for r in rows})
    ranks_before = scoring.rank({r["subject"]: r["previous_score"] for r in rows})
    for r in rows:
        r["rank"] = ranks[r["subject"]]
        r["previous_rank"] = ranks_before[r["subject"]]
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["subject"]))
    return {
        "subject": kind,
        "period": when.as_json(),
        "previous_period": when.previous().as_json(),
        "config_version": config_version,
        "grades": {g: config.points[g] for g in scoring.GRADES},
        "indicators": [indicators.describe(i) for i in indicators.of_kind(kind)],
        "subjects": rows,
    }


def drilled(
    indicator: indicators.Indicator, units: Mapping[str, Mapping[int, str]], limit: int
) -> dict[str, Any]:
    """The cases behind both sides of an indicator: units of the positive terms less those
    of the negative ones (a case dispatched twice to a bureau counts twice)."""

    def side(terms: tuple[indicators.Term, ...]) -> dict[str, Any]:
        kept: dict[int, str] = {}
        for t in terms:
            if t.sign > 0:
                kept.update(units.get(t.measure, {}))
        for t in terms:
            if t.sign < 0:
                for unit in units.get(t.measure, {}):
                    kept.pop(unit, None)
        numbers = sorted(kept.values())
        return {
            "count": len(numbers),
            "cases": numbers[:limit],
            "truncated": len(numbers) > limit,
        }

    return {
        "numerator": side(indicator.numerator),
        "denominator": side(indicator.denominator) if indicator.denominator else None,
    }


MAX_BUCKETS = 40


def buckets(when: Period) -> list[Period]:
    """The pieces a trend is drawn in: calendar months for periods over 62 days, else weeks
    from the first day; the last piece ends with the period."""
    pieces: list[Period] = []
    first = when.first
    while first <= when.last:
        if when.days > 62:
            nxt = (first.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        else:
            nxt = first + dt.timedelta(days=7)
        last = min(nxt - dt.timedelta(days=1), when.last)
        pieces.append(Period(first, last))
        first = nxt
    if len(pieces) > MAX_BUCKETS:
        raise InvalidInput(f"a trend is drawn in at most {MAX_BUCKETS} months")
    return pieces


def trend(
    indicator: indicators.Indicator,
    names: list[tuple[str, str]],
    counts: Sequence[Mapping[str, Mapping[str, int]]],
    areas: Mapping[str, float],
    pieces: list[Period],
) -> dict[str, Any]:
    """One indicator of every subject in each piece, and of all subjects together."""

    def point(c: Mapping[str, int], area: float | None) -> dict[str, Any]:
        v = indicators.evaluate(indicator, c, area)
        return {"numerator": v.numerator, "denominator": v.denominator, "value": v.value}

    series = []
    for code, name in names:
        if not indicators.applies(indicator, code):
            continue
        series.append(
            {
                "subject": code,
                "name": name,
                "points": [point(piece.get(code, {}), areas.get(code)) for piece in counts],
            }
        )
    together = []
    total_area = sum(areas.get(code, 0.0) for code, _ in names) or None
    for piece in counts:
        summed: dict[str, int] = {}
        for code, _ in names:
            if indicators.applies(indicator, code):
                for measure, n in piece.get(code, {}).items():
                    summed[measure] = summed.get(measure, 0) + n
        together.append(point(summed, total_area))
    return {
        "indicator": indicators.describe(indicator),
        "periods": [p.as_json() for p in pieces],
        "series": series,
        "all": together,
    }


def classes(rows: Sequence[tuple[str, str, str, Mapping[str, int]]]) -> list[dict[str, Any]]:
    """The per-class breakdown: filed cases, closed and closed on time, and the closing
    rates with their numerators and denominators (as the area indicators count them)."""
    out = []
    for kind, major, name, counts in rows:
        due = counts.get("filed", 0) - counts.get("filed_cancelled", 0)
        closed, on_time = counts.get("closed", 0), counts.get("closed_on_time", 0)
        out.append(
            {
                "kind": kind,
                "major": major,
                "name": name,
                "filed": counts.get("filed", 0),
                "cancelled": counts.get("filed_cancelled", 0),
                "closed": closed,
                "closed_on_time": on_time,
                "closing_rate": round(closed / due, 6) if due > 0 else None,
                "on_time_closing_rate": round(on_time / due, 6) if due > 0 else None,
            }
        )
    return out
