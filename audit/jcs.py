"""RFC 8785 (JSON Canonicalization Scheme) bytes, at the C encoder's speed where it agrees.

An audit entry is canonicalised once when it is queued and again whenever the log is
verified, and the pure-Python `rfc8785` package spent some 50 µs on each, most of an
entry's cost in the serving process. For the values audit entries hold, Python's C JSON
encoder (keys sorted, no whitespace, UTF-8) writes the very same bytes:

- keys that are ASCII sort the same by code point as by RFC 8785's UTF-16 code units;
- strings are escaped alike: `"` and `\\`, the short forms \\b \\t \\n \\f \\r, other control
  characters as lower-case \\u00xx, everything else as it is;
- integers within ±(2^53 - 1) print alike;
- a float prints alike (shortest round-trip digits, fixed notation) when it has a
  fraction and 1e-4 <= |x| < 1e16: outside that, Python writes 2.0 or 1e-05 where
  ECMAScript writes 2 or 0.00001.

Anything else (another key, float or type) goes to `rfc8785`, so the result is always RFC
8785; tests/test_jcs.py checks the two against each other.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

INT_MOST = 2**53 - 1


def _agrees(value: Any) -> bool:
    """Whether the C encoder writes `value` as RFC 8785 does (module docstring)."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return True
    if kind is int:
        return -INT_MOST <= value <= INT_MOST
    if kind is float:
        return 1e-4 <= abs(value) < 1e16 and not value.is_integer()
    if kind is dict:  # a loop, with text and None (most values) answered in place
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                return False
            if v is not None and type(v) is not str and not _agrees(v):
                return False
        return True
    if kind is list or kind is tuple:
        return all(v is None or type(v) is str or _agrees(v) for v in value)
    return False


# One encoder for every call: json.dumps with arguments of its own builds a new one each time.
_encode = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def dumps(value: Any) -> bytes:
    if _agrees(value):
        return _encode(value).encode("utf-8")
    return rfc8785.dumps(value)
