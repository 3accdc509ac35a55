"""A day as people, forms and files write it here: YYYY-MM-DD and nothing else.

Python's `date.fromisoformat` also reads 20261010 and 2026-W41-6, so a signed resource such
as `calendar 20261010` named a day in a form no page shows or searches for.
"""

from __future__ import annotations

import datetime as dt
import re

ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def day(text: str) -> dt.date:
    """The day `text` names; ValueError unless it is YYYY-MM-DD of a real day."""
    if not ISO_DAY.fullmatch(text):
        raise ValueError(f"not a day YYYY-MM-DD: {text!r}")
    return dt.date.fromisoformat(text)
