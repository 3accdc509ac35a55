"""The register of issued certificates (database) and the CA operations that change it."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path
from typing import NamedTuple

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from auth import accounts, pki
from auth.ca_store import CaStore, PkiError, write_private, write_public
from mapserver import text_limits
from mapserver.errors import InvalidInput, NotFound

REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
}
# A CRL is valid for a week and republished daily (auth.renewal), so a missed day or a
# clock a day ahead never locks everyone out.
CRL_VALIDITY = dt.timedelta(days=7)


class Issued(NamedTuple):
    serial: str
    kind: str
    name: str
    sha256: str
    not_after: dt.datetime
    files: tuple[Path, ...]
    p12_password: str | None


class Listed(NamedTuple):
    serial: str
    kind: str
    name: str
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    reason: str | None

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.not_after < pki.now() else "valid"


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def register(
    conn: psycopg.Connection, cert: x509.Certificate, kind: pki.Kind, account_id: int | None
) -> None:
    conn.execute(
        """INSERT INTO certificate (serial, kind, account_id, subject, sha256, not_before,
                                    not_after, pem)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            serial_hex(cert.serial_number),
            kind.value,
            account_id,
            cert.subject.rfc4514_string(),
            pki.thumbprint(cert),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            pki.pem(cert).decode("ascii"),
        ),
    )


def issue(
    conn: psycopg.Connection,
    store: CaStore,
    secret: bytes,
    name: str,
    kind: pki.Kind,
    out_dir: Path,
    days: int | None = None,
    p12_password: str | None = None,
) -> Issued:
    """Issue a key pair and certificate; write NAME.key, NAME.crt (and NAME.p12 for persons)."""
    if days is not None and not 0 < days <= 3650:
        raise InvalidInput("--days must be between 1 and 3650")
    ca_cert = store.certificate()
    ca_key = store.key(secret)
    account_id: int | None = None
    if kind in (pki.Kind.SERVER, pki.Kind.SERVICE):  # a host or a service: no account
        if not name or any(c in name for c in "/\\ "):
            raise InvalidInput(f"bad host name {name!r}")
    else:
        account = accounts.get(conn, name)
        if not account.active:
            raise InvalidInput(f"account {name!r} is disabled")
        account_id = account.id
    key = pki.new_key()
    cert = pki.issue(ca_key, ca_cert, key.public_key(), kind, name, days)
    register(conn, cert, kind, account_id)
    out_dir = Path(out_dir)
    stem = name if kind is not pki.Kind.SIGNING else f"{name}.signing"
    key_path, cert_path = out_dir / f"{stem}.key", out_dir / f"{stem}.crt"
    write_private(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_public(cert_path, pki.pem(cert) + pki.pem(ca_cert))
    files = [cert_path, key_path]
    password = None
    if kind is pki.Kind.PERSON:
        password = p12_password or secrets.token_urlsafe(12)
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(50000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password.encode("utf-8"))
        )
        p12 = pkcs12.serialize_key_and_certificates(
            name.encode("utf-8"), key, cert, [ca_cert], encryption
        )
        p12_path = out_dir / f"{stem}.p12"
        write_private(p12_path, p12)
        files.append(p12_path)
    return Issued(
        serial_hex(cert.serial_number),
        kind.value,
        name,
        pki.thumbprint(cert),
        cert.not_valid_after_utc,
        tuple(files),
        password,
    )


def revoke(conn: psycopg.Connection, serial: str, reason: str = "unspecified") -> Listed:
    serial = serial.lower().removeprefix("0x").replace(":", "")
    text_limits.REVOCATION_REASON.check(reason)
    if reason not in REASONS:
        raise InvalidInput(f"unknown reason {reason!r}; reasons: {', '.join(REASONS)}")
    row = conn.execute(
        "SELECT revoked_at FROM certificate WHERE serial = %s FOR UPDATE", (serial,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no certificate with serial {serial}")
    if row[0] is not None:
        raise InvalidInput(f"certificate {serial} is already revoked")
    conn.execute(
        "UPDATE certificate SET revoked_at = now(), revocation_reason = %s WHERE serial = %s",
        (reason, serial),
    )
    return next(c for c in listing(conn) if c.serial == serial)


def publish_crl(
    conn: psycopg.Connection, store: CaStore, secret: bytes
) -> x509.CertificateRevocationList:
    """Sign a fresh CRL of every revoked certificate and write it to the CA directory."""
    return publish_crl_with(conn, store, store.key(secret))


def publish_crl_with(
    conn: psycopg.Connection, store: CaStore, ca_key: ec.EllipticCurvePrivateKey
) -> x509.CertificateRevocationList:
    """publish_crl with the CA key already decrypted (the signer process holds it)."""
    rows = conn.execute(
        "SELECT serial, revoked_at, revocation_reason FROM certificate "
        "WHERE revoked_at IS NOT NULL ORDER BY revoked_at"
    ).fetchall()
    revoked = [pki.Revoked(int(s, 16), at, REASONS[r]) for s, at, r in rows]
    number = conn.execute("SELECT nextval('crl_number')").fetchone()[0]  # type: ignore[index]
    crl = pki.build_crl(ca_key, store.certificate(), revoked, number, CRL_VALIDITY)
    keep_crl(conn, crl)
    store.write_crl(crl)
    return crl


def keep_crl(conn: psycopg.Connection, crl: x509.CertificateRevocationList) -> None:
    """Keep every published CRL (crl_history): a signed action is judged offline against
    the CRL that was current when the log took it in, however long ago that was."""
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    conn.execute(
        "INSERT INTO crl_history (number, this_update, next_update, pem) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (number) DO NOTHING",
        (
            number,
            crl.last_update_utc,
            crl.next_update_utc,
            crl.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        ),
    )


def listing(conn: psycopg.Connection) -> list[Listed]:
    rows = conn.execute(
        """SELECT c.serial, c.kind, coalesce(a.name, substring(c.subject from 'CN=([^,]+)')),
                  c.not_after, c.revoked_at, c.revocation_reason
           FROM certificate c LEFT JOIN account a ON a.id = c.account_id
           ORDER BY c.issued_at, c.serial"""
    ).fetchall()
    return [Listed(*row) for row in rows]


def require_ca(store: CaStore) -> None:
    if not store.exists():
        raise PkiError("no CA yet: run `citygrid pki init`")
