"""Gateway endpoints: who am I, and a certificate-bound token for the web client and devices."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from audit.notes import note
from auth import tokens
from auth.access import requires
from auth.gateway import identity
from mapserver.services import services

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.get("/whoami")
@requires("whoami")
def whoami() -> Response:
    who = identity()
    return jsonify(account=who.account, roles=list(who.roles), kind=who.kind)


@bp.post("/token")
@requires("token.issue")
def token() -> Response:
    who = identity()
    issued = tokens.issue(services().gateway.keys, who)
    return jsonify(access_token=issued, token_type="Bearer", expires_in=tokens.LIFETIME)


@bp.post("/nonce")
@requires("action.nonce")
def nonce() -> Response:
    """A fresh single-use nonce for the next signed action."""
    from auth import actions

    who = identity()
    with services().pool.connection() as conn:
        value, ttl = actions.new_nonce(conn, who.account)
    return jsonify(nonce=value, expires_in=ttl)


@bp.get("/actions/<int:action_id>/bundle")
@requires("action.bundle")
def action_bundle(action_id: int) -> Response:
    """The offline-verifiable bundle of a signed action: for its signer and for officers.
    Anyone else gets the same 404 as for a missing id, so ids reveal nothing. 409 while the
    log's evidence (its entry under a signed checkpoint) is not complete yet."""
    from audit.cosignature import parse_vkeys
    from auth import action_bundle, actions, policy
    from mapserver.errors import NotFound

    who = identity()
    note(resource=f"signed action {action_id}")
    officer = policy.permitted(who.roles, policy.Request("audit.read"))
    settings = services().settings
    with services().pool.connection() as conn:
        found = actions.stored(conn, action_id) if action_id < 2**63 else None
        if found is None or (found[0] != who.account and not officer):
            raise NotFound(f"no signed action {action_id}")
        _, data, signature, cert_pem = found
        witnesses = parse_vkeys(settings.audit_witnesses)
        doc = action_bundle.for_action(conn, settings.pki_dir, witnesses, data, signature, cert_pem)
    return jsonify(doc)


@bp.post("/signing/enrol")
@requires("signing.enrol")
def signing_enrol() -> tuple[Response, int]:
    """Issue a signing certificate for a browser-held key: proof of possession and a one-time
    enrolment code required. The CA key is the signer process's; this process asks it."""
    from flask import current_app, request

    from auth import enrol, signer

    who = identity()
    proof = enrol.parse(who.account, request.get_json(silent=True))
    cert = signer.issue_signing(current_app.config["CITYGRID"], proof)
    serial = format(cert.serial_number, "x")
    note(action="signing.enrol", resource=f"certificate {serial}")
    from auth import pki

    return jsonify(certificate=pki.pem(cert).decode("ascii"), serial=serial), 201
