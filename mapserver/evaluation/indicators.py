"""The indicators of the comprehensive evaluation (综合评价), as one table: each names its
formula, numerator and denominator, so a person can check a figure. Pure: no I/O.

Every indicator is a ratio of counted *measures*: the facts a case's history holds (view
`eval_fact`, migration 0016). A unit counts on the day of the event that started it — a
bureau's handling on the day the case was dispatched to it, a closing on the day the case
was filed — so numerator and denominator of one period always count the same units, and a
rate never exceeds 100 %.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Literal, NamedTuple

SUBJECT_KINDS = ("inspector", "bureau", "centre", "street", "community", "grid")
CENTRES = {"supervision": "监督中心", "command": "指挥中心"}

# What each measure counts (one fact per unit), and the day it counts on.
MEASURES: dict[str, str] = {
    "reports": "cases the inspector reported (created with source inspector), on the report's day",
    "reports_valid": "of those reports, the ones accepted (accept or verify), on the report's day",
    "verifications": "public reports the inspector verified (transition verify), on that day",
    "verifications_on_time": "of those verifications, the ones within the accept stage's limit",
    "checks": "checks the inspector made (check_pass or check_fail), on that day",
    "checks_on_time": "of those checks, the ones within the check stage's limit",
    "filed": "cases filed (transition file) in the area, on the filing day",
    "filed_public": "of those, cases first reported by others than an inspector",
    "filed_cancelled": "of those, cases since cancelled as duplicates",
    "closed": "of the cases filed in the area, those closed (check_pass), on the filing day",
    "closed_on_time": "of those closed, the ones every stage of which kept its time limit",
    "filings": "filings by the supervision centre (transition file), on that day",
    "filings_on_time": "of those, the ones within the file stage's limit",
    "dispatches": "dispatches by the command centre (transition dispatch), on that day",
    "dispatches_on_time": "of those, the ones within the dispatch stage's limit",
    "dispatches_returned": "of those dispatches, the ones a bureau returned (transition return)",
    "dispatches_recalled": "of those dispatches, the ones the command centre recalled (recall)",
    "dispatched": "cases dispatched to the bureau (one per dispatch), on the dispatch day",
    "handled": "of those dispatches, the ones the bureau handled (first handle after it)",
    "handled_on_time": "of those, handled within the handling limit (postponements included)",
    "returned": "of those dispatches, the ones the bureau returned to the command centre",
    "recalled": "of those dispatches, the ones the command centre took back before receipt",
    "postponed": "of those dispatches, the ones with an approved postponement",
    "reworked": "of those dispatches, the ones whose handling failed a check (返工)",
}


class Term(NamedTuple):
    measure: str
    sign: int = 1


Better = Literal["higher", "lower"]


class Indicator(NamedTuple):
    key: str  # "<subject kind>.<name>"
    name: str
    title: str  # the published Chinese name
    numerator: tuple[Term, ...]
    denominator: tuple[Term, ...]  # empty: the subject's area in km²
    better: Better
    centre: str | None = None  # for centre indicators: which centre is evaluated by it

    @property
    def subject_kind(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def measures(self) -> frozenset[str]:
        return frozenset(t.measure for t in (*self.numerator, *self.denominator))

    @property
    def per_area(self) -> bool:
        return not self.denominator

    def formula(self, title: str | None = None, name: Callable[[str], str] = str) -> str:
        """`title = numerator / denominator`, each measure as `name` gives it (its code by
        default; a catalogue's words in the exports)."""
        top, bottom = _terms(self.numerator, name), _terms(self.denominator, name)
        return f"{title or self.title} = {top} / {bottom}"


def _terms(terms: tuple[Term, ...], name: Callable[[str], str] = str) -> str:
    if not terms:
        return name("area_km2")
    text = name(terms[0].measure)
    for t in terms[1:]:
        text += (" + " if t.sign > 0 else " - ") + name(t.measure)
    return f"({text})" if len(terms) > 1 else text


def _i(
    key: str,
    name: str,
    title: str,
    num: tuple[Term, ...],
    den: tuple[Term, ...],
    better: Better = "higher",
    centre: str | None = None,
) -> Indicator:
    return Indicator(key, name, title, num, den, better, centre)


T = Term
INDICATORS: dict[str, Indicator] = {
    i.key: i
    for i in (
        _i("inspector.valid_report_rate", "valid report rate", "有效上报率",
           (T("reports_valid"),), (T("reports"),)),
        _i("inspector.on_time_verification_rate", "on-time verification rate", "按时核实率",
           (T("verifications_on_time"),), (T("verifications"),)),
        _i("inspector.on_time_check_rate", "on-time check rate", "按时核查率",
           (T("checks_on_time"),), (T("checks"),)),
        # The inspector's grids are those of the street of the inspector's organisation.
        _i("inspector.miss_rate", "miss rate", "漏报率",
           (T("filed_public"),), (T("filed"),), "lower"),
        # A dispatch the command centre recalled before receipt is not the bureau's.
        _i("bureau.handling_rate", "handling rate", "处置率",
           (T("handled"),), (T("dispatched"), T("recalled", -1))),
        _i("bureau.on_time_handling_rate", "on-time handling rate", "按期处置率",
           (T("handled_on_time"),), (T("dispatched"), T("recalled", -1))),
        # "reworked / due to close": a bureau's cases due to close are those it handled.
        _i("bureau.rework_rate", "rework rate", "返工率",
           (T("reworked"),), (T("handled"),), "lower"),
        _i("bureau.postponement_rate", "postponement rate", "延期率",
           (T("postponed"),), (T("dispatched"), T("recalled", -1)), "lower"),
        _i("bureau.return_rate", "return rate", "退回率",
           (T("returned"),), (T("dispatched"), T("recalled", -1)), "lower"),
        _i("centre.on_time_filing_rate", "on-time filing rate", "按时立案率",
           (T("filings_on_time"),), (T("filings"),), centre="supervision"),
        _i("centre.on_time_dispatch_rate", "on-time dispatch rate", "按时派遣率",
           (T("dispatches_on_time"),), (T("dispatches"),), centre="command"),
        _i("centre.dispatch_accuracy", "dispatch accuracy", "派遣准确率",
           (T("dispatches"), T("dispatches_returned", -1), T("dispatches_recalled", -1)),
           (T("dispatches"),),
           centre="command"),
        *(
            ind
            for area in ("street", "community", "grid")
            for ind in (
                _i(f"{area}.case_density", "case density", "案件密度",
                   (T("filed"),), (), "lower"),
                _i(f"{area}.closing_rate", "closing rate", "结案率",
                   (T("closed"),), (T("filed"), T("filed_cancelled", -1))),
                _i(f"{area}.on_time_closing_rate", "on-time closing rate", "按期结案率",
                   (T("closed_on_time"),), (T("filed"), T("filed_cancelled", -1))),
            )
        ),
    )
}  # fmt: skip


def of_kind(kind: str) -> list[Indicator]:
    return [i for i in INDICATORS.values() if i.subject_kind == kind]


def applies(indicator: Indicator, subject: str) -> bool:
    """Centre indicators evaluate one centre each; all others every subject of their kind."""
    return indicator.centre is None or indicator.centre == subject


class Value(NamedTuple):
    numerator: float
    denominator: float
    value: float | None  # None: nothing to count in the period


def total(terms: tuple[Term, ...], counts: Mapping[str, int]) -> int:
    return sum(t.sign * counts.get(t.measure, 0) for t in terms)


def evaluate(
    indicator: Indicator, counts: Mapping[str, int], area_km2: float | None = None
) -> Value:
    """The indicator's value from the subject's counts (and area, for a density)."""
    num = total(indicator.numerator, counts)
    if indicator.per_area:
        if not area_km2:
            return Value(num, 0.0, None)
        return Value(num, round(area_km2, 6), round(num / area_km2, 6))
    den = total(indicator.denominator, counts)
    if den <= 0:
        return Value(num, den, None)
    return Value(num, den, round(float(Fraction(num, den)), 6))


def describe(indicator: Indicator) -> dict[str, object]:
    """What the API shows of an indicator: its formula and how each side is counted."""

    def side(terms: tuple[Term, ...]) -> dict[str, object]:
        if not terms:
            return {"formula": "area_km2", "terms": [], "definition": "the area in km²"}
        return {
            "formula": _terms(terms),
            "terms": [
                {"measure": t.measure, "sign": t.sign, "definition": MEASURES[t.measure]}
                for t in terms
            ],
        }

    return {
        "key": indicator.key,
        "name": indicator.name,
        "title": indicator.title,
        "formula": indicator.formula(),
        "better": indicator.better,
        "unit": "cases per km²" if indicator.per_area else "ratio",
        "centre": indicator.centre,
        "numerator": side(indicator.numerator),
        "denominator": side(indicator.denominator),
    }
