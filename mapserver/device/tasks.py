"""The inspector's tasks for a device: the cases waiting to be verified or checked in the
inspector's grids, in a small, stable form (no per-second countdown, so an unchanged list
gives an unchanged ETag), with a weak ETag, If-None-Match and gzip. Pure except `load`."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from auth.identity import Identity
from mapserver.cases import attachments, reading
from mapserver.services import Services

MAX_TASKS = 200
MAX_FILES = 27  # of one task: its newest photos and recordings
MAP_SIZE = (480, 640)  # the default screen of the map picture link
_TASK_OF = {"reported": "verify", "checking": "check"}
_TRANSITIONS = {"verify": ["verify"], "check": ["check_pass", "check_fail"]}


def task(case: Mapping[str, Any], files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What a device shows of one waiting case; `files`: its attachments, oldest first (the
    reporter's photo to find the problem by, the bureau's to check the repair by), each
    downloaded on demand from its `url` and checked against its sha256."""
    kind = _TASK_OF[case["state"]]
    w, h = MAP_SIZE
    return {
        "number": case["number"],
        "task": kind,
        "state": case["state"],
        "version": case["version"],
        "transitions": _TRANSITIONS[kind],
        "class": case["class"],
        "description": case["description"],
        "address": case["address"],
        "grid": case["grid"],
        "community": case["community"]["name"],
        "street": case["street"]["name"],
        "deadline": case["deadline"],
        "overdue": case["overdue"],
        "map": f"/device/v1/map?case={case['number']}&w={w}&h={h}",
        "attachments": [
            {**f, "url": f"/device/v1/cases/{case['number']}/attachments/{f['sha256']}"}
            for f in (files or [])[-MAX_FILES:]
        ],
    }


def load(conn: psycopg.Connection, services: Services, who: Identity) -> list[dict[str, Any]]:
    """The cases waiting for this inspector, soonest deadline first."""
    found = reading.inbox(conn, services, who, {"per_page": str(MAX_TASKS), "sort": "deadline"})
    waiting = [c for c in found["cases"] if c["state"] in _TASK_OF]
    files = attachments.of_cases(conn, [c["number"] for c in waiting])
    return [task(c, files.get(c["number"])) for c in waiting]


def body(tasks: Iterable[Mapping[str, Any]]) -> bytes:
    """The list as compact JSON with sorted keys: equal lists, equal bytes."""
    shown = {"tasks": list(tasks)}
    return json.dumps(shown, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def etag(data: bytes) -> str:
    """A weak validator of the JSON (the same for its gzip and identity encodings)."""
    return 'W/"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 If-None-Match with weak comparison."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = tag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == bare for t in if_none_match.split(","))


def accepts_gzip(accept_encoding: str | None) -> bool:
    for part in (accept_encoding or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            try:
                weight = float(q.removeprefix("q=")) if q.startswith("q=") else 1.0
            except ValueError:
                weight = 0.0
            return weight > 0
    return False


def compress(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)
