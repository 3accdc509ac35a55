"""Making an audit entry's values storable, whatever a client sent. Pure.

PostgreSQL refuses a NUL in text and in jsonb, JSON canonicalisation (RFC 8785) refuses
integers beyond 2^53 and non-finite numbers, and an unbounded value lets one request bloat
the log. So before an entry's leaf hash is computed, every text is escaped and capped and
every detail value is made plain JSON: the hash covers exactly what is stored, and
`citygrid audit verify` recomputes it from the stored row.

Escaping is unambiguous: a backslash becomes `\\\\`, a NUL or other control character
(tab, newline and carriage return excepted: they are data that every rendering escapes),
a C1 control or a lone surrogate becomes `\\xNN` or `\\uNNNN`. A capped text ends with
`…[+N]`, N being the number of characters left out.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

TEXT_MAX = 256
RESOURCE_MAX = 2048
DETAIL_TEXT_MAX = 2048
DETAIL_KEY_MAX = 128
DETAIL_ITEMS_MAX = 100
DETAIL_DEPTH_MAX = 8
DETAIL_JSON_MAX = 32768
JSON_INT_MAX = 2**53 - 1

_SPECIAL = re.compile(r"[\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_CUT = "…[+{}]"


def _escape(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value: str, limit: int = TEXT_MAX) -> str:
    """`value` escaped, and cut to at most `limit` characters plus the cut marker."""
    if len(value) <= limit and _SPECIAL.search(value) is None:
        return value
    out: list[str] = []
    used = 0
    for i, ch in enumerate(value):
        piece = _escape(ch) if _SPECIAL.match(ch) else ch
        if used + len(piece) > limit:
            return "".join(out) + _CUT.format(len(value) - i)
        out.append(piece)
        used += len(piece)
    return "".join(out)


def _plain(value: Any, depth: int) -> Any:
    """`value` as JSON data that PostgreSQL's jsonb and RFC 8785 both accept."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -JSON_INT_MAX <= value <= JSON_INT_MAX else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return text(value, DETAIL_TEXT_MAX)
    if isinstance(value, dict | list | tuple) and depth >= DETAIL_DEPTH_MAX:
        return "…[nested too deep]"
    if isinstance(value, dict):
        items = list(value.items())
        out = {
            text(k if isinstance(k, str) else str(k), DETAIL_KEY_MAX): _plain(v, depth + 1)
            for k, v in items[:DETAIL_ITEMS_MAX]
        }
        if len(items) > DETAIL_ITEMS_MAX:
            out["…"] = f"+{len(items) - DETAIL_ITEMS_MAX} more"
        return out
    if isinstance(value, list | tuple):
        out_list = [_plain(v, depth + 1) for v in value[:DETAIL_ITEMS_MAX]]
        if len(value) > DETAIL_ITEMS_MAX:
            out_list.append(f"…[+{len(value) - DETAIL_ITEMS_MAX} more]")
        return out_list
    return text(str(value), DETAIL_TEXT_MAX)


# A flat detail of at most FLAT_MOST short items is stored as it is when every key and value
# already is what `_plain` would make of it; it is then at most FLAT_MOST * (6 * (DETAIL_KEY_MAX
# + FLAT_TEXT_MAX) + 30) bytes of JSON, far below DETAIL_JSON_MAX (6: a character escaped
# as \u00xx). Most entries' detail is such (a tile's product and level): no copy, no encoding.
FLAT_MOST = 8
FLAT_TEXT_MAX = 256


def _flat_and_plain(value: dict[str, Any]) -> bool:
    if len(value) > FLAT_MOST:
        return False
    for k, v in value.items():
        if type(k) is not str or len(k) > DETAIL_KEY_MAX or _SPECIAL.search(k):
            return False
        kind = type(v)
        if kind is str:
            if len(v) > FLAT_TEXT_MAX or _SPECIAL.search(v):
                return False
        elif kind is int:
            if not -JSON_INT_MAX <= v <= JSON_INT_MAX:
                return False
        elif kind is float:
            if not math.isfinite(v):
                return False
        elif v is not None and kind is not bool:
            return False
    return True


def detail(value: dict[str, Any]) -> dict[str, Any]:
    """An entry's detail as bounded plain JSON; an oversized one is kept as capped text."""
    if _flat_and_plain(value):
        return dict(value)
    plain = _plain(dict(value), 0)
    encoded = json.dumps(plain, ensure_ascii=False)
    if len(encoded) > DETAIL_JSON_MAX:
        cut = encoded[:DETAIL_JSON_MAX] + _CUT.format(len(encoded) - DETAIL_JSON_MAX)
        return {"truncated": cut}
    return plain  # type: ignore[no-any-return]
