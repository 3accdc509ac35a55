"""Comprehensive evaluation against a case history whose outcomes are known.

About 200 cases over seven bureaus, three inspectors, two streets and eight unit grids are
driven through the real store functions (`store.create` / `store.act`) at chosen times, in
September and October 2026 across the Mid-Autumn and National Day holidays and the 调休
Saturday of 10 October. The test knows, for every step, whether it kept its stage's time
limit (and checks the store agrees), and counts every indicator's numerator and denominator
itself from the plan; the API's figures, grades, scores and ranks must equal those.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from mapserver import db
from mapserver.cases import store
from mapserver.evaluation import aggregates, indicators, report, scoring
from mapserver.services import services

from .app_client import Install
from .conftest import demo_database

TZ = ZoneInfo("Asia/Shanghai")
STREETS = {"110108001": "street-001", "110108002": "street-002"}
INSPECTORS = {"ev-insp-1": "110108001", "ev-insp-2": "110108001", "ev-insp-3": "110108002"}
OPERATOR, FILER, DISPATCHER, HANDLER = "ev-operator", "ev-filer", "ev-dispatcher", "ev-handler"
# Current period: three weeks around the National Day holidays; the previous one before it.
CURRENT = ("2026-09-28", "2026-10-18")
PREVIOUS = ("2026-09-07", "2026-09-27")
# Days a case may start on: working days whose day a week later lies two or more working
# days on (so a step a week late is late for every stage's limit, holidays or not).
START_DAYS = [dt.date(2026, 9, d) for d in (15, 16, 17, 22, 23, 24, 29)] + [
    dt.date(2026, 10, d) for d in (8, 9, 12, 13, 14)
]
# Transitions that end a stage (and so carry on_time in the history).
ENDS_STAGE = {"accept", "verify", "reject", "file", "dispatch", "handle", "return", "recall",
              "forward", "check_pass", "check_fail", "cancel"}  # fmt: skip


@dataclasses.dataclass
class Step:
    name: str
    actor: str
    at: dt.datetime
    late: bool = False
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
    source: str
    reporter: str
    grid: str
    created: dt.datetime
    steps: list[Step]
    number: str = ""

    @property
    def street(self) -> str:
        return self.grid[:9]

    @property
    def community(self) -> str:
        return self.grid[:12]


def local(day: dt.date, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ)


class Builder:
    """Plans steps ten minutes apart; at most one stage-ending step a week late."""

    def __init__(self, rng: random.Random, start: dt.datetime, late_step: str | None):
        self.rng = rng
        self.at = start
        self.late_step = late_step
        self.steps: list[Step] = []

    def add(self, name: str, actor: str, **params: Any) -> None:
        late = name == self.late_step and name in ENDS_STAGE
        if late:
            self.late_step = None  # only once
            self.at += dt.timedelta(days=7)
        self.at += dt.timedelta(minutes=10)
        self.steps.append(Step(name, actor, self.at, late, params))


PATHS = ("reject", "open", "cancel", "handling", "closed", "rework", "return", "postpone",
         "refused", "closed", "closed", "rework", "recall")  # fmt: skip


def random_plan(rng: random.Random, grids: list[str], bureaus: list[str]) -> Plan:
    grid = rng.choice(grids)
    street = grid[:9]
    local_inspectors = [a for a, s in INSPECTORS.items() if s == street]
    source = rng.choice(["inspector", "inspector", "phone", "web"])
    reporter = rng.choice(list(INSPECTORS)) if source == "inspector" else OPERATOR
    checker = rng.choice(local_inspectors)
    path = rng.choice(PATHS)
    late = rng.choice([None, None, None, "accept", "verify", "file", "dispatch", "handle",
                       "forward", "check_pass", "check_fail", "return"])  # fmt: skip
    start = local(rng.choice(START_DAYS), 8, 40)
    b = Builder(rng, start, late)
    bureau = rng.choice(bureaus)
    if path == "reject":
        b.add("reject", OPERATOR, reason=rng.choice(["invalid", "duplicate"]))
        return Plan(source, reporter, grid, start, b.steps)
    if path == "open":
        return Plan(source, reporter, grid, start, b.steps)
    if source == "inspector":
        b.add("accept", OPERATOR)
    else:
        b.add("verify", checker, note="属实")
    b.add("file", FILER)
    if path == "cancel":
        b.add("cancel", FILER, duplicate_of="?")
        return Plan(source, reporter, grid, start, b.steps)
    b.add("dispatch", DISPATCHER, bureau=bureau)
    if path == "recall":  # taken back before the bureau signed for it, then dispatched again
        b.add("recall", DISPATCHER, reason="派错单位")
        bureau = rng.choice([x for x in bureaus if x != bureau])
        b.add("dispatch", DISPATCHER, bureau=bureau)
    b.add("receive", HANDLER)
    if path == "return":
        b.add("return", HANDLER, reason="不属本单位")
        bureau = rng.choice([x for x in bureaus if x != bureau])
        b.add("dispatch", DISPATCHER, bureau=bureau)
        b.add("receive", HANDLER)
    if path == "handling":
        return Plan(source, reporter, grid, start, b.steps)
    if path in ("postpone", "refused"):
        b.add("request_postpone", HANDLER, working_hours=4, reason="需协调")
        decision = "approve" if path == "postpone" else "refuse"
        b.add("decide_postpone", DISPATCHER, decision=decision)
    b.add("handle", HANDLER, result="已处置")
    b.add("forward", DISPATCHER)
    b.add("request_check", OPERATOR)
    if path == "rework":
        b.add("check_fail", checker, note="未处置到位")
        b.add("handle", HANDLER, result="已返工")
        b.add("forward", DISPATCHER)
        b.add("request_check", OPERATOR)
    b.add("check_pass", checker, note="已结案")
    return Plan(source, reporter, grid, start, b.steps)


def holiday_plans(grids: list[str], bureaus: list[str]) -> list[Plan]:
    """Cases whose time limits are decided by the holidays, with outcomes worked out by hand:
    - A: reported Wed 30 Sep 17:00, 1 working hour to accept: 0.5 h that day, 0.5 h on Thu
      8 Oct (1–7 Oct are holidays), so accepting at 8 Oct 08:50 is on time.
    - B: dispatched 30 Sep 10:30 (4 working hours: due 16:00), postponed by 8 hours: due
      8 Oct 16:30 (1.5 h on 30 Sep, 6.5 h on 8 Oct); handled 8 Oct 16:00, on time.
    - C: reported Fri 9 Oct 17:00; Sat 10 Oct is a working day (调休), so the hour runs out
      on Saturday 09:00 and verifying on Mon 12 Oct 08:45 is late.
    """
    g1, g2 = grids[0], grids[-1]
    b1, b2 = bureaus[0], bureaus[1]
    sep30, oct8, oct9, oct12 = (dt.date(2026, 9, 30), dt.date(2026, 10, 8),
                                dt.date(2026, 10, 9), dt.date(2026, 10, 12))  # fmt: skip

    def closing(day: dt.date, hour: int, minute: int, checker: str) -> list[Step]:
        t = local(day, hour, minute)
        return [
            Step("forward", DISPATCHER, t),
            Step("request_check", OPERATOR, t + dt.timedelta(minutes=10)),
            Step("check_pass", checker, t + dt.timedelta(minutes=20), params={"note": "好"}),
        ]

    a = Plan("inspector", "ev-insp-1", g1, local(sep30, 17, 0), [
        Step("accept", OPERATOR, local(oct8, 8, 50)),
        Step("file", FILER, local(oct8, 9, 0)),
        Step("dispatch", DISPATCHER, local(oct8, 9, 10), params={"bureau": b1}),
        Step("receive", HANDLER, local(oct8, 9, 20)),
        Step("handle", HANDLER, local(oct8, 9, 30), params={"result": "好"}),
        *closing(oct8, 9, 40, "ev-insp-2"),
    ])  # fmt: skip
    b = Plan("phone", OPERATOR, g1, local(sep30, 10, 0), [
        Step("verify", "ev-insp-1", local(sep30, 10, 10), params={"note": "属实"}),
        Step("file", FILER, local(sep30, 10, 20)),
        Step("dispatch", DISPATCHER, local(sep30, 10, 30), params={"bureau": b2}),
        Step("receive", HANDLER, local(sep30, 10, 40)),
        Step("request_postpone", HANDLER, local(sep30, 10, 50),
             params={"working_hours": 8, "reason": "节日"}),
        Step("decide_postpone", DISPATCHER, local(sep30, 11, 0), params={"decision": "approve"}),
        Step("handle", HANDLER, local(oct8, 16, 0), params={"result": "好"}),
        *closing(oct8, 16, 10, "ev-insp-1"),
    ])  # fmt: skip
    c = Plan("web", OPERATOR, g2, local(oct9, 17, 0), [
        Step("verify", "ev-insp-3", local(oct12, 8, 45), late=True, params={"note": "属实"}),
        Step("file", FILER, local(oct12, 8, 55)),
        Step("dispatch", DISPATCHER, local(oct12, 9, 5), params={"bureau": b1}),
        Step("receive", HANDLER, local(oct12, 9, 15)),
        Step("handle", HANDLER, local(oct12, 9, 25), params={"result": "好"}),
        *closing(oct12, 9, 35, "ev-insp-3"),
    ])  # fmt: skip
    return [a, b, c]


# ------------------------------------------------------------------ counting by hand


def day_of(at: dt.datetime) -> dt.date:
    return at.astimezone(TZ).date()


def expected_counts(plans: list[Plan]) -> Counter[tuple[str, str, str, dt.date]]:
    """Every measure per (subject kind, subject, day), counted from the plans."""
    n: Counter[tuple[str, str, str, dt.date]] = Counter()
    for p in plans:
        created = day_of(p.created)
        areas = [("street", p.street), ("community", p.community), ("grid", p.grid)]
        if p.source == "inspector":
            n["inspector", p.reporter, "reports", created] += 1
        filed_on: dt.date | None = None
        assignment: dict[str, Any] = {}
        all_on_time = True
        for s in p.steps:
            day, on_time = day_of(s.at), not s.late
            if s.name in ENDS_STAGE and s.late:
                all_on_time = False
            if s.name in ("accept", "verify") and p.source == "inspector":
                n["inspector", p.reporter, "reports_valid", created] += 1
            if s.name == "verify":
                n["inspector", s.actor, "verifications", day] += 1
                n["inspector", s.actor, "verifications_on_time", day] += on_time
            if s.name in ("check_pass", "check_fail"):
                n["inspector", s.actor, "checks", day] += 1
                n["inspector", s.actor, "checks_on_time", day] += on_time
            if s.name == "file":
                filed_on = day
                for kind, code in areas:
                    n[kind, code, "filed", day] += 1
                    n[kind, code, "filed_public", day] += p.source != "inspector"
                n["centre", "supervision", "filings", day] += 1
                n["centre", "supervision", "filings_on_time", day] += on_time
            if s.name == "cancel":
                assert filed_on is not None
                for kind, code in areas:
                    n[kind, code, "filed_cancelled", filed_on] += 1
            if s.name == "check_pass":
                assert filed_on is not None
                for kind, code in areas:
                    n[kind, code, "closed", filed_on] += 1
                    n[kind, code, "closed_on_time", filed_on] += all_on_time
            if s.name == "dispatch":
                assignment = {"bureau": s.params["bureau"], "day": day, "seen": set()}
                n["bureau", s.params["bureau"], "dispatched", day] += 1
                n["centre", "command", "dispatches", day] += 1
                n["centre", "command", "dispatches_on_time", day] += on_time
            first = s.name not in assignment.get("seen", set())
            key = ("bureau", assignment.get("bureau", ""))
            if s.name == "handle" and first:
                n[(*key, "handled", assignment["day"])] += 1
                n[(*key, "handled_on_time", assignment["day"])] += on_time
            if s.name == "return":
                n[(*key, "returned", assignment["day"])] += 1
                n["centre", "command", "dispatches_returned", assignment["day"]] += 1
            if s.name == "recall":
                n[(*key, "recalled", assignment["day"])] += 1
                n["centre", "command", "dispatches_recalled", assignment["day"]] += 1
            if s.name == "decide_postpone" and s.params["decision"] == "approve":
                if "approve" not in assignment["seen"]:
                    n[(*key, "postponed", assignment["day"])] += 1
                assignment["seen"].add("approve")
            if s.name == "check_fail" and first:
                n[(*key, "reworked", assignment["day"])] += 1
            if assignment:
                assignment["seen"].add(s.name)
    return Counter({k: v for k, v in n.items() if v})


def summed(
    counts: Counter[tuple[str, str, str, dt.date]], kind: str, first: str, last: str
) -> dict[str, Counter[str]]:
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    found: dict[str, Counter[str]] = {}
    for (k, subject, measure, day), v in counts.items():
        if k == kind and lo <= day <= hi:
            found.setdefault(subject, Counter())[measure] += v
    return found


def ratio(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


# The formulas as the reference states them, written out here independently of the table.
FORMULAS: dict[str, Callable[[Counter[str]], tuple[int, int]]] = {
    "inspector.valid_report_rate": lambda m: (m["reports_valid"], m["reports"]),
    "inspector.on_time_verification_rate": lambda m: (m["verifications_on_time"],
                                                      m["verifications"]),
    "inspector.on_time_check_rate": lambda m: (m["checks_on_time"], m["checks"]),
    "inspector.miss_rate": lambda m: (m["filed_public"], m["filed"]),
    # A recalled dispatch never reached the bureau: it is not counted as the bureau's.
    "bureau.handling_rate": lambda m: (m["handled"], m["dispatched"] - m["recalled"]),
    "bureau.on_time_handling_rate": lambda m: (m["handled_on_time"],
                                               m["dispatched"] - m["recalled"]),
    "bureau.rework_rate": lambda m: (m["reworked"], m["handled"]),
    "bureau.postponement_rate": lambda m: (m["postponed"], m["dispatched"] - m["recalled"]),
    "bureau.return_rate": lambda m: (m["returned"], m["dispatched"] - m["recalled"]),
    "centre.on_time_filing_rate": lambda m: (m["filings_on_time"], m["filings"]),
    "centre.on_time_dispatch_rate": lambda m: (m["dispatches_on_time"], m["dispatches"]),
    "centre.dispatch_accuracy": lambda m: (
        m["dispatches"] - m["dispatches_returned"] - m["dispatches_recalled"], m["dispatches"]
    ),
    **{
        f"{area}.{name}": f
        for area in ("street", "community", "grid")
        for name, f in (
            ("closing_rate", lambda m: (m["closed"], m["filed"] - m["filed_cancelled"])),
            ("on_time_closing_rate",
             lambda m: (m["closed_on_time"], m["filed"] - m["filed_cancelled"])),
        )
    },
}  # fmt: skip
LOWER_IS_BETTER = {"inspector.miss_rate", "bureau.rework_rate", "bureau.postponement_rate",
                   "bureau.return_rate", "street.case_density", "community.case_density",
                   "grid.case_density"}  # fmt: skip
CENTRE_OF = {"centre.on_time_filing_rate": "supervision", "centre.on_time_dispatch_rate": "command",
             "centre.dispatch_accuracy": "command"}  # fmt: skip


def scoring_config() -> dict[str, Any]:
    """Thresholds at quarters (density: 50/100/200/400 per km²), weights equal per kind."""
    rules: dict[str, dict[str, Any]] = {}
    for kind in indicators.SUBJECT_KINDS:
        keys = [k for k in FORMULAS if k.startswith(kind + ".")]
        if kind in ("street", "community", "grid"):
            keys.append(f"{kind}.case_density")
        for key in keys:
            if key.endswith("case_density"):
                thresholds: list[float] = [50, 100, 200, 400]
            elif key in LOWER_IS_BETTER:
                thresholds = [0.1, 0.25, 0.5, 0.75]
            else:
                thresholds = [0.9, 0.75, 0.5, 0.25]
            rules[key] = {"weight": 1 / len(keys), "thresholds": thresholds}
    return {"points": {"优": 5, "良": 4, "中": 3, "差": 2, "劣": 1}, "indicators": rules,
            "total": [4.5, 3.5, 2.5, 1.5]}  # fmt: skip


def grade_by_hand(value: float, t: list[float], lower: bool) -> str:
    names = "优良中差"
    for i, bound in enumerate(t):
        if (lower and value <= bound) or (not lower and value >= bound):
            return names[i]
    return "劣"


# ------------------------------------------------------------------ fixtures


@dataclasses.dataclass
class History:
    install: Install
    plans: list[Plan]
    grids: list[str]
    bureaus: list[str]

    @property
    def url(self) -> str:
        return self.install.settings.database_url

    def get(self, path: str) -> Any:
        reply = self.install.client("ev-leader").get(path)
        assert reply.status_code == 200, (path, reply.data[:300])
        return json.loads(reply.data)  # the app's own parser limits request bodies to 64 KiB


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    settings = demo_database("citygrid_eval", tmp_path_factory.mktemp("eval-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("eval-certs"), rate_limit_api="*=100000/hour"
    )
    for name, street in INSPECTORS.items():
        install.account(name, ["inspector"], STREETS[street])
    install.account("ev-leader", ["leader"])
    install.account("ev-operator", ["operator"])
    with psycopg.connect(settings.database_url) as conn:
        bureaus = [r[0] for r in conn.execute(
            "SELECT code FROM organisation WHERE kind = 'bureau' ORDER BY code")]  # fmt: skip
        grids = [r[0] for r in conn.execute(
            "SELECT DISTINCT ON (community_code, serial % 2) code FROM unit_grid"
            " ORDER BY community_code, serial % 2, code")]  # fmt: skip
    assert len(bureaus) >= 5 and len(grids) == 8
    rng = random.Random(20261001)
    plans = holiday_plans(grids, bureaus) + [random_plan(rng, grids, bureaus) for _ in range(200)]
    found = services(install.app)
    with db.transaction(settings) as conn:
        for p in plans:
            p.number = store.create(
                conn, settings, found.tiles().grid, found.calendar(), account=p.reporter,
                params={"source": p.source, "kind": "event", "major": "01", "minor": "02",
                        "description": "评价测试", "place": {"grid": p.grid}},
                signed_action=None, now=p.created,
            )  # fmt: skip
            state = "reported"
            for s in p.steps:
                params = dict(s.params)
                if s.name == "cancel":
                    params["duplicate_of"] = plans[0].number
                state, _ = store.act(
                    conn, found.calendar(), number=p.number, name=s.name,
                    params={"from": state, **params}, account=s.actor,
                    signed_action=None, now=s.at,
                )  # fmt: skip
    yield History(install, plans, grids, bureaus)
    install.close()
    db.drop_database(settings)


# ------------------------------------------------------------------ tests


def test_the_store_agrees_with_the_planned_time_limits(history: History) -> None:
    """Each planned stage ending is on time or late as worked out (holidays and 调休 too)."""
    with psycopg.connect(history.url) as conn:
        rows = conn.execute(
            "SELECT c.number, e.transition, e.on_time FROM case_event e"
            " JOIN city_case c ON c.id = e.case_id WHERE e.transition <> 'create' ORDER BY e.id"
        ).fetchall()
    got = [(n, t, o) for n, t, o in rows]
    planned = [
        (p.number, s.name, (not s.late) if s.name in ENDS_STAGE else None)
        for p in history.plans
        for s in p.steps
    ]
    assert got == planned
    a, b, c = history.plans[:3]
    assert [s.late for s in a.steps] == [False] * len(a.steps)  # holidays gave the time
    assert [s.late for s in b.steps] == [False] * len(b.steps)
    assert c.steps[0].late  # Saturday 10 October was a working day
    assert len(history.plans) >= 200 and len({p.grid for p in history.plans}) == 8


def test_every_indicator_and_score_equals_the_hand_count(history: History) -> None:
    counts = expected_counts(history.plans)
    cfg = scoring_config()
    leader = history.install.client("ev-leader")
    nonce_body = {"based_on": 0, "config": cfg}
    envelope = history.install.envelope("ev-leader", "eval.configure", "evaluation config",
                                        nonce_body)  # fmt: skip
    saved = leader.post("/evaluation/config", json=envelope)
    assert saved.status_code == 201, saved.get_json()
    version = saved.get_json()["version"]
    with psycopg.connect(history.url) as conn:
        areas = {k: aggregates.areas(conn, k) for k in ("street", "community", "grid")}
    checked = 0
    for kind in indicators.SUBJECT_KINDS:
        shown = history.get(
            f"/evaluation/indicators?subject={kind}&from={CURRENT[0]}&to={CURRENT[1]}"
        )
        assert shown["config_version"] == version
        assert shown["previous_period"] == {"from": PREVIOUS[0], "to": PREVIOUS[1]}
        assert all(i["formula"] and i["numerator"]["formula"] for i in shown["indicators"])
        now = summed(counts, kind, *CURRENT)
        before = summed(counts, kind, *PREVIOUS)
        if kind == "inspector":  # an inspector's miss rate counts the cases of the street
            for window, period in ((now, CURRENT), (before, PREVIOUS)):
                streets = summed(counts, "street", *period)
                for account, street in INSPECTORS.items():
                    mine = window.setdefault(account, Counter())
                    for measure in ("filed", "filed_public"):
                        mine[measure] = streets.get(street, Counter())[measure]
        totals: dict[str, float | None] = {}
        for row in shown["subjects"]:
            subject = row["subject"]
            m, m_before = now.get(subject, Counter()), before.get(subject, Counter())
            parts = []
            value: float | None
            previous: float | None
            den: float
            for key, got in row["indicators"].items():
                lower = key in LOWER_IS_BETTER
                if key.endswith("case_density"):
                    area = areas[kind][subject]
                    num, den, value = m["filed"], area, round(m["filed"] / area, 6)
                    previous = round(m_before["filed"] / area, 6)
                else:
                    num, den = FORMULAS[key](m)
                    value = ratio(num, den)
                    previous = ratio(*FORMULAS[key](m_before))
                assert (got["numerator"], got["value"], got["previous_value"]) == (
                    num, value, previous), (kind, subject, key, got, m)  # fmt: skip
                assert got["denominator"] == pytest.approx(den, abs=1e-6), (kind, subject, key)
                if value is None:
                    assert got["grade"] is None
                    continue
                rule = cfg["indicators"][key]
                grade = grade_by_hand(value, rule["thresholds"], lower)
                assert got["grade"] == grade, (kind, subject, key, value)
                parts.append((cfg["points"][grade] * rule["weight"], rule["weight"]))
                checked += 1
            expected_keys = {k for k in FORMULAS if k.startswith(kind + ".")} | (
                {f"{kind}.case_density"} if kind in areas else set()
            )
            if kind == "centre":
                expected_keys = {k for k in expected_keys if CENTRE_OF[k] == subject}
            assert set(row["indicators"]) == expected_keys
            total = round(sum(s for s, _ in parts) / sum(w for _, w in parts), 2) if parts else None
            assert (
                row["score"] == pytest.approx(total) if total is not None else row["score"] is None
            )
            if total is not None:
                assert row["grade"] == grade_by_hand(total, cfg["total"], False)
            totals[subject] = total
        # Rank: 1 + the number of subjects with a higher total.
        for row in shown["subjects"]:
            t = totals[row["subject"]]
            higher = sum(1 for o in totals.values() if o is not None and t is not None and o > t)
            assert row["rank"] == (None if t is None else 1 + higher)
        scores = [r["score"] for r in shown["subjects"] if r["score"] is not None]
        assert scores == sorted(scores, reverse=True)
    assert checked > 150


def test_a_few_figures_worked_out_in_full(history: History) -> None:
    """The holiday cases alone, on the days only they have: case A was filed on 8 October,
    a holiday-crossing acceptance, closed with every stage on time."""
    a = history.plans[0]
    shown = history.get(f"/evaluation/drill?indicator=grid.on_time_closing_rate&subject={a.grid}"
                        "&from=2026-10-08&to=2026-10-08")  # fmt: skip
    on_oct8 = [p.number for p in history.plans if p.grid == a.grid
               and not any(s.name == "cancel" for s in p.steps) and any(
        s.name == "file" and day_of(s.at) == dt.date(2026, 10, 8) for s in p.steps)]  # fmt: skip
    assert a.number in shown["numerator"]["cases"]
    assert shown["denominator"]["count"] == len(on_oct8)
    # B: dispatched on 30 September to the second bureau, postponed, handled on time.
    b = history.plans[1]
    drill = history.get(f"/evaluation/drill?indicator=bureau.on_time_handling_rate"
                        f"&subject={history.bureaus[1]}&from=2026-09-30&to=2026-09-30")  # fmt: skip
    assert b.number in drill["numerator"]["cases"] and b.number in drill["denominator"]["cases"]
    post = history.get(f"/evaluation/drill?indicator=bureau.postponement_rate"
                       f"&subject={history.bureaus[1]}&from=2026-09-30&to=2026-09-30")  # fmt: skip
    assert b.number in post["numerator"]["cases"]
    # C: verified late by ev-insp-3 on 12 October.
    c = history.plans[2]
    late = history.get("/evaluation/drill?indicator=inspector.on_time_verification_rate"
                       "&subject=ev-insp-3&from=2026-10-12&to=2026-10-12")  # fmt: skip
    assert c.number in late["denominator"]["cases"]
    assert c.number not in late["numerator"]["cases"]


def test_drill_down_lists_the_cases_behind_each_figure(history: History) -> None:
    for kind in ("bureau", "inspector", "centre", "street"):
        shown = history.get(
            f"/evaluation/indicators?subject={kind}&from={CURRENT[0]}&to={CURRENT[1]}"
        )
        for row in shown["subjects"]:
            for key, got in row["indicators"].items():
                drill = history.get(f"/evaluation/drill?indicator={key}&subject={row['subject']}"
                                    f"&from={CURRENT[0]}&to={CURRENT[1]}")  # fmt: skip
                assert drill["numerator"]["count"] == got["numerator"], (key, row["subject"])
                if drill["denominator"] is not None:
                    assert drill["denominator"]["count"] == got["denominator"]
                    assert set(drill["numerator"]["cases"]) <= set(drill["denominator"]["cases"])
    # Case numbers are real: the bureau's handled cases are among those dispatched to it.
    bureau = history.bureaus[0]
    drill = history.get(f"/evaluation/drill?indicator=bureau.handling_rate&subject={bureau}"
                        f"&from={CURRENT[0]}&to={CURRENT[1]}")  # fmt: skip
    sent = {p.number for p in history.plans for s, after in itertools.pairwise([*p.steps, None])
            if s.name == "dispatch" and s.params["bureau"] == bureau
            and (after is None or after.name != "recall")  # taken back: not the bureau's
            and CURRENT[0] <= day_of(s.at).isoformat() <= CURRENT[1]}  # fmt: skip
    assert set(drill["denominator"]["cases"]) == sent


def test_aggregates_equal_a_full_scan_and_a_rebuild(history: History) -> None:
    first, last = dt.date(2026, 9, 1), dt.date(2026, 12, 31)
    with psycopg.connect(history.url) as conn:
        kept = {k: aggregates.day_counts(conn, k, first, last) for k in indicators.SUBJECT_KINDS}
        scanned = {k: aggregates.scan_counts(conn, k, first, last) for k in kept}
        assert kept == scanned
        days_before = conn.execute(
            "SELECT subject_kind, day, subject, measure, n FROM case_day_fact ORDER BY 1, 2, 3, 4"
        ).fetchall()
        with conn.transaction():
            aggregates.rebuild(conn, "Asia/Shanghai")
        days_after = conn.execute(
            "SELECT subject_kind, day, subject, measure, n FROM case_day_fact ORDER BY 1, 2, 3, 4"
        ).fetchall()
    assert days_before == days_after
    # And the hand count, day by day.
    expected = expected_counts(history.plans)
    got = {(k, s, m, d): n for k, d, s, m, n in days_after}
    assert got == dict(expected)


def test_the_serving_role_reads_but_cannot_write_the_aggregates(history: History) -> None:
    app_url = history.install.settings.serving_database_url
    with psycopg.connect(app_url) as conn:
        found = conn.execute("SELECT count(*) FROM case_day_fact").fetchone()
        assert found is not None and found[0] > 0
        for statement in ("UPDATE case_day_fact SET n = n + 1",
                          "DELETE FROM case_fact",
                          "UPDATE eval_config SET account = 'x'"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_configuration_is_versioned_signed_and_checked(history: History) -> None:
    install = history.install
    leader = install.client("ev-leader")
    shown = history.get("/evaluation/config")
    version = shown["version"]
    cfg = shown["config"]
    bad = {**cfg, "indicators": {**cfg["indicators"],
           "bureau.return_rate": {"weight": 0.5, "thresholds": [0.1, 0.2, 0.3, 0.4]}}}  # fmt: skip
    reply = leader.post(
        "/evaluation/config",
        json=install.envelope(
            "ev-leader", "eval.configure", "evaluation config", {"based_on": version, "config": bad}
        ),
    )
    assert reply.status_code == 400 and "bureau indicators sum to" in reply.get_json()["message"]
    backwards = {**cfg, "indicators": {**cfg["indicators"],
                 "bureau.return_rate": {"weight": cfg["indicators"]["bureau.return_rate"]["weight"],
                                        "thresholds": [0.4, 0.3, 0.2, 0.1]}}}  # fmt: skip
    reply = leader.post("/evaluation/config", json=install.envelope(
        "ev-leader", "eval.configure", "evaluation config",
        {"based_on": version, "config": backwards}))  # fmt: skip
    assert reply.status_code == 400 and "ascending" in reply.get_json()["message"]
    stale = leader.post(
        "/evaluation/config",
        json=install.envelope(
            "ev-leader",
            "eval.configure",
            "evaluation config",
            {"based_on": version + 5, "config": cfg},
        ),
    )
    assert stale.status_code == 409
    riding = leader.post("/evaluation/config", json=install.envelope(
        "ev-leader", "eval.configure", "evaluation config",
        {"based_on": version, "config": cfg, "reason": "x"}))  # fmt: skip
    assert (
        riding.status_code == 400 and "unknown parameter 'reason'" in riding.get_json()["message"]
    )
    assert history.get("/evaluation/config")["version"] == version
    unsigned = leader.post("/evaluation/config", json={"based_on": version, "config": cfg})
    assert unsigned.status_code == 400
    wrong_action = leader.post(
        "/evaluation/config",
        json=install.envelope(
            "ev-leader", "account.add", "evaluation config", {"based_on": version, "config": cfg}
        ),
    )
    assert wrong_action.status_code == 400
    operator = install.client("ev-operator").post(
        "/evaluation/config",
        json=install.envelope(
            "ev-operator",
            "eval.configure",
            "evaluation config",
            {"based_on": version, "config": cfg},
        ),
    )
    assert operator.status_code == 403
    changed = {**cfg, "points": {"优": 100, "良": 80, "中": 60, "差": 40, "劣": 20}}
    ok = leader.post(
        "/evaluation/config",
        json=install.envelope(
            "ev-leader",
            "eval.configure",
            "evaluation config",
            {"based_on": version, "config": changed},
        ),
    )
    assert ok.status_code == 201, ok.get_json()
    after = history.get("/evaluation/config")
    assert after["version"] == version + 1 and after["config"]["points"]["优"] == 100
    assert [v["version"] for v in after["versions"]][-2:] == [version, version + 1]
    assert history.get(f"/evaluation/config?version={version}")["config"] == cfg
    assert (
        after["versions"][-1]["signed_action"] and after["versions"][-1]["account"] == "ev-leader"
    )


def test_bad_queries_are_400_naming_the_problem(history: History) -> None:
    leader = history.install.client("ev-leader")
    cases = {
        "/evaluation/indicators?subject=planet&from=2026-01-01&to=2026-01-31": "subject",
        "/evaluation/indicators?subject=bureau&to=2026-01-31": "'from'",
        "/evaluation/indicators?subject=bureau&from=0001-01-01&to=0001-01-02": "1900-01-01",
        "/evaluation/trend?indicator=bureau.handling_rate&from=9999-12-01&to=9999-12-31": "from",
        "/evaluation/indicators?subject=bureau&from=2026-13-01&to=2026-01-31": "from must be",
        "/evaluation/indicators?subject=bureau&from=2026-02-01&to=2026-01-31": "before from",
        "/evaluation/indicators?subject=bureau&from=2020-01-01&to=2026-01-31": "at most",
        "/evaluation/drill?indicator=nope&subject=x&from=2026-01-01&to=2026-01-02": "indicator",
        "/evaluation/drill?indicator=bureau.handling_rate&from=2026-01-01&to=2026-01-02":
            "'subject'",
        "/evaluation/config?version=x": "version",
        "/evaluation/config?version=%C2%B2": "version",  # a digit to isdigit(), not to int(): 500
    }  # fmt: skip
    for path, named in cases.items():
        reply = leader.get(path)
        assert reply.status_code == 400 and named in reply.get_json()["message"], path
    assert leader.get("/evaluation/config?version=999").status_code == 404


def test_scoring_is_pure_and_checks_its_input() -> None:
    cfg = scoring.parse(scoring.DEFAULT)
    assert scoring.grade(0.95, [0.95, 0.9, 0.8, 0.7], "higher") == "优"
    assert scoring.grade(0.9499, [0.95, 0.9, 0.8, 0.7], "higher") == "良"
    assert scoring.grade(0.69, [0.95, 0.9, 0.8, 0.7], "higher") == "劣"
    assert scoring.grade(0.05, [0.05, 0.1, 0.15, 0.2], "lower") == "优"
    assert scoring.grade(0.21, [0.05, 0.1, 0.15, 0.2], "lower") == "劣"
    # 0.3 × 100 (优) + 0.3 × 60 (中) over the weights 0.6 that have a value: 80 → 良
    s = scoring.score({"bureau.handling_rate": 0.96, "bureau.on_time_handling_rate": 0.85,
                       "bureau.rework_rate": None}, cfg)  # fmt: skip
    assert (s.total, s.grade) == (80.0, "良")
    assert scoring.rank({"a": 80.0, "b": 90.0, "c": 80.0, "d": None}) == {
        "a": 2, "b": 1, "c": 2, "d": None}  # fmt: skip
    for broken, named in (
        ({**scoring.DEFAULT, "extra": 1}, "unknown field"),
        ({**scoring.DEFAULT, "points": {"优": 1}}, "config.points"),
        # Points near the largest float summed to Infinity on the big screen (invalid JSON).
        (
            {**scoring.DEFAULT, "points": dict.fromkeys(scoring.GRADES, 1.7976931348623157e308)},
            "config.points must each be from 0 to 1000",
        ),
        ({**scoring.DEFAULT, "points": {**scoring.DEFAULT["points"], "劣": -20}}, "from 0 to"),
        ({**scoring.DEFAULT, "total": [1, 2]}, "config.total"),
        ({**scoring.DEFAULT, "indicators": {}}, "is missing"),
    ):
        with pytest.raises(Exception, match=named):
            scoring.parse(broken)
    ind = indicators.INDICATORS["centre.dispatch_accuracy"]
    assert ind.formula() == (
        "派遣准确率 = (dispatches - dispatches_returned - dispatches_recalled) / dispatches"
    )
    assert indicators.evaluate(ind, {"dispatches": 4, "dispatches_returned": 1}).value == 0.75
    assert (
        indicators.evaluate(
            ind, {"dispatches": 4, "dispatches_returned": 1, "dispatches_recalled": 1}
        ).value
        == 0.5
    )
    assert report.Period(dt.date(2026, 10, 1), dt.date(2026, 10, 31)).previous() == report.Period(
        dt.date(2026, 8, 31), dt.date(2026, 9, 30))  # fmt: skip


def test_the_trigger_keeps_counts_in_the_transition_transaction(history: History) -> None:
    """A transition rolled back leaves no count behind; one committed is counted at once."""
    p = next(p for p in history.plans if p.steps and p.steps[-1].name == "receive")
    found = services(history.install.app)
    day = day_of(p.steps[-1].at)
    dispatch_day = max(day_of(s.at) for s in p.steps if s.name == "dispatch")
    bureau = [s for s in p.steps if s.name == "dispatch"][-1].params["bureau"]

    def handled() -> int:
        with psycopg.connect(history.url) as conn:
            c = aggregates.day_counts(conn, "bureau", dispatch_day, dispatch_day)
        return c.get(bureau, {}).get("handled", 0)

    before = handled()
    with psycopg.connect(history.url) as conn:
        store.act(conn, found.calendar(), number=p.number, name="handle",
                  params={"from": "handling", "result": "好"}, account=HANDLER,
                  signed_action=None, now=local(day, 11, 55))  # fmt: skip
        conn.rollback()
    assert handled() == before
    with db.transaction(history.install.settings) as conn:
        store.act(conn, found.calendar(), number=p.number, name="handle",
                  params={"from": "handling", "result": "好"}, account=HANDLER,
                  signed_action=None, now=local(day, 11, 55))  # fmt: skip
    assert handled() == before + 1
    p.steps.append(Step("handle", HANDLER, local(day, 11, 55), params={"result": "好"}))
