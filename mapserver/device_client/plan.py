"""What to do with an answer, and what a queued item signs (pure: values in, values out)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from collections.abc import Mapping
from enum import Enum
from typing import Any, NamedTuple

from auth import signed_action
from mapserver.device import fix

# Refusals of a signed action that only mean "signed too long ago": the server kept
# nothing for such a request (a refused request keeps no Idempotency-Key), so the item is
# signed again with a fresh nonce under a new key. Anything else refused is final.
STALE = ("nonce expired", "payload time is too far")


# Answers that say the server (or what stands before it) is passing through a bad moment,
# whatever was asked: retried for as long as it takes, as a dropped link is.
PASSING = frozenset({408, 425, 429, 502, 503, 504})


class Verdict(Enum):
    OK = "ok"
    RETRY = "retry"  # the link or the server, not the request: again, after a backoff
    FAULT = "fault"  # the server failed on this request (500): again a few times, then refused
    TOKEN = "token"  # the bearer token expired: a new one, then again at once
    RESIGN = "resign"  # the signature is stale: sign anew (new nonce, new key)
    REFUSED = "refused"  # the server will never take this request as it is


class Answer(NamedTuple):
    """What the server answered; header names in lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error(self) -> tuple[str, str]:
        """(code, message) of a CityGrid JSON problem, or empty strings."""
        doc = self.json()
        if not isinstance(doc, dict):
            return "", ""
        return str(doc.get("error", "")), str(doc.get("message", ""))

    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after", "")
        return float(value) if value.isascii() and value.isdigit() else None


def classify(answer: Answer) -> Verdict:
    status = answer.status
    code, message = answer.error()
    if 200 <= status < 300 or status == 304:
        return Verdict.OK
    if status == 401 and code != "token_required":
        return Verdict.TOKEN
    if status in PASSING:
        return Verdict.RETRY
    if status >= 500:
        return Verdict.FAULT
    if status == 409 and code == "conflict" and "not answered yet" in message:
        return Verdict.RETRY  # our own first try is still being answered
    if status == 400 and code == "signature_refused" and message.startswith(STALE):
        return Verdict.RESIGN
    return Verdict.REFUSED


def new_key() -> str:
    """An Idempotency-Key: 128 random bits, stored with the item before it is first sent."""
    return secrets.token_urlsafe(16)


def gps_place(lon: float, lat: float) -> tuple[dict[str, str], dict[str, Any]]:
    """(signed place, fix beside the envelope): the signature covers a salted digest only."""
    salt = secrets.token_hex(16)
    return {"gps": fix.digest(lon, lat, salt)}, {"lon": lon, "lat": lat, "salt": salt}


def report_params(
    kind: str,
    major: str,
    minor: str,
    description: str,
    place: Mapping[str, Any],
    when: dt.datetime,
) -> dict[str, Any]:
    """A report's parameters; `attachments` are added when the photos are uploaded. A
    component case names its component (placed by it, its class the component's); an event
    is placed by `place`."""
    if when.tzinfo is None:
        raise ValueError("the report's time needs its UTC offset")
    where: dict[str, Any] = {"place": dict(place)}
    if kind == "component":
        if set(place) != {"component"}:
            raise ValueError("a component case is placed by its component's code")
        where = {"component": place["component"]}
    return {
        "source": "inspector",
        "kind": kind,
        "major": major,
        "minor": minor,
        "description": description,
        **where,
        "client_time": when.isoformat(timespec="seconds"),
    }


def body(
    action: str,
    resource: str,
    params: Mapping[str, Any],
    attachments: list[str],
    beside: Mapping[str, Any] | None,
    nonce: str,
    when: dt.datetime,
    signer: Any,
) -> bytes:
    """The exact request body of a signed action; stored before it is first sent, so that
    every retry sends the same bytes (the Idempotency-Key's fingerprint covers them)."""
    parameters = dict(params)
    if attachments:
        parameters["attachments"] = list(attachments)
    data = signed_action.payload(action, resource, parameters, nonce, when, signer.thumbprint)
    doc: dict[str, Any] = {
        "payload": base64.b64encode(data).decode(),
        "signature": base64.b64encode(signed_action.sign(signer.key, data)).decode(),
        "certificate": signer.certificate_pem,
    }
    if beside:
        doc.update(beside)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
