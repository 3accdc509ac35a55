"""The length limit of every text a person or client sends, in one place.

A text over its limit, or holding a control character, is refused with InvalidInput (400
over HTTP, one line on the command line) before anything is stored, so a 500 KB display
name or a NUL in a reason never reaches the database. README "Input limits" lists these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from werkzeug.datastructures import MultiDict

from mapserver.errors import InvalidInput

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class Limit(NamedTuple):
    """The longest text accepted for one kind of input, in characters."""

    what: str
    chars: int

    def check(self, value: str) -> str:
        """`value` unchanged if it fits; raises InvalidInput naming the input otherwise."""
        if len(value) > self.chars:
            raise InvalidInput(f"{self.what} is longer than {self.chars} characters")
        if _CONTROL.search(value):
            raise InvalidInput(f"{self.what} must not contain control characters")
        return value


ACCOUNT_NAME = Limit("account name", 64)
DISPLAY_NAME = Limit("display name", 200)
ORG_CODE = Limit("organisation code", 64)
ROLE = Limit("role", 64)
REVOCATION_REASON = Limit("revocation reason", 64)
SIGNED_PARAMETER = Limit("signed-action parameter", 1000)
AUDIT_FILTER = Limit("audit filter", 256)
# A query parameter's name or value, or a text in a route's path, whatever the route, checked
# before any view reads one (auth.gateway, after the policy decision): the request line's
# limit (2,048 bytes, deploy/gunicorn) bounds it anyway; what this adds is that no control
# character gets in.
QUERY_PARAMETER = Limit("query parameter", 2048)
# A list's page (/cases, /cases/inbox, /components): far past any list's end; a larger one
# would overflow the database's offset.
MAX_PAGE = 1_000_000

ALL = (
    ACCOUNT_NAME,
    DISPLAY_NAME,
    ORG_CODE,
    ROLE,
    REVOCATION_REASON,
    SIGNED_PARAMETER,
    AUDIT_FILTER,
    QUERY_PARAMETER,
)


def check_request(view_args: Mapping[str, Any], args: Mapping[str, str]) -> None:
    """Every text of a request's path (its route's variables) and of its query string
    (names and values, repeated names included) fits QUERY_PARAMETER. Checked on every
    request of the general path: the named Limit is made only for a text that fails."""
    most = QUERY_PARAMETER.chars
    for name, value in view_args.items():
        if isinstance(value, str) and (len(value) > most or _CONTROL.search(value)):
            Limit(f"path part {name[:40]!r}", most).check(value)
    pairs = args.items(multi=True) if isinstance(args, MultiDict) else args.items()
    for name, value in pairs:
        if len(name) > most or _CONTROL.search(name):
            QUERY_PARAMETER.check(name)
        if len(value) > most or _CONTROL.search(value):
            Limit(f"query parameter {name[:40]!r}", most).check(value)


def check_parameters(params: Mapping[str, Any]) -> None:
    """Every text among a signed action's parameters (lists of texts included) fits."""
    for name, value in params.items():
        limit = Limit(f"parameter {name[:40]!r}", SIGNED_PARAMETER.chars)
        limit.check(name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                limit.check(item)
