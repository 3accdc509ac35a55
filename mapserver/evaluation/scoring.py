"""Weighted five-grade scoring (优 良 中 差 劣). Pure: no I/O.

Each indicator's value is graded by its four thresholds (for a higher-is-better indicator:
value ≥ t1 优, ≥ t2 良, ≥ t3 中, ≥ t4 差, else 劣; for lower-is-better the same with ≤); the
grade's points times the indicator's weight is its score; a subject's total is the sum of
its scores divided by the sum of the weights of the indicators it has a value for (so a
bureau with nothing to rework is not marked down for it). Points, weights and thresholds are
configuration (`Config`), versioned in the database and changed by signed actions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from mapserver.errors import InvalidInput
from mapserver.evaluation.indicators import INDICATORS, SUBJECT_KINDS, Better

GRADES = ("优", "良", "中", "差", "劣")
MAX_POINTS = 1000


@dataclass(frozen=True)
class Rule:
    weight: float
    thresholds: tuple[float, float, float, float]


@dataclass(frozen=True)
class Config:
    points: Mapping[str, float]  # grade → points
    rules: Mapping[str, Rule]  # indicator key → rule
    total: tuple[float, float, float, float]  # total-score thresholds (higher is better)

    def as_json(self) -> dict[str, Any]:
        return {
            "points": dict(self.points),
            "indicators": {
                k: {"weight": r.weight, "thresholds": list(r.thresholds)}
                for k, r in self.rules.items()
            },
            "total": list(self.total),
        }


_HIGHER = [0.95, 0.9, 0.8, 0.7]
_LOWER = {
    "inspector.miss_rate": [0.1, 0.2, 0.3, 0.4],
    "bureau.rework_rate": [0.05, 0.1, 0.15, 0.2],
    "bureau.postponement_rate": [0.05, 0.1, 0.15, 0.2],
    "bureau.return_rate": [0.02, 0.05, 0.1, 0.15],
}
_WEIGHTS = {
    "inspector": [0.3, 0.25, 0.25, 0.2],
    "bureau": [0.3, 0.3, 0.15, 0.1, 0.15],
    "centre": [0.4, 0.3, 0.3],
    "street": [0.2, 0.4, 0.4],
    "community": [0.2, 0.4, 0.4],
    "grid": [0.2, 0.4, 0.4],
}


def _default() -> dict[str, Any]:
    rules: dict[str, Any] = {}
    for kind in SUBJECT_KINDS:
        keys = [k for k in INDICATORS if k.startswith(kind + ".")]
        for key, weight in zip(keys, _WEIGHTS[kind], strict=True):
            if key.endswith("case_density"):
                thresholds = [2.0, 5.0, 10.0, 20.0]  # filed cases per km² in the period
            else:
                thresholds = _LOWER.get(key, _HIGHER)
            rules[key] = {"weight": weight, "thresholds": thresholds}
    return {
        "points": {"优": 100, "良": 80, "中": 60, "差": 40, "劣": 20},
        "indicators": rules,
        "total": [90, 80, 70, 60],
    }


DEFAULT: dict[str, Any] = _default()


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{where} must be a finite number")
    return float(value)


def _four(
    value: Any, where: str, better: Better, most: float | None = None
) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4:
        raise InvalidInput(f"{where} must be a list of four numbers (优, 良, 中, 差 bounds)")
    t = [_number(v, where) for v in value]
    if most is not None and not all(0 <= v <= most for v in t):  # no value reaches it
        within = f"from 0 to {most:g}" if math.isfinite(most) else "at least 0"
        raise InvalidInput(f"{where} must each be {within}")
    ordered = t == sorted(t, reverse=True) if better == "higher" else t == sorted(t)
    if not ordered:
        order = "descending" if better == "higher" else "ascending"
        raise InvalidInput(f"{where} must be {order} ({better} is better)")
    return (t[0], t[1], t[2], t[3])


def parse(raw: Any, ranges: bool = True) -> Config:
    """A configuration checked whole: every indicator with a weight ≥ 0 and four ordered
    thresholds (a rate's from 0 to 1, a density's at least 0, the total's from 0 to the most
    points), weights of each subject kind summing to 1, points for all five grades.
    Raises InvalidInput naming the first problem. `ranges=False` reads a version stored
    before the thresholds' ranges were checked."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("config must be an object with points, indicators and total")
    unknown = set(raw) - {"points", "indicators", "total"}
    if unknown:
        raise InvalidInput(f"config: unknown field {sorted(unknown)[0]!r}")
    points_raw = raw.get("points")
    if not isinstance(points_raw, Mapping) or set(points_raw) != set(GRADES):
        raise InvalidInput("config.points must give points for each of 优 良 中 差 劣")
    points = {g: _number(points_raw[g], f"config.points.{g}") for g in GRADES}
    if not all(0 <= p <= MAX_POINTS for p in points.values()):
        # Beyond that, scores summed over indicators could overflow to Infinity, which JSON
        # cannot carry (the big screen's state and the indicators' change went unreadable).
        raise InvalidInput(f"config.points must each be from 0 to {MAX_POINTS}")
    if [points[g] for g in GRADES] != sorted(points.values(), reverse=True):
        raise InvalidInput("config.points must not increase from 优 to 劣")
    given = raw.get("indicators")
    if not isinstance(given, Mapping):
        raise InvalidInput("config.indicators must be an object keyed by indicator")
    for key in given:
        if key not in INDICATORS:
            raise InvalidInput(f"config.indicators: no indicator {key!r}")
    rules: dict[str, Rule] = {}
    for key, indicator in INDICATORS.items():
        entry = given.get(key)
        if not isinstance(entry, Mapping):
            raise InvalidInput(f"config.indicators.{key} is missing (weight and thresholds)")
        extra = set(entry) - {"weight", "thresholds"}
        if extra:
            raise InvalidInput(f"config.indicators.{key}: unknown field {sorted(extra)[0]!r:.70}")
        weight = _number(entry.get("weight"), f"config.indicators.{key}.weight")
        if weight < 0:
            raise InvalidInput(f"config.indicators.{key}.weight must not be negative")
        thresholds = _four(
            entry.get("thresholds"),
            f"config.indicators.{key}.thresholds",
            indicator.better,
            None if not ranges else math.inf if indicator.per_area else 1.0,  # a rate: 0..1
        )
        rules[key] = Rule(weight, thresholds)
    for kind in SUBJECT_KINDS:
        weights = sum(r.weight for k, r in rules.items() if k.startswith(kind + "."))
        if abs(weights - 1.0) > 1e-6:
            raise InvalidInput(
                f"config: the weights of the {kind} indicators sum to {weights:g}, not 1"
            )
    total = _four(raw.get("total"), "config.total", "higher",
                  max(points.values()) if ranges else None)  # fmt: skip
    return Config(points, rules, total)


