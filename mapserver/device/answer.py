"""Answers of device changes, each given once per Idempotency-Key: the change, its kept
answer and the audit entry's facts in one transaction; a retry gets the kept answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from flask import Response, request

from audit.notes import note
from auth.gateway import identity
from mapserver.audit_writer import queue_with_change
from mapserver.cases import on_map
from mapserver.device import idempotency
from mapserver.services import Services, services

Change = Callable[[psycopg.Connection, Services], tuple[int, Any, Mapping[str, str]]]
# What a replay answers: the kept answer as what it names stands now (or a refusal raised).
Replay = Callable[[psycopg.Connection, idempotency.Kept], idempotency.Kept]


def json_bytes(shown: Any) -> bytes:
    return json.dumps(shown, ensure_ascii=False, separators=(",", ":")).encode()


def idempotent(
    change: Change, defining: Sequence[str] = (), replay: Replay | None = None
) -> Response:
    """Run `change(conn, services)` once per Idempotency-Key of this account; `defining`:
    the headers that say what is asked beside the body (the key's fingerprint covers them);
    `replay`: how a retry's kept answer is brought up to date, in the claim's transaction."""
    found = services()
    who = identity()
    key = idempotency.key_of(dict(request.headers))
    sent = [(name, request.headers[name]) for name in defining if name in request.headers]
    print_ = idempotency.fingerprint(
        request.method, request.path, request.get_data(cache=True), sent
    )
    note(idempotency_key=key[:64])
    with found.pool.connection() as conn, conn.transaction():
        kept = idempotency.claim(conn, who.account, key, print_)
        replayed = kept is not None
        if kept is None:
            status, shown, headers = change(conn, found)
            kept = idempotency.Kept(status, "application/json", json_bytes(shown), headers)
            idempotency.keep(conn, who.account, key, kept)
            response = _response(kept)
            queue_with_change(conn, response)  # the change's entry commits with it
        else:
            if replay is not None:
                kept = replay(conn, kept)
            note(idempotency="replayed")
            response = _response(kept)
            response.headers["Idempotent-Replayed"] = "true"
    if not replayed:
        pixel = json.loads(kept.body).get("pixel")
        if isinstance(pixel, dict):
            on_map.redraw(found.tile_source(), pixel)
    return response


def _response(kept: idempotency.Kept) -> Response:
    response = Response(kept.body, status=kept.status, mimetype=kept.media_type)
    response.headers.update(dict(kept.headers))
    return response
