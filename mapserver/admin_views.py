"""Administration over HTTP. Every change is a signed action: the body is the envelope
{payload, signature, certificate} of auth.signed_action, signed by the administrator."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from audit.notes import note
from auth import accounts, actions, certs
from auth.access import requires
from auth.ca_store import CaStore
from auth.gateway import identity
from auth.signed_action import Verified
from mapserver import text_limits
from mapserver.errors import InvalidInput
from mapserver.services import services

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _signed(conn: Any, action: str, resource: str) -> tuple[Verified, int]:
    who = identity()
    store = CaStore(services().settings.pki_dir)
    verified, action_id = actions.accept(
        conn, who, request.get_json(silent=True), action, resource, store.certificate()
    )
    text_limits.check_parameters(verified.parameters)
    accounts.act_as(conn, who.account)  # the change register names the signer
    # signed_action is noted only once the transaction has committed (see the views): an
    # entry must never name a stored action that was rolled back.
    note(action=action, resource=resource, signature_sha256=verified.signature_sha256)
    return verified, action_id


def _text(params: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"parameter {name} must be text")
    return value


@bp.post("/accounts")
@requires("account.admin")
def add_account() -> tuple[Response, int]:
    with services().pool.connection() as conn, conn.transaction():
        verified, action_id = _signed(conn, "account.add", "accounts")
        p = verified.parameters
        roles = p.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise InvalidInput("parameter roles must be a non-empty list of roles")
        shown = p.get("display_name")
        shown = "" if shown is None else shown
        if not isinstance(shown, str):
            raise InvalidInput("parameter display_name must be text")
        account = accounts.add(
            conn,
            str(_text(p, "name")),
            roles,
            _text(p, "org", False),
            shown,
        )
    note(signed_action=action_id)  # committed
    return jsonify(
        name=account.name, roles=list(account.roles), org=account.org_code, signed_action=action_id
    ), 201


@bp.post("/accounts/<name>/disable")
@requires("account.admin")
def disable_account(name: str) -> Response:
    with services().pool.connection() as conn, conn.transaction():
        _, action_id = _signed(conn, "account.disable", f"account {name}")
        account = accounts.set_active(conn, name, False)
    note(signed_action=action_id)  # committed
    return jsonify(name=account.name, active=account.active, signed_action=action_id)


@bp.post("/certificates/<serial>/revoke")
@requires("pki.admin")
def revoke_certificate(serial: str) -> Response:
    from auth import signer

    settings = current_app.config["CITYGRID"]
    with services().pool.connection() as conn, conn.transaction():
        verified, action_id = _signed(conn, "pki.revoke", f"certificate {serial}")
        reason = str(verified.parameters.get("reason", "unspecified"))
        revoked = certs.revoke(conn, serial, reason)
    note(signed_action=action_id)  # committed
    # Recorded and committed; the signer (which alone holds the CA key) publishes the CRL
    # from the register. Should it be down, its schedule publishes it when it is back.
    try:
        signer.publish_crl(settings, revoked.serial)
    except signer.SignerUnavailable:
        raise signer.SignerUnavailable(
            f"certificate {revoked.serial} is revoked in the register; the CRL is published "
            "as soon as the signing service is back"
        ) from None
    return jsonify(serial=revoked.serial, status="revoked", reason=reason, signed_action=action_id)
