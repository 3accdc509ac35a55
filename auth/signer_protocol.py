"""The signer's wire protocol: one JSON request line, one JSON reply line, per connection.

Pure data, no I/O. Only three operations exist, so a web process that is taken over can ask
for nothing else: issue a signing certificate for an account's proven key (spending that
account's nonce and one-time enrolment code), issue a person's certificate for a CSR that an
administrator's stored signed action names (auth.person_issue, which the signer verifies
itself), or republish the CRL from the register.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

MAX_LINE = 16 * 1024


class ProtocolError(ValueError):
    """A message that is not one of the protocol's."""


class IssueSigning(NamedTuple):
    account: str
    public_key: str
    nonce: str
    proof: str
    code: str


class PublishCrl(NamedTuple):
    serial: str  # the revocation that asks for it (audited); the CRL comes from the register


class IssuePerson(NamedTuple):
    account: str
    csr: str  # PEM
    action: str  # the id of the administrator's stored signed action pki.issue


Request = IssueSigning | PublishCrl | IssuePerson
_OPS: dict[str, type[IssueSigning] | type[PublishCrl] | type[IssuePerson]] = {
    "issue_signing": IssueSigning,
    "publish_crl": PublishCrl,
    "issue_person": IssuePerson,
}


def op_of(req: Request) -> str:
    if isinstance(req, IssuePerson):
        return "issue_person"
    return "issue_signing" if isinstance(req, IssueSigning) else "publish_crl"


class Reply(NamedTuple):
    ok: bool
    certificate: str | None = None  # PEM, for issue_signing
    crl_number: int | None = None  # for publish_crl
    error: str | None = None  # an error code (mapserver.errors), when not ok
    message: str | None = None  # a safe, path-free message, when not ok


def _line(data: dict[str, Any]) -> bytes:
    raw = json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"
    if len(raw) > MAX_LINE:
        raise ProtocolError("message too long")
    return raw


def _load(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
        raise ProtocolError("message too long or unterminated")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("not an object")
    return data


def encode_request(req: Request) -> bytes:
    return _line({"op": op_of(req), **req._asdict()})


def decode_request(raw: bytes) -> Request:
    data = _load(raw)
    op = str(data.pop("op", ""))
    kind = _OPS.get(op)
    if kind is None:
        raise ProtocolError("unknown operation")
    if set(data) != set(kind._fields) or not all(isinstance(v, str) for v in data.values()):
        raise ProtocolError(f"{op} takes text fields {', '.join(kind._fields)}")
    return kind(**data)


def encode_reply(reply: Reply) -> bytes:
    return _line({k: v for k, v in reply._asdict().items() if v is not None})


def decode_reply(raw: bytes) -> Reply:
    data = _load(raw)
    if not isinstance(data.get("ok"), bool) or not set(data) <= set(Reply._fields):
        raise ProtocolError("not a reply")
    return Reply(**data)
