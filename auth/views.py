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
