"""A case's evidence, checked offline: every signed action of its history verifies against
what the verifier pins (CA, log key, witnesses) at the log's time of that act, and together
they form one unbroken chain of states on that case, in the log's order.

Only the creating event may be someone else's than a person's act of this install: a partner
system's Open311 request (its hash stands in the history and the audit log), or a case the
exchange peer forwarded, whose bundle (the peer's person's signed act, in the peer's log)
verifies against the peer's CA and log key, pinned by the verifier as this install's are."""

from __future__ import annotations

from typing import Any, NamedTuple

from audit.logged import Logged
from auth.signed_action import Evidence, SignatureRefused, Trust, logged_entry, verify_bundle
from mapserver.cases import flow
from mapserver.errors import CityGridError
from mapserver.exchange import bundle

FORMAT = "citygrid-case/1"
CREATED = "reported"  # every case starts there, whoever created it
FORWARDED_TO, FORWARDED_BY = "district", "city"  # only the city forwards new cases


class Chain(NamedTuple):
    actions: list[Evidence]  # this install's signed actions, oldest first
    forwarded: bundle.Message | None  # the peer's message the case was created from
    submitted: Logged | None  # the log's entry of the partner's request it was created by
    head: Logged | None  # an export's entry: the case had no more events at its time


def verify_case_bundle(doc: Any, trust: Trust, peer: bundle.PeerTrust | None = None) -> Chain:
    """The verified chain of a case bundle; raises SignatureRefused naming the first event
    that does not verify or does not follow from the one before. `peer`: the exchange peer's
    CA and log key, needed only for a case the peer forwarded."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SignatureRefused("not a CityGrid case bundle")
    number, events = doc.get("case"), doc.get("events")
    if not isinstance(number, str) or not isinstance(events, list) or not events:
        raise SignatureRefused("a case bundle names its case and holds its events")
    verified: list[Evidence] = []
    forwarded = submitted = None
    state = None
    suspended_from = None
    last_leaf = -1  # an act logged without its version: after the one before (_in_place)
    for i, event in enumerate(events, start=1):
        if not isinstance(event, dict):
            raise SignatureRefused(f"event {i}: not an event")
        if event.get("version") != i:
            raise SignatureRefused(f"event {i}: version {event.get('version')!r}, expected {i}")
        if i == 1 and (
            event.get("transition") != "create"
            or event.get("from") is not None
            or event.get("to") != CREATED
        ):
            raise SignatureRefused(f"event 1: a case starts with its creation, in {CREATED!r}")
        if i == 1 and _partner_submission(event):
            # A partner system's request: audited, not a person's act.
            submitted = _submitted(event, number, trust)
            last_leaf = submitted.leaf_index
            state = event.get("to")
            continue
        if i == 1 and _forwarded_case(event):
            forwarded = _forwarded(event["exchange"], peer)
            state = event.get("to")
            continue
        if not isinstance(event.get("bundle"), dict):
            raise SignatureRefused(f"event {i}: no signed action")
        try:
            evidence = verify_bundle(event["bundle"], trust)
        except SignatureRefused as exc:
            raise SignatureRefused(f"event {i}: {exc.message}") from None
        action = evidence.action
        last_leaf = _in_place(i, evidence.logged, number, last_leaf)
        first = not verified and state is None
        expected = "cases" if first else f"case {number}"
        if action.resource != expected:
            raise SignatureRefused(f"event {i}: signed for {action.resource!r}, not {expected!r}")
        if action.account != event.get("actor"):
            raise SignatureRefused(f"event {i}: signed by {action.account}, not its actor")
        if first:
            if action.action not in flow.SOURCES.values():
                raise SignatureRefused(f"event 1: signed action is {action.action!r}")
        else:
            signed_from = action.parameters.get("from")
            if signed_from != state or event.get("from") != state:
                raise SignatureRefused(f"event {i}: does not follow from state {state!r}")
            if action.action != f"case.{event.get('transition')}":
                raise SignatureRefused(f"event {i}: signed action is {action.action!r}")
            _follows(i, event, str(state), action.parameters, suspended_from)
            if event["transition"] == "suspend":
                suspended_from = state
        state = event.get("to")
        verified.append(evidence)
    head = _head(doc.get("head"), number, len(events), state, trust)
    return Chain(verified, forwarded, submitted, head)


def _in_place(i: int, logged: Logged, number: str, last_leaf: int) -> int:
    """Event i's act holds its place in the case by the log: its entry names the case and the
    version the act made (`case_version`). The leaf order of two acts need not follow their
    order (each serving process ships its entries on its own), so only an act logged without
    a version (before 2026-11-28) is held to come after the one before in the log.
    Returns the leaf index to compare the next such act with."""
    entry = logged.entry
    detail = entry.get("detail")
    said = detail.get("case_version") if isinstance(detail, dict) else None
    if said is not None:
        if said != i or entry.get("resource") != f"case {number}":
            raise SignatureRefused(
                f"event {i}: the log's entry places the act at version {said!r} of "
                f"{entry.get('resource')!r}, not version {i} of case {number}"
            )
        return max(last_leaf, logged.leaf_index)
    if logged.leaf_index <= last_leaf:
        raise SignatureRefused(f"event {i}: logged before the event it follows")
    return logged.leaf_index


def _head(said: Any, number: str, version: int, state: Any, trust: Trust) -> Logged | None:
    """The export's entry in the pinned log, stating the case's version and state as the
    export read them: the bundle's events are all there were at that entry's time. None when
    the bundle has no head (or was exported before its head was logged): then it shows each
    event it holds, not that none came after."""
    if said is None:
        return None
    if not isinstance(said, dict):
        raise SignatureRefused("the bundle's head is not an export's log entry")
    if said.get("log") is None and isinstance(said.get("pending"), str):
        return None
    try:
        logged = logged_entry(said.get("log"), trust)
    except SignatureRefused as exc:
        raise SignatureRefused(f"the bundle's head: {exc.message}") from None
    stated = {"case": number, "version": version, "state": state}
    detail = logged.entry.get("detail")
    if (
        logged.entry.get("outcome") != "ok"
        or logged.entry.get("resource") != f"case {number} bundle"
        or not isinstance(detail, dict)
        or detail.get("case_head") != stated
        or {k: said.get(k) for k in stated} != stated
    ):
        raise SignatureRefused(
            f"the bundle's head: the log's entry is not an export of case {number} at "
            f"version {version} ({state}): an event is missing or added"
        )
    return logged


def _follows(
    i: int, event: dict[str, Any], state: str, signed: dict[str, Any], suspended_from: str | None
) -> None:
    """The event's new state is the one the workflow table gives for its transition, fired
    from `state` with the parameters the person signed (a resumption: back to the state the
    case was suspended from)."""
    try:
        target = flow.fire(str(event.get("transition")), state, signed, suspended_from)
    except CityGridError as exc:
        raise SignatureRefused(f"event {i}: the workflow refuses it: {exc.message}") from None
    if event.get("to") != target:
        raise SignatureRefused(
            f"event {i}: {event.get('transition')} from {state!r} leads to {target!r}, "
            f"not {event.get('to')!r}"
        )


def forwarded(doc: Any) -> bool:
    """Whether a case bundle's case came from the exchange peer (its check needs the peer's
    CA and log key)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return False
    events = doc.get("events")
    return isinstance(events, list) and bool(events) and _forwarded_case(events[0])


