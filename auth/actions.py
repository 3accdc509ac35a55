"""Accepting signed actions at the edge: nonces, the certificate register, storage.

A nonce is issued to an account, lives a few minutes and can be used once. An action is
accepted only if its signature checks out (auth.signed_action), its certificate is one
CityGrid issued to the authenticated account and is not revoked, it names the action and
resource actually requested, and its nonce is fresh; then it is stored, bytes and all, in
the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from typing import Any

import psycopg
from cryptography import x509

from auth import pki
from auth.identity import Identity
from auth.policy import Forbidden
from auth.signed_action import SignatureRefused, Verified, check, parse_envelope
from mapserver.errors import Conflict

NONCE_TTL = dt.timedelta(minutes=5)
# Expired nonces are purged this long after their expiry (so a late use still hears
# "expired", not "unknown"), at most PURGE_BATCH per nonce issued: the table stays bounded
# by the nonces of the last two TTLs, and no request pays for more than one small batch.
PURGE_AFTER = NONCE_TTL
PURGE_BATCH = 100


def purge_nonces(conn: psycopg.Connection, limit: int = PURGE_BATCH) -> int:
    """Delete up to `limit` nonces expired more than PURGE_AFTER ago, used or not; a purged
    nonce stays single-use (unknown nonces are refused, signed_action.nonce is unique)."""
    row = conn.execute("SELECT action_nonce_purge(%s, %s)", (PURGE_AFTER, limit)).fetchone()
    return int(row[0]) if row else 0


def new_nonce(conn: psycopg.Connection, account: str) -> tuple[str, int]:
    purge_nonces(conn)
    nonce = secrets.token_urlsafe(24)
    conn.execute(
        "INSERT INTO action_nonce (nonce, account, expires_at) VALUES (%s, %s, now() + %s)",
        (nonce, account, NONCE_TTL),
    )
    return nonce, int(NONCE_TTL.total_seconds())


def use_nonce(conn: psycopg.Connection, account: str, nonce: str) -> None:
    """Spend a nonce: it must be this account's, unused and unexpired. Expiry is the
    database's clock, as issuing was: a serving host whose clock runs ahead of it expired
    every nonce at once."""
    row = conn.execute(
        "SELECT account, expires_at < now(), used_at FROM action_nonce WHERE nonce = %s"
        " FOR UPDATE",
        (nonce,),
    ).fetchone()
    if row is None or row[0] != account:
        raise SignatureRefused("unknown nonce: ask POST /auth/nonce for one")
    if row[2] is not None:
        raise SignatureRefused("nonce already used: the action was replayed")
    if row[1]:
        raise SignatureRefused("nonce expired: ask for a new one")
    conn.execute("UPDATE action_nonce SET used_at = now() WHERE nonce = %s", (nonce,))


def accept(
    conn: psycopg.Connection,
    who: Identity,
    body: Any,
    action: str,
    resource: str,
    ca: x509.Certificate,
) -> tuple[Verified, int]:
    """Verify and store a signed action for `who`; returns it and its id. Raises
    SignatureRefused (400) or Forbidden (403); the caller's transaction then rolls back."""
    data, signature, cert = parse_envelope(body)
    sha = pki.thumbprint(cert)
    row = conn.execute(
        "SELECT c.kind, c.revoked_at, a.name FROM certificate c JOIN account a"
        " ON a.id = c.account_id WHERE c.sha256 = %s",
        (sha,),
    ).fetchone()
    if row is None:
        raise SignatureRefused("the signing certificate is not in CityGrid's register")
    kind, revoked_at, holder = row
    now = dt.datetime.now(dt.UTC)
    verified = check(data, signature, cert, ca, now, revoked=revoked_at is not None)
    if kind != "signing":
        raise SignatureRefused("not a signing certificate")
    if holder != who.account or verified.account != who.account:
        raise Forbidden("the signing certificate belongs to another account")
    if verified.action != action:
        raise SignatureRefused(f"the signature is for {verified.action!r}, not {action!r}")
    if verified.resource != resource:
        raise SignatureRefused("the signature is for another resource")
    use_nonce(conn, who.account, verified.nonce)
    stored = conn.execute(
        """INSERT INTO signed_action (account, action, resource, payload, signature, certificate,
                                      signature_sha256, nonce)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (
            who.account,
            verified.action,
            verified.resource,
            data,
            signature,
            pki.pem(cert).decode("ascii"),
            verified.signature_sha256,
            verified.nonce,
        ),
    ).fetchone()
    assert stored is not None
    return verified, int(stored[0])


def accept_relayed(
    conn: psycopg.Connection,
    account: str,
    body: Any,
    action: str,
    resource: str,
    ca: x509.Certificate,
    revoked: Callable[[int], bool],
    action_id: int,
) -> Verified:
    """A signed action the gateway accepted (`accept`) and relays to the zone that applies
    it: checked again here against the CA and this zone's CRL (`revoked`, by serial), for
    `account` (the gateway's grant), `action` and `resource`; kept under the gateway's
    number `action_id`. A signature or nonce kept already is a replay: Conflict."""
    data, signature, cert = parse_envelope(body)
    verified = check(data, signature, cert, ca, pki.now(), revoked=revoked(cert.serial_number))
    if verified.account != account:
        raise Forbidden("the signing certificate belongs to another account")
    if verified.action != action:
        raise SignatureRefused(f"the signature is for {verified.action!r}, not {action!r}")
    if verified.resource != resource:
        raise SignatureRefused("the signature is for another resource")
    try:
        with conn.transaction():
            conn.execute(
                """INSERT INTO signed_action (id, account, action, resource, payload, signature,
                                              certificate, signature_sha256, nonce)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (
                    action_id, account, verified.action, verified.resource, data, signature,
                    pki.pem(cert).decode("ascii"), verified.signature_sha256, verified.nonce,
                ),
            )  # fmt: skip
    except psycopg.errors.UniqueViolation:
        raise Conflict("this signed action was applied already") from None
    return verified


def stored(conn: psycopg.Connection, action_id: int) -> tuple[str, bytes, bytes, str] | None:
    row = conn.execute(
        "SELECT account, payload, signature, certificate FROM signed_action WHERE id = %s",
        (action_id,),
    ).fetchone()
    if row is None:
        return None
    return row[0], bytes(row[1]), bytes(row[2]), row[3]
