"""What each kind of message may hold, and nothing else. Pure.

The receiver takes in only fields it knows: a message's content is kept and shown to the
people who may see its case (the case's page), so a field no CityGrid install writes (a
point, say, from a faulty peer) is refused rather than kept and passed on."""

from __future__ import annotations

from typing import Any

from mapserver.exchange.bundle import BundleRefused

# The case a message forwards: what a district tells of its case (exchange.views._summary)
# and what the city tells of a new one (codes, class, text); never a point.
CASE = frozenset({"number", "kind", "major", "minor", "component", "description", "address",
                  "grid", "community_code", "street_code", "source", "created_at"})  # fmt: skip
COMPONENT = frozenset({"code", "major", "minor", "name", "state", "in_use", "grid",
                       "responsible_dept", "owner_dept", "maintainer_dept", "data_source",
                       "version"})  # fmt: skip
CONTENT = {
    "case.forward": frozenset({"case", "note", "attachments", "attachments_left"}),
    "case.result": frozenset({"in_reply_to", "case", "result", "outcome", "attachments"}),
    "component.update": frozenset({"components"}),
    "exchange.withdrawn": frozenset({"withdrawn", "reason", "content_sha256"}),
}


def check(kind: str, content: dict[str, Any]) -> None:
    """BundleRefused naming the fields of `content` a message of `kind` does not hold."""
    _known(content, CONTENT.get(kind, frozenset()), "the content")
    if kind == "case.forward" and isinstance(content.get("case"), dict):
        _known(content["case"], CASE, "the forwarded case")
    if kind == "component.update" and isinstance(content.get("components"), list):
        for item in content["components"]:
            if isinstance(item, dict):
                _known(item, COMPONENT, "a component update")


def _known(found: dict[str, Any], known: frozenset[str], what: str) -> None:
    unknown = sorted(set(found) - known)
    if unknown:
        raise BundleRefused(
            f"{what} holds fields no CityGrid install writes: " + ", ".join(unknown)[:200]
        )
