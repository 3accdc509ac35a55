"""Altered copies of a JSON document, one field at a time: for tests that an offline
verifier takes no altered evidence as valid."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

KINDS = ("drop", "retype", "edit")


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON document: its objects' keys and its lists' items, all levels."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield path + (key,)
            yield from leaves(inner, path + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield path + (i,)
            yield from leaves(inner, path + (i,))


def mutated(doc: Any, path: tuple[Any, ...], how: str) -> Any:
    forged = copy.deepcopy(doc)
    parent = forged
    for step in path[:-1]:
        parent = parent[step]
    last, was = path[-1], parent[path[-1]]
    if how == "drop":
        del parent[last]
    elif how == "retype":
        parent[last] = {"str": 0, "int": "0", "bool": None}.get(type(was).__name__, "x")
    else:  # an edit that keeps the type: a text's middle character, a number by one, …
        if isinstance(was, str):
            mid = len(was) // 2
            parent[last] = was[:mid] + ("A" if was[mid : mid + 1] != "A" else "B") + was[mid + 1 :]
        elif isinstance(was, bool):
            parent[last] = not was
        elif isinstance(was, int | float):
            parent[last] = was + 1
        elif was is None:
            parent[last] = "x"
        else:
            parent[last] = [] if isinstance(was, dict) else {}
    return forged
