"""The case workflow as one table: every transition with its source states, target, the
policy action that may fire it, and the fields it needs. Pure: no I/O.

The table is the single source for the state machine (`fire`), the policy actions
(`auth.policy` grants them by role), the API docs and the README's state diagram
(`diagram()`), so none of them can drift from the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from mapserver.errors import Conflict, InvalidInput

STATES: dict[str, str] = {
    "reported": "已上报",
    "accepted": "已受理",
    "rejected": "不予受理",
    "filed": "已立案",
    "dispatched": "已派遣",
    "handling": "处置中",
    "handled": "已处置",
    "feedback": "已反馈",
    "checking": "核查中",
    "closed": "已结案",
    "suspended": "挂账",
    "cancelled": "已作废",
}
FINAL = frozenset({"rejected", "closed", "cancelled"})
OPEN = frozenset(STATES) - FINAL
SUSPENDABLE = frozenset({"filed", "dispatched", "handling"})
# A street office supervises the bureau while it has the case (mapserver.cases.supervision).
SUPERVISED = frozenset({"dispatched", "handling"})

# The stage a state belongs to, for deadlines: each stage has its own limit per class.
STAGE_OF: dict[str, str] = {
    "reported": "accept",
    "accepted": "file",
    "filed": "dispatch",
    "dispatched": "handle",
    "handling": "handle",
    "handled": "forward",
    "feedback": "check",
    "checking": "check",
}
STAGES = ("accept", "file", "dispatch", "handle", "forward", "check")


class Transition(NamedTuple):
    name: str
    sources: frozenset[str]
    target: str  # "resume": back to the state suspended from; "stay": the same state
    action: str  # the policy action (auth.policy grants it by role)
    title: str
    needs: tuple[str, ...] = ()  # parameters that must be present and non-empty
    choices: Mapping[str, frozenset[str]] = {}  # parameters with a closed set of values


def _t(
    name: str,
    sources: set[str],
    target: str,
    action: str,
    title: str,
    needs: tuple[str, ...] = (),
    choices: Mapping[str, frozenset[str]] | None = None,
) -> Transition:
    return Transition(name, frozenset(sources), target, action, title, needs, choices or {})


TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("accept", {"reported"}, "accepted", "case.accept", "受理"),
        _t("verify", {"reported"}, "accepted", "case.verify", "核实属实", ("note",)),
        _t(
            "reject",
            {"reported"},
            "rejected",
            "case.reject",
            "不予受理",
            ("reason",),
            {"reason": frozenset({"invalid", "duplicate"})},
        ),
        _t("file", {"accepted"}, "filed", "case.file", "立案"),
        _t("dispatch", {"filed"}, "dispatched", "case.dispatch", "派遣", ("bureau",)),
        # The command centre takes back a dispatch the bureau has not signed for (a wrong
        # bureau, or a case forwarded to the city platform and withdrawn there).
        _t("recall", {"dispatched"}, "filed", "case.dispatch", "撤回派遣", ("reason",)),
        _t("receive", {"dispatched"}, "handling", "case.handle", "签收"),
        _t("return", {"dispatched", "handling"}, "filed", "case.handle", "退回", ("reason",)),
        _t(
            "request_postpone",
            {"handling"},
            "handling",
            "case.handle",
            "申请延期",
            ("working_hours", "reason"),
        ),
        _t(
            "decide_postpone",
            {"handling"},
            "handling",
            "case.postpone",
            "审批延期",
            ("decision",),
            {"decision": frozenset({"approve", "refuse"})},
        ),
        _t("handle", {"handling"}, "handled", "case.handle", "处置完毕", ("result",)),
        _t("forward", {"handled"}, "feedback", "case.forward", "反馈"),
        _t("request_check", {"feedback"}, "checking", "case.accept", "派发核查"),
        _t("check_pass", {"checking"}, "closed", "case.verify", "核查通过", ("note",)),
        _t("check_fail", {"checking"}, "handling", "case.verify", "核查未通过（返工）", ("note",)),
        _t("suspend", set(SUSPENDABLE), "suspended", "case.suspend", "挂账", ("reason",)),
        _t("resume", {"suspended"}, "resume", "case.suspend", "解除挂账"),
        _t(
            "cancel",
            {"reported", "accepted", "filed"},
            "cancelled",
            "case.cancel",
            "作废（重复）",
            ("duplicate_of",),
        ),
        # Street supervision: a reminder (提醒) or an order (督办, answer due on the work
        # calendar) to the bureau handling the case, and the bureau's answer. The case stays
        # where it is; each is a signed step of its history.
        _t("remind", set(SUPERVISED), "stay", "case.supervise", "提醒", ("message",)),
        _t("order", set(SUPERVISED), "stay", "case.supervise", "督办", ("message",)),
        _t("answer", {*SUPERVISED, "handled"}, "stay", "case.handle", "督办回复", ("reply",)),
    )
}

# Creating a case is not a transition of an existing one: its actions by source.
SOURCES: dict[str, str] = {
    "inspector": "case.report",  # an inspector's report from the field
    "phone": "case.record",  # public complaints, recorded by an operator
    "web": "case.record",
    "sms": "case.record",
    "city_platform": "case.record",  # transferred from the city-level platform
    "leader": "case.record",  # a leader's instruction, recorded by an operator
}

ACTIONS = frozenset({t.action for t in TRANSITIONS.values()} | set(SOURCES.values()))


class IllegalTransition(Conflict):
    """The case is not in a state this transition leaves from (409, with what is allowed)."""

    def __init__(self, name: str, state: str):
        allowed = allowed_from(state)
        super().__init__(
            f"cannot {name} a case that is {state}; allowed: {', '.join(allowed) or 'none'}"
        )
        self.state = state
        self.allowed = allowed

    @property
    def details(self) -> dict[str, object]:
        return {"state": self.state, "allowed": self.allowed}


def transition(name: str) -> Transition:
    found = TRANSITIONS.get(name)
    if found is None:
        raise InvalidInput(f"no transition {name!r}; known: {', '.join(TRANSITIONS)}")
    return found


def allowed_from(state: str) -> list[str]:
    return [t.name for t in TRANSITIONS.values() if state in t.sources]


def open_to(state: str, postpone_pending: bool, order_waiting: bool) -> list[str]:
    """The transitions a case can take next: the table's from `state`, less the steps that
    could only be refused (`store.act` answers each with 409): a second postponement request
    while one is pending, a decision without one, an answer with no order waiting."""
    refused = {"request_postpone" if postpone_pending else "decide_postpone"}
    if not order_waiting:
        refused.add("answer")
    return [name for name in allowed_from(state) if name not in refused]


# What any step may carry besides its own fields: the state it was taken from (and the one
# it leads to, as the person saw it), its photos and recordings, the device's time on site,
# and a remark.
STEP_FIELDS = frozenset({"from", "to", "attachments", "client_time", "note"})
# What a new case may carry; `major`/`minor` of a component case are its component's class.
CREATE_FIELDS = frozenset(
    {"source", "kind", "major", "minor", "component", "place", "description", "contact_digest",
     "attachments", "client_time"}
)  # fmt: skip


def unknown_field(given: Iterable[str], known: Iterable[str]) -> None:
    """400 naming the first field no client of this step writes. The signed parameters are
    kept in the history and shown to whoever may see the case: nothing else may ride along
    (a point, say, which never leaves the secure zone)."""
    extra = sorted(set(given) - set(known))
    if extra:
        raise InvalidInput(f"unknown field {extra[0][:40]!r}")


def check_fields(t: Transition, parameters: Mapping[str, Any]) -> None:
    """400 naming the first missing, unusable or unknown field."""
    unknown_field(parameters, STEP_FIELDS | set(t.needs))
    for field in t.needs:
        value = parameters.get(field)
        if value is None or value == "" or value == []:
            raise InvalidInput(f"{t.name} needs the field {field!r}")
    for field, values in t.choices.items():
        chosen = parameters.get(field)
        if not isinstance(chosen, str) or chosen not in values:
            raise InvalidInput(f"{field} must be one of {', '.join(sorted(values))}")


def fire(name: str, state: str, parameters: Mapping[str, Any], resume_to: str | None = None) -> str:
    """The state after firing transition `name` from `state`; raises IllegalTransition (409)
    or InvalidInput (400). Pure."""
    t = transition(name)
    if state not in t.sources:
        raise IllegalTransition(name, state)
    check_fields(t, parameters)
    if t.target == "resume":
        if resume_to is None or resume_to not in SUSPENDABLE:
            raise IllegalTransition(name, state)
        return resume_to
    if t.target == "stay":
        return state
    return t.target


def diagram() -> str:
    """The state diagram (Mermaid), generated from the table for the README."""
    lines = ["stateDiagram-v2", "    [*] --> reported"]
    for t in TRANSITIONS.values():
        for source in sorted(t.sources):
            target = {"resume": "filed", "stay": source}.get(t.target, t.target)
            label = f"{t.name} ({t.action})"
            if t.target == "resume":
                label += " back to the state suspended from"
            lines.append(f"    {source} --> {target}: {label}")
    for final in sorted(FINAL):
        lines.append(f"    {final} --> [*]")
    return "\n".join(lines) + "\n"
