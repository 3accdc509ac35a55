"""Gateway endpoints: who am I, and a certificate-bound token for the web client and devices."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, jsonify

from auth import tokens
from auth.gateway import gateway, identity

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.get("/whoami")
def whoami() -> Response:
    from auth.gateway import authorize
    from auth.policy import Request

    who = authorize(Request("whoami"))
    return jsonify(account=who.account, roles=list(who.roles), kind=who.kind)


@bp.post("/token")
def token() -> Response:
    from auth.gateway import authorize
    from auth.policy import Request

    who = authorize(Request("token.issue"))
    issued = tokens.issue(gateway().keys, who)
    identity()
    return jsonify(access_token=issued, token_type="Bearer", expires_in=tokens.LIFETIME)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


@bp.post("/nonce")
def nonce() -> Response:
    """A fresh single-use nonce for the next signed action."""
    from flask import current_app

    from auth import actions
    from auth.gateway import authorize
    from auth.policy import Request

    who = authorize(Request("action.nonce"))
    with current_app.extensions["citygrid.pool"].connection() as conn:
        value, ttl = actions.new_nonce(conn, who.account)
    return jsonify(nonce=value, expires_in=ttl)


@bp.get("/actions/<int:action_id>/bundle")
def action_bundle(action_id: int) -> Response:
    """The offline-verifiable bundle of a signed action: for its signer and for officers."""
    from flask import current_app

    from auth import actions, signed_action
    from auth.ca_store import CaStore
    from auth.gateway import audit_note, authorize
    from auth.policy import Request
    from mapserver.errors import NotFound

    who = identity()
    if action_id >= 2**63:
        raise NotFound(f"no signed action {action_id}")
    with current_app.extensions["citygrid.pool"].connection() as conn:
        found = actions.stored(conn, action_id)
    if found is None:
        raise NotFound(f"no signed action {action_id}")
    account, data, signature, cert_pem = found
    if account != who.account:
        authorize(Request("audit.read"))
    audit_note(action="action.bundle", resource=f"signed action {action_id}")
    crl = CaStore(current_app.config["CITYGRID"].pki_dir).crl_path
    crl_pem = crl.read_text("ascii") if crl.exists() else None
    return jsonify(signed_action.bundle(data, signature, cert_pem, crl_pem))


@bp.post("/signing/enrol")
def signing_enrol() -> tuple[Response, int]:
    """Issue a signing certificate for a browser-held key: proof of possession and a one-time
    enrolment code required. The CA key is the signer process's; this process asks it."""
    from flask import current_app, request

    from auth import enrol, signer
    from auth.gateway import audit_note, authorize
    from auth.policy import Request

    who = authorize(Request("signing.enrol"))
    proof = enrol.parse(who.account, request.get_json(silent=True))
    cert = signer.issue_signing(current_app.config["CITYGRID"], proof)
    serial = format(cert.serial_number, "x")
    audit_note(action="signing.enrol", resource=f"certificate {serial}")
    from auth import pki

    return jsonify(certificate=pki.pem(cert).decode("ascii"), serial=serial), 201
