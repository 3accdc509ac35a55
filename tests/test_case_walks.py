"""Random walks of real cases through the workflow, checked against the pure state machine.

Hypothesis drives the production app (real signatures, real database) through sequences of
transitions fired by every desk's role, with fields mostly right and sometimes missing, of
the wrong type, or signed on a state the case has left. After every step the case must agree
with `flow.fire`, the workflow table's pure function, and with its own history:

- a transition the role may not fire is 403, and one the table refuses is a 4xx;
- an accepted one (200) moves the case where the table says, adds exactly one event and one
  version, and names that state in its answer;
- a refusal (4xx) changes nothing: state, version, bureau and history as before;
- nothing is ever a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from auth import policy
from mapserver import db
from mapserver.cases import flow
from mapserver.errors import InvalidInput

from .app_client import Install
from .conftest import demo_database
from .test_cases import ROLES, Desk

# What each transition's fields look like when a person fills them in right.
TEXT = st.sampled_from(["现场属实", "已清运", "原因不明", "请尽快处理"])
# The main road from report to closing: walks take it half the time, or they seldom get far.
AHEAD = frozenset(
    {"accept", "file", "dispatch", "receive", "handle", "forward", "request_check", "check_pass"}
)
GRIDS: list[str] = []  # a unit grid in each of the desk's two streets (set by the test)
# A step that waits on the one before it (an answer on an order, a decision on a request):
# taken half the time after it, or walks seldom get there.
FOLLOWS = {"order": "answer", "request_postpone": "decide_postpone", "receive": "remind"}
WRONG = st.sampled_from([None, "", 0, -1, 1.5, True, [], {}, ["x"], {"a": 1}, "x" * 3000])


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    settings_ = demo_database("citygrid_case_walks", tmp_path_factory.mktemp("walks-var"))
    install = Install(
        settings_, tmp_path_factory.mktemp("walks-certs"), rate_limit_api="*=1000000/hour"
    )
    yield Desk(install)
    install.close()
    db.drop_database(settings_)


def _fields(draw: st.DrawFn, desk: Desk, name: str, numbers: list[str]) -> dict[str, Any]:
    """The fields `name` needs, as a person fills them in: right, mostly."""
    right: dict[str, st.SearchStrategy[Any]] = {
        "bureau": st.sampled_from([desk.bureau, desk.other_bureau]),
        "working_hours": st.integers(1, 40),
        "decision": st.sampled_from(["approve", "refuse"]),
        "reason": st.sampled_from(["invalid", "duplicate"]) if name == "reject" else TEXT,
        "duplicate_of": st.sampled_from(numbers),
    }
    fields = {f: draw(right.get(f, TEXT)) for f in flow.TRANSITIONS[name].needs}
    if fields and draw(st.integers(0, 9)) == 0:  # one field wrong or missing
        field = draw(st.sampled_from(sorted(fields)))
        if draw(st.booleans()):
            del fields[field]
        else:
            fields[field] = draw(WRONG)
    return fields


class Walk(RuleBasedStateMachine):
    desk: Desk  # set by the test below: one install for every walk

    def __init__(self) -> None:
        super().__init__()
        self.numbers: list[str] = []
        self.seen: dict[str, tuple[Any, ...]] = {}  # number → snapshot after the last step
        self.before_suspend: dict[str, str] = {}
        self.last: dict[str, str] = {}  # number → the last transition accepted

    def open(self) -> list[str]:
        return [n for n in self.numbers if self.seen[n][0] not in flow.FINAL]

    @initialize()
    def two_cases(self) -> None:
        for _ in range(2):
            self.new_case()

    @precondition(lambda self: len(self.open()) < 3)  # a few cases at a time, walked far
    @rule()
    def new_case(self) -> None:
        """A case in the first street (its inspector's) or the second (its street office's),
        in turn."""
        reply = self.desk.record(place={"grid": GRIDS[len(self.numbers) % 2]})
        assert reply.status_code == 201, reply.get_json()
        number = reply.get_json()["number"]
        self.numbers.append(number)
        self.seen[number] = self.desk.snapshot(number)

    @precondition(lambda self: self.numbers)
    @rule(data=st.data())
    def fire(self, data: st.DataObject) -> None:
        open_ = self.open()
        if open_ and data.draw(st.integers(0, 9)):
            number = data.draw(st.sampled_from(open_))
        else:
            number = data.draw(st.sampled_from(self.numbers))
        state, version, bureau, events = self.seen[number]
        allowed = flow.allowed_from(state)
        ahead = [n for n in allowed if n in AHEAD]
        follow = FOLLOWS.get(self.last.get(number, ""))
        if follow in allowed and data.draw(st.booleans()):
            name = str(follow)
        elif ahead and data.draw(st.booleans()):
            name = data.draw(st.sampled_from(ahead))
        elif allowed and data.draw(st.integers(0, 4)):
            name = data.draw(st.sampled_from(allowed))
        else:
            name = data.draw(st.sampled_from(sorted(flow.TRANSITIONS)))
        t = flow.TRANSITIONS[name]
        may = sorted(w for w, (role, _) in ROLES.items() if t.action in policy.POLICY[role].actions)
        if bureau is not None and "bureau" in may:  # the bureau that has the case, mostly
            may = ["bureau" if bureau == self.desk.bureau else "otherbureau"] * 3 + may
        if may and data.draw(st.integers(0, 4)):
            who = data.draw(st.sampled_from(may))
        else:
            who = data.draw(st.sampled_from(sorted(ROLES)))
        fields = _fields(data.draw, self.desk, name, self.numbers)
        seen_state = (
            state
            if data.draw(st.integers(0, 9))
            else data.draw(st.sampled_from(sorted(flow.STATES)))
        )
        reply = self.desk.act(who, number, name, from_=seen_state, **fields)
        status = reply.status_code
        after = self.desk.snapshot(number)
        step = (number, name, who, fields, seen_state, state, status, reply.get_json())
        assert status < 500, step

        role = ROLES[who][0]
        if t.action not in policy.POLICY[role].actions:
            assert status == 403, step
        try:
            expected = flow.fire(
                name, state, {"from": seen_state, **fields}, self.before_suspend.get(number)
            )
        except (flow.IllegalTransition, InvalidInput):
            expected = None
        if status == 200:
            assert expected is not None and seen_state == state, step
            assert after[0] == expected == reply.get_json()["state"], step
            assert (after[1], after[3]) == (version + 1, events + 1), step
            self.last[number] = name
            if expected == "suspended":
                self.before_suspend[number] = state
        else:
            assert 400 <= status < 500, step
            assert after == (state, version, bureau, events), step
        self.seen[number] = after

    @invariant()
    def histories_hold_every_version(self) -> None:
        for number in self.numbers[-2:]:
            shown = self.desk.client("leader").get(f"/cases/{number}").get_json()
            assert shown["state"] == self.seen[number][0]
            assert [h["version"] for h in shown["history"]] == list(
                range(1, self.seen[number][1] + 1)
            )


def test_random_walks_agree_with_the_workflow_table(desk: Desk) -> None:
    Walk.desk = desk
    with psycopg.connect(desk.install.settings.database_url) as conn:
        second = conn.execute(
            "SELECT code FROM unit_grid WHERE code LIKE '110108002%' ORDER BY code LIMIT 1"
        ).fetchone()[0]
    GRIDS[:] = [desk.grid, second]
    run = settings(
        max_examples=10,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        derandomize=True,
    )(Walk).TestCase
    run("runTest").runTest()


def test_the_walks_reach_most_of_the_table(desk: Desk) -> None:
    """The walk above is worth something only if it gets past the first states: the steps it
    left behind reach every state of the workflow and fire nearly all of its transitions (all of
    them today)."""
    with psycopg.connect(desk.install.settings.database_url) as conn:
        reached, fired = (
            {r[0] for r in conn.execute(f"SELECT DISTINCT {column} FROM case_event").fetchall()}
            for column in ("to_state", "transition")
        )
    assert reached == set(flow.STATES), set(flow.STATES) - reached
    assert len(fired & set(flow.TRANSITIONS)) >= 0.9 * len(flow.TRANSITIONS), fired
