"""The audit review API: security officers only, and their own reads are audited too."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from audit import register, review
from audit.notes import note
from auth.access import requires
from mapserver.errors import InvalidInput
from mapserver.services import services

bp = Blueprint("audit", __name__, url_prefix="/audit")


def _officer(what: str) -> None:
    note(action=f"audit.{what}", query=request.query_string.decode("utf-8", "replace")[:500])


def _int(name: str) -> int:
    value = request.args.get(name, "")
    if not re.fullmatch(r"[0-9]{1,18}", value):
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(value)


def _conn():  # type: ignore[no-untyped-def]
    return services().pool.connection()


@bp.get("/entries")
@requires("audit.read")
def entries() -> Response:
    _officer("entries")
    args = {k: v for k, v in request.args.items() if k != "format"}
    with _conn() as conn:
        return jsonify(entries=review.entries(conn, review.filters_from(args)))


@bp.get("/key")
@requires("audit.read")
def key() -> Response:
    """The checkpoint signing key's public half (raw Ed25519), for verifying in the browser."""
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from audit.checkpoint import KEY_NAME
    from audit.keys import verifier

    _officer("key")
    public = verifier(services().settings.pki_dir)
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return jsonify(name=KEY_NAME, public_key=base64.b64encode(raw).decode())


@bp.post("/cosignatures")
@requires("audit.cosign")
def cosignatures() -> tuple[Response, int]:
    """A witness's cosignature of a checkpoint (audit.cosigned): the cosignature is its own
    proof, so it is kept only if it verifies against a configured witness key."""
    from audit.cosignature import parse_vkeys
    from audit.cosigned import accept
    from audit.keys import verifier

    _officer("cosign")
    body = request.get_json(silent=True)
    note_text = body.get("checkpoint") if isinstance(body, dict) else None
    if not isinstance(note_text, str):
        raise InvalidInput('the body is {"checkpoint": the cosigned checkpoint note}')
    settings = services().settings
    with _conn() as conn:
        witnesses = parse_vkeys(settings.audit_witnesses)
        found = accept(conn, note_text, witnesses, verifier(settings.pki_dir))
    note(witnesses=[c.witness for c in found], size=found[0].checkpoint.size)
    return jsonify(size=found[0].checkpoint.size, witnesses=[c.witness for c in found]), 201


@bp.get("/checkpoints")
@requires("audit.read")
def checkpoints() -> Response:
    _officer("checkpoints")
    with _conn() as conn:
        return jsonify(checkpoints=review.checkpoints(conn))


@bp.get("/checkpoint")
@requires("audit.read")
def latest_checkpoint() -> Response:
    """The newest signed checkpoint as a note: `<prefix>/checkpoint` of C2SP tlog-tiles."""
    _officer("checkpoint")
    with _conn() as conn:
        return Response(review.latest_note(conn), mimetype="text/plain; charset=utf-8")


@bp.get("/tile/<path:path>")
@requires("audit.read")
def tile(path: str) -> Response:
    """Tiles and entry bundles in the C2SP tlog-tiles layout under /audit, read-only, so a
    standard tlog client can check the log with the pinned checkpoint key alone."""
    _officer("tile")
    with _conn() as conn:
        data = review.tile(conn, f"tile/{path}")
    return Response(data, mimetype="application/octet-stream")


@bp.get("/proof/inclusion")
@requires("audit.read")
def inclusion() -> Response:
    _officer("proof")
    with _conn() as conn:
        return jsonify(review.inclusion(conn, _int("entry")))


@bp.get("/proof/consistency")
@requires("audit.read")
def consistency() -> Response:
    _officer("proof")
    with _conn() as conn:
        return jsonify(review.consistency(conn, _int("from"), _int("to")))


@bp.get("/export")
@requires("audit.read")
def export() -> Response:
    _officer("export")
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidInput("format must be json or csv")
    args = {k: v for k, v in request.args.items() if k != "format"}
    with _conn() as conn:
        items = review.entries(conn, review.filters_from(args))
        if fmt == "csv":
            response = Response(review.export_csv(items), mimetype="text/csv")
            response.headers["Content-Disposition"] = "attachment; filename=audit.csv"
            return response
        return jsonify(review.export_json(conn, items))


@bp.get("/register")
@requires("audit.read")
def register_changes() -> Response:
    """Recorded changes to accounts, roles, certificates and organisations, newest first
    (audit.register; `citygrid audit verify` checks their hash chain)."""
    _officer("register")
    limit = _int("limit") if "limit" in request.args else 100
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500")
    account = request.args.get("account") or None
    if account is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", account):
        raise InvalidInput("account must be an account name")
    with _conn() as conn:
        return jsonify(changes=register.changes(conn, account, limit))
