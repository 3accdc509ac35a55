"""Facts a view adds to the audit entry of the request it answers (resource, map, level…).

The gateway writes one entry per request; views only describe what they touched.
"""

from __future__ import annotations

from typing import Any

from flask import g


def note(**fields: Any) -> None:
    """Add facts about this request to its audit entry."""
    g.audit = {**(g.get("audit") or {}), **fields}
