"""JSON request bodies with limits: a body too large or nested too deep is refused before
it is parsed, so Python's recursive parser never meets it (5,000 nested `[` used to end
in a RecursionError and a 500).

`InvalidInput` is no `ValueError`, so `request.get_json(silent=True)` does not swallow it:
every caller answers 400.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask.json.provider import DefaultJSONProvider

from mapserver.errors import InvalidInput

MAX_BYTES = 64 * 1024
MAX_DEPTH = 32

# Strings (escapes included, an unterminated one runs to the end), brackets, and runs of
# anything else: one left-to-right pass that never backtracks over the text.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[{]|[\]}]|[^"\[\]{}]+', re.DOTALL)


def depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of arrays and objects in `text`, counting at most to limit + 1."""
    level = deepest = 0
    for token in _TOKENS.finditer(text):
        kind = token.group()[0]
        if kind in "[{":
            level += 1
            if level > deepest:
                deepest = level
                if deepest > limit:
                    break
        elif kind in "]}":
            level -= 1
    return deepest


def check(body: str | bytes, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> str:
    """`body` as text if it is within the limits; raises InvalidInput otherwise."""
    if len(body) > max_bytes or (
        isinstance(body, str) and len(body.encode("utf-8", "replace")) > max_bytes
    ):
        raise InvalidInput(f"JSON body larger than {max_bytes} bytes")
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode(json.detect_encoding(body))
        except UnicodeDecodeError:
            raise InvalidInput("JSON body is not UTF-8 text") from None
    if depth(body, max_depth) > max_depth:
        raise InvalidInput(f"JSON body nested deeper than {max_depth} levels")
    return body


class LimitedJSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing oversized or too deeply nested documents before parsing."""

    max_bytes = MAX_BYTES
    max_depth = MAX_DEPTH

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return super().loads(check(s, self.max_bytes, self.max_depth), **kwargs)
