"""What every device route requires beyond the policy: the client certificate is a device
certificate (`citygrid pki issue --kind device`) and a bearer token bound to it (RFC 8705)
is presented. The gateway checks a token only when one is sent; a device route refuses to
run without one. Fails closed: anything else is refused."""

from __future__ import annotations

from flask import request

from auth import tokens
from auth.identity import Identity, Unauthenticated
from auth.policy import Forbidden


class TokenRequired(Unauthenticated):
    code = "token_required"


def check(who: Identity, authorization: str, keys: tokens.KeySet) -> None:
    """Raise unless `who` came with a device certificate and a valid token bound to it."""
    if who.kind != "device":
        raise Forbidden("device routes take a device certificate (--kind device) only")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRequired(
            "token_required",
            "a bearer token bound to this certificate is required (POST /auth/token)",
        )
    # The gateway has validated it already; validated again here, so that this guard does
    # not depend on the order of request hooks (one signature check, no I/O).
    tokens.validate(keys, token.strip(), who.cert_sha256)


def check_request(who: Identity, keys: tokens.KeySet) -> None:
    check(who, request.headers.get("Authorization", ""), keys)
