"""Which `Range` a download answers (RFC 9110 §14): one well-formed byte range. A Range of
another unit, a malformed one or several ranges are ignored and the whole body is sent (a
server may always do so; a device asks for one range at a time). Only a well-formed range
that cannot be satisfied is 416. Pure: a header in, the header to serve by out."""

from __future__ import annotations

import re

# bytes=FIRST-[LAST] or bytes=-SUFFIX; the unit is case-insensitive. Positions of more than
# 30 digits are taken for malformed (and so ignored) rather than read as numbers.
_ONE = re.compile(r"bytes=(?:([0-9]{1,30})-([0-9]{0,30})|-([0-9]{1,30}))", re.IGNORECASE)


def honoured(header: str | None, length: int) -> str | None:
    """The Range to serve the body of `length` bytes by, in the one form Werkzeug serves as
    RFC 9110 says; None: ignore the header and send the whole body (200)."""
    if header is None:
        return None
    found = _ONE.fullmatch(header.strip(" \t"))
    if found is None:
        return None
    first, last, suffix = found.groups()
    if suffix is not None:
        # A suffix longer than the body is the whole body (§14.1.2; Werkzeug says 416);
        # a suffix of 0 stays unsatisfiable.
        return "bytes=0-" if 0 < length <= int(suffix) else f"bytes=-{int(suffix)}"
    if last and int(last) < int(first):
        return None  # invalid (§14.1.1): ignored
    return f"bytes={int(first)}-{int(last) if last else ''}"
