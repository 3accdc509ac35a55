"""Signed acts from the command line: the same signed-action path as over HTTP.

A person acting from the CLI signs with their signing key on disk (PEM, mode 0600 or
tighter: a key others can read is refused) and the signing certificate CityGrid issued to
them. The act is signed with a fresh nonce, accepted by auth.actions exactly as the server
accepts a browser's (register, revocation, account, policy), stored, and audited with the
signature's SHA-256, so that `citygrid audit bundle` can prove it offline later.
Administrative acts (accounts, roles, certificates) are signed by an administrator's key:
--admin-key/--admin-cert or CITYGRID_ADMIN_KEY/CITYGRID_ADMIN_CERT.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import click
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mapserver.errors import InvalidInput, NotFound

F = TypeVar("F", bound=Callable[..., Any])
KEY_ENV, CERT_ENV = "CITYGRID_ADMIN_KEY", "CITYGRID_ADMIN_CERT"


class SigningKey(NamedTuple):
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    account: str


def load(key_file: Path, cert_file: Path) -> SigningKey:
    """A signing key and its certificate; refuses a key file others may read or write."""
    from auth import pki

    try:
        mode = os.stat(key_file).st_mode
    except OSError:
        raise InvalidInput(f"signing key {key_file} cannot be read") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInput(
            f"signing key {key_file} is open to others (mode {stat.S_IMODE(mode):04o}); "
            f"chmod 600 {key_file}"
        )
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (ValueError, TypeError, OSError):
        raise InvalidInput("the signing key and certificate must be unencrypted PEM") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("signing keys are ECDSA P-256")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise InvalidInput("the signing key does not belong to the certificate")
    account = pki.account_of(cert)
    if not account:
        raise InvalidInput("the signing certificate names no account")
    return SigningKey(key, cert, account)


def identity(conn: Any, account: str) -> Any:
    """The acting person as the gateway would see them: active, with roles and streets."""
    from auth.identity import Identity

    row = conn.execute(
        """SELECT a.active,
                  coalesce(array_agg(DISTINCT r.role) FILTER (WHERE r.role IS NOT NULL), '{}'),
                  coalesce(array_agg(DISTINCT o.street_code)
                           FILTER (WHERE o.street_code IS NOT NULL), '{}')
           FROM account a LEFT JOIN account_role r ON r.account_id = a.id
           LEFT JOIN organisation o ON o.code = a.org_code
           WHERE a.name = %s GROUP BY a.active""",
        (account,),
    ).fetchone()
    if row is None or not row[0]:
        raise NotFound(f"no active account {account!r}")
    return Identity(account, tuple(sorted(row[1])), tuple(sorted(row[2])), "", "", "person")


class Signed(NamedTuple):
    action_id: int
    signature_sha256: str


def sign_and_accept(
    conn: Any,
    pki_dir: Path,
    who: Any,
    signer: SigningKey,
    action: str,
    resource: str,
    params: dict[str, Any],
) -> Signed:
    """Sign `params` as `who` and accept it as the server would, in `conn`'s transaction."""
    from auth import actions, pki, signed_action
    from auth.ca_store import CaStore

    nonce, _ = actions.new_nonce(conn, who.account)
    data = signed_action.payload(
        action, resource, params, nonce, pki.now(), pki.thumbprint(signer.cert)
    )
    envelope = {
        "payload": base64.b64encode(data).decode(),
        "signature": base64.b64encode(signed_action.sign(signer.key, data)).decode(),
        "certificate": pki.pem(signer.cert).decode(),
    }
    verified, action_id = actions.accept(
        conn, who, envelope, action, resource, CaStore(pki_dir).certificate()
    )
    return Signed(action_id, verified.signature_sha256)


def admin_options(func: F) -> F:
    """--admin-key and --admin-cert (or their environment variables) on a command."""
    path = click.Path(dir_okay=False, path_type=Path)
    func = click.option(
        "--admin-cert",
        envvar=CERT_ENV,
        type=path,
        help=f"Administrator's signing certificate (${CERT_ENV}).",
    )(func)
    return click.option(
        "--admin-key",
        envvar=KEY_ENV,
        type=path,
        help=f"Administrator's signing key, mode 0600 (${KEY_ENV}).",
    )(func)  # type: ignore[return-value]


class AdminAct:
    """An administrative act, signed by the administrator before the change it makes, in the
    same transaction, and audited under their name once the change is done (`done`)."""

    def __init__(
        self,
        conn: Any,
        settings: Any,
        key_file: Path | None,
        cert_file: Path | None,
        action: str,
        resource: str,
        params: dict[str, Any],
    ):
        from auth import accounts, policy

        if key_file is None or cert_file is None:
            raise InvalidInput(
                f"administrative acts are signed: give --admin-key and --admin-cert (or "
                f"{KEY_ENV} and {CERT_ENV}); the first administrator comes from "
                "`citygrid account bootstrap`"
            )
        admin = load(key_file, cert_file)
        self.conn, self.settings, self.action, self.resource = conn, settings, action, resource
        self.who = identity(conn, admin.account)
        permission = "pki.admin" if action.startswith("pki.") else "account.admin"
        policy.check(self.who.roles, policy.Request(permission), self.who.streets)
        self.signed = sign_and_accept(
            conn, settings.pki_dir, self.who, admin, action, resource, params
        )
        accounts.act_as(conn, self.who.account)  # the change register names the signer

    def done(self, **detail: Any) -> Signed:
        from audit.keys import signer as audit_key
        from audit.record import record

        entry = cli_entry(self.who.account, self.action, self.resource, self.signed, detail)
        record(self.conn, entry, audit_key(self.settings.pki_dir))
        return self.signed


def cli_entry(
    account: str, action: str, resource: str, signed: Signed, detail: dict[str, Any]
) -> Any:
    """The audit entry of a signed act from the command line: it names its signature."""
    import getpass

    from audit.record import Entry

    return Entry(
        action=action,
        account=account,
        method="CLI",
        resource=resource,
        detail={
            **detail,
            "os_user": getpass.getuser(),
            "signed_action": signed.action_id,
            "signature_sha256": signed.signature_sha256,
        },
    )


def refuse_if_administered(conn: Any, ca: x509.Certificate) -> None:
    """Bootstrapping is for an install without a signing administrator: refuse while an
    active account with the admin role holds an unrevoked, unexpired signing certificate
    from this CA (it signs every further administrative act, a new administrator too)."""
    from mapserver.errors import Conflict

    rows = conn.execute(
        """SELECT a.name, c.pem FROM certificate c JOIN account a ON a.id = c.account_id
           JOIN account_role r ON r.account_id = a.id AND r.role = 'admin'
           WHERE c.kind = 'signing' AND c.revoked_at IS NULL AND c.not_after > now()
             AND a.active"""
    ).fetchall()
    for name, pem in rows:
        cert = x509.load_pem_x509_certificate(str(pem).encode("ascii"))
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue  # a certificate of another CA proves nothing here
        raise Conflict(
            f"administrator {name} already holds a signing certificate: administrative acts "
            "are signed by an administrator (--admin-key/--admin-cert)"
        )
