"""A case's evidence, checked offline: every signed action of its history verifies against
what the verifier pins (CA, log key, witnesses) at the log's time of that act, and together
they form one unbroken chain of states on that case, in the log's order."""

from __future__ import annotations

from typing import Any

from auth.signed_action import Evidence, SignatureRefused, Trust, verify_bundle

FORMAT = "citygrid-case/1"


def verify_case_bundle(doc: Any, trust: Trust) -> list[Evidence]:
    """The verified signed actions of a case bundle, oldest first; raises SignatureRefused
    naming the first event that does not verify or does not follow from the one before.
    Only the creating event may be unsigned, and only as a partner system's request."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SignatureRefused("not a CityGrid case bundle")
    number, events = doc.get("case"), doc.get("events")
    if not isinstance(number, str) or not isinstance(events, list) or not events:
        raise SignatureRefused("a case bundle names its case and holds its events")
    verified: list[Evidence] = []
    state = None
    for i, event in enumerate(events, start=1):
        if i == 1 and _partner_submission(event):
            state = event.get("to")  # a partner system's request: audited, not a person's act
            continue
        if not isinstance(event, dict) or not isinstance(event.get("bundle"), dict):
            raise SignatureRefused(f"event {i}: no signed action")
        try:
            evidence = verify_bundle(event["bundle"], trust)
        except SignatureRefused as exc:
            raise SignatureRefused(f"event {i}: {exc.message}") from None
        action = evidence.action
        if verified and evidence.logged.leaf_index <= verified[-1].logged.leaf_index:
            raise SignatureRefused(f"event {i}: logged before the event it follows")
        first = not verified and state is None
        expected = "cases" if first else f"case {number}"
        if action.resource != expected:
            raise SignatureRefused(f"event {i}: signed for {action.resource!r}, not {expected!r}")
        if action.account != event.get("actor"):
            raise SignatureRefused(f"event {i}: signed by {action.account}, not its actor")
        if not first:
            signed_from = action.parameters.get("from")
            if signed_from != state or event.get("from") != state:
                raise SignatureRefused(f"event {i}: does not follow from state {state!r}")
            if action.action != f"case.{event.get('transition')}":
                raise SignatureRefused(f"event {i}: signed action is {action.action!r}")
        if event.get("version") != i:
            raise SignatureRefused(f"event {i}: version {event.get('version')!r}, expected {i}")
        state = event.get("to")
        verified.append(evidence)
    return verified


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