def _partner_submission(event: Any) -> bool:
    """An Open311 request from a partner system creates a case unsigned (a machine, not a
    person, submitted it); its request hash stands in the history and the audit log."""
    return (
        isinstance(event, dict)
        and event.get("transition") == "create"
        and event.get("bundle") is None
        and isinstance(event.get("open311"), dict)
        and isinstance(event["open311"].get("request_sha256"), str)
    )


def _submitted(event: dict[str, Any], number: str, trust: Trust) -> Logged:
    """The partner's request, shown by the log: its entry (in the pinned log, at the log's
    time) names this case, the event's actor as the account that sent it, the request's hash
    and its service code."""
    said = event["open311"]
    if said.get("log") is None and isinstance(said.get("pending"), str):
        raise SignatureRefused(
            f"event 1: exported before the log's evidence was complete: {said['pending']}"
        )
    try:
        logged = logged_entry(said.get("log"), trust)
    except SignatureRefused as exc:
        raise SignatureRefused(f"event 1: the partner's request: {exc.message}") from None
    entry, detail = logged.entry, logged.entry.get("detail")
    if (
        entry.get("resource") != f"case {number}"
        or entry.get("account") != event.get("actor")
        or entry.get("outcome") != "ok"
        or not isinstance(detail, dict)
        or detail.get("open311") != "submit"
        or detail.get("request_sha256") != said.get("request_sha256")
        or detail.get("service_code") != said.get("service_code")
    ):
        raise SignatureRefused(
            "event 1: the log's entry is not this partner's request for this case"
        )
    return logged


def _forwarded_case(event: Any) -> bool:
    """A case the exchange peer forwarded: created by the peer's account, not signed here."""
    return (
        isinstance(event, dict)
        and event.get("transition") == "create"
        and event.get("bundle") is None
        and isinstance(event.get("exchange"), dict)
    )


def _forwarded(said: dict[str, Any], peer: bundle.PeerTrust | None) -> bundle.Message:
    """The peer's message behind the case, verified against the peer's pinned CA and log key:
    a person's signed act there, in the peer's log, forwarding this case."""
    if peer is None:
        raise SignatureRefused(
            "event 1: the case was forwarded by the exchange peer: pin the peer's CA "
            "certificate and audit log key to verify it"
        )
    try:
        message = bundle.verify(said.get("bundle"), peer, FORWARDED_TO, FORWARDED_BY)
    except bundle.BundleRefused as exc:
        raise SignatureRefused(f"event 1: the peer's bundle: {exc.message}") from None
    if message.kind != "case.forward" or not isinstance(message.content.get("case"), dict):
        raise SignatureRefused(f"event 1: the peer's message is {message.kind}, not a case")
    if said.get("source_id") != message.source_id:
        raise SignatureRefused("event 1: the peer's bundle is of another message")
    return message