def grade(value: float, thresholds: Iterable[float], better: Better) -> str:
    for name, bound in zip(GRADES, thresholds, strict=False):
        if (value >= bound) if better == "higher" else (value <= bound):
            return name
    return GRADES[-1]


class Part(NamedTuple):
    key: str
    grade: str
    points: float
    weight: float
    score: float  # points × weight


class Score(NamedTuple):
    total: float | None  # None: no indicator had a value
    grade: str | None
    parts: tuple[Part, ...]


def score(values: Mapping[str, float | None], config: Config) -> Score:
    """The weighted five-grade score of one subject from its indicators' values."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        rule = config.rules[key]
        g = grade(value, rule.thresholds, INDICATORS[key].better)
        points = config.points[g]
        parts.append(Part(key, g, points, rule.weight, round(points * rule.weight, 6)))
    weights = sum(p.weight for p in parts)
    if not parts or weights <= 0:
        return Score(None, None, tuple(parts))
    total = round(sum(p.score for p in parts) / weights, 2)
    return Score(total, grade(total, config.total, "higher"), tuple(parts))


def rank(totals: Mapping[str, float | None]) -> dict[str, int | None]:
    """Competition ranking (1, 2, 2, 4) by total, highest first; no total, no rank."""
    scored = sorted((t for t in totals.values() if t is not None), reverse=True)
    first: dict[float, int] = {}
    for i, t in enumerate(scored):
        first.setdefault(t, i + 1)
    return {s: (first[t] if t is not None else None) for s, t in totals.items()}
