"""The renderer's own audit: every request it answers, accepted or refused, is an entry of
the tamper-evident log in the renderer's database (audit.writer's queue, audit.sequencer's
tree, the renderer's own checkpoint key under its data directory), committed before the
response leaves. `citygrid audit verify` with the renderer's settings checks it.

An entry names the service certificate that presented (account = its service name, with
its serial and SHA-256), the grant's account (`detail.grant_account`), what was asked and
the outcome; a refusal carries the reason its JSON problem gave. If the entry cannot be
committed (the database or the audit role is unreachable), the response is replaced by a
503: the renderer never answers what it did not audit.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple

import jwt
from flask import Flask, Response, g, jsonify, request

from audit.keys import signer
from audit.record import Entry
from audit.writer import GroupCommitWriter
from mapserver.settings import Settings, _as_role

AUDIT_ROLE = "citygrid_audit"  # appends to the log only (migration 0031)
WAIT_SECONDS = 10.0  # how long a response waits for its entry's commit before a 503


class Peer(NamedTuple):
    """The certificate a request came over, once the renderer has checked it."""

    service: str  # the service name of a service certificate, "" otherwise
    serial: str
    sha256: str


def writer_url(settings: Settings) -> str:
    """The renderer's audit connection: its database as the append-only audit role (or
    app_database_url where set: in the secure zone the serving role writes the audit only).
    `renderer serve` hands it to its workers, which audit refused handshakes with it."""
    return settings.app_database_url or _as_role(settings.database_url, AUDIT_ROLE)


def open_writer(settings: Settings) -> GroupCommitWriter:
    return GroupCommitWriter(
        writer_url(settings),
        signer(settings.pki_dir),
        settings.audit_checkpoint_entries,
        settings.audit_checkpoint_seconds,
    )


def _outcome(status: int) -> str:
    return "ok" if status < 400 else ("refused" if status < 500 else "error")


def _reason(response: Response) -> str:
    if response.status_code < 400 or not response.is_json:
        return ""
    body = response.get_json(silent=True)
    if not isinstance(body, dict):
        return ""
    return f"{body.get('error', '')}: {body.get('message', '')}"


def _claimed_account() -> str:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return ""
    try:
        claims = jwt.decode(header[len("Bearer ") :].strip(), options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return ""
    return str(claims.get("sub", "")) if isinstance(claims, dict) else ""


def entry_of(response: Response, started: float | None) -> Entry:
    peer: Peer | None = g.get("peer")
    grant = g.get("grant")
    detail: dict[str, Any] = {"service": peer.service if peer else ""}
    if grant is not None:
        streets = None if grant.streets is None else sorted(grant.streets)
        detail.update(grant_account=grant.account, products=list(grant.products))
        detail.update(level=grant.level, streets=streets)
    else:
        claimed = _claimed_account()
        if claimed:  # a grant that was refused: whom it claimed to be for, unverified
            detail["grant_claimed"] = claimed
    reason = _reason(response)
    if reason:
        detail["reason"] = reason
    rule = request.url_rule
    return Entry(
        action=f"renderer.{rule.endpoint if rule is not None else 'unknown'}",
        outcome=_outcome(response.status_code),
        account=peer.service if peer else "",
        role="service" if peer and peer.service else "",
        cert_serial=peer.serial if peer else "",
        cert_sha256=peer.sha256 if peer else "",
        client_addr=request.remote_addr or "",
        method=request.method,
        resource=request.path,
        request_id=g.get("request_id", ""),
        status=response.status_code,
        bytes=response.calculate_content_length(),
        latency_ms=round((time.monotonic() - started) * 1000, 3) if started else None,
        detail=detail,
    )


def init_app(app: Flask, writer: GroupCommitWriter) -> None:
    """Audit every response of `app` before it leaves; 503 where the entry cannot be made.
    Registered first, so its start time precedes every other check."""

    @app.before_request
    def started() -> None:
        g.audit_started = time.monotonic()
        g.request_id = uuid.uuid4().hex

    @app.after_request
    def audited(response: Response) -> Response:
        try:
            e = entry_of(response, g.get("audit_started"))
            writer.submit(e).result(timeout=WAIT_SECONDS)
        except (Exception, FutureTimeout):  # noqa: BLE001 - unaudited is never answered
            app.logger.warning("renderer audit unavailable; refusing", exc_info=True)
            refused = jsonify(
                error="audit_unavailable",
                message="the renderer cannot write its audit log; try later",
            )
            refused.status_code = 503
            return refused
        return response
