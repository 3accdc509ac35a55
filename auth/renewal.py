"""Keeping CityGrid running for years: what must be renewed before it runs out, and a
health report that says how long each piece has left.

Renewed before it matters, with an overlap: the CRL (valid 7 days, republished once a day
by the signer's schedule and by `citygrid pki renew`), server certificates (30 days before
they expire; gunicorn picks the new files up for the next connection) and the token
signing key (rotated every 30 days; older keys stay for validation). The decisions are
pure functions of the objects and a time; `renew` and `health` are the thin I/O around them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509

from auth import certs, pki
from auth.ca_store import CaStore
from mapserver.settings import Settings

CRL_REFRESH = dt.timedelta(days=1)  # republish when the CRL is older than this
CRL_WARN = dt.timedelta(days=5)  # warn when less than this is left (two refreshes missed)
SERVER_RENEW = dt.timedelta(days=30)
SERVER_WARN = dt.timedelta(days=14)
CA_WARN = dt.timedelta(days=180)
TOKEN_KEY_ROTATE = dt.timedelta(days=30)
TOKEN_KEY_WARN = dt.timedelta(days=60)


class Finding(NamedTuple):
    level: str  # "warning" or "error"
    what: str
    message: str


def crl_due(crl: x509.CertificateRevocationList | None, now: dt.datetime) -> bool:
    """A CRL must be (re)published: none yet, older than a day, near its next update, or
    not valid yet: published by a clock that ran ahead (pki.build_crl dates a CRL a minute
    back), which TLS refuses every client against until that time comes."""
    if crl is None or crl.next_update_utc is None:
        return True
    return (
        crl.last_update_utc > now
        or now - crl.last_update_utc >= CRL_REFRESH
        or crl.next_update_utc - now < certs.CRL_VALIDITY - CRL_REFRESH
    )


def certificate_due(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_after_utc - now < SERVER_RENEW


def key_born(kid: str) -> dt.datetime | None:
    """When a token key was made: kids start with the Unix time of their rotation."""
    head = kid.split("-", 1)[0]
    if not (head.isascii() and head.isdigit()):
        return None
    return dt.datetime.fromtimestamp(int(head), dt.UTC)


def token_key_age(jwt_dir: Path, now: dt.datetime) -> dt.timedelta | None:
    """The age of the newest token signing key (None: no key yet)."""
    born = [b for p in jwt_dir.glob("*.pem") if (b := key_born(p.stem)) is not None]
    return now - max(born) if born else None


def server_certificates(settings: Settings) -> dict[str, x509.Certificate]:
    """host → the server certificate `citygrid serve` issued for it."""
    found = {}
    for path in sorted((settings.pki_dir / "server").glob("*.crt")):
        try:
            found[path.stem] = x509.load_pem_x509_certificates(path.read_bytes())[0]
        except (OSError, ValueError):
            continue
    return found


def findings(settings: Settings, now: dt.datetime) -> list[Finding]:
    """Everything that has run out or soon will, for `config check` and GET /health."""
    store = CaStore(settings.pki_dir)
    out: list[Finding] = []
    if not store.cert_path.exists():
        return [Finding("warning", "ca", "no CA yet: run `citygrid pki init`")]
    ca = store.certificate()
    if ca.not_valid_after_utc <= now:
        out.append(Finding("error", "ca", "the CA certificate has expired"))
    elif ca.not_valid_after_utc - now < CA_WARN:
        out.append(Finding("warning", "ca", f"the CA expires on {ca.not_valid_after_utc:%Y-%m-%d}"))
    crl = store.crl()
    if crl is None or crl.next_update_utc is None:
        out.append(
            Finding("warning", "crl", "no CRL yet: the signer or `citygrid serve` publishes one")
        )
    elif crl.last_update_utc > now:
        out.append(
            Finding(
                "error",
                "crl",
                f"the CRL is not valid before {crl.last_update_utc:%Y-%m-%d %H:%M} UTC (a clock "
                "ran ahead when it was published): client certificates are refused until a "
                "fresh one is published (`citygrid pki renew` or `citygrid pki crl`)",
            )
        )
    elif crl.next_update_utc <= now:
        out.append(
            Finding(
                "error",
                "crl",
                "the CRL has expired: client certificates are refused until a fresh one is "
                "published (`citygrid pki crl`; a renderer gets it pushed by its gateway)",
            )
        )
    elif crl.next_update_utc - now < CRL_WARN:
        out.append(
            Finding(
                "warning",
                "crl",
                f"the CRL runs out at {crl.next_update_utc:%Y-%m-%d %H:%M} UTC: is the signer "
                "or the renewal timer running?",
            )
        )
    for host, cert in server_certificates(settings).items():
        left = cert.not_valid_after_utc - now
        if left <= dt.timedelta(0):
            out.append(Finding("error", "server_certificate", f"{host}: expired"))
        elif left < SERVER_WARN:
            out.append(
                Finding(
                    "warning",
                    "server_certificate",
                    f"{host}: expires on {cert.not_valid_after_utc:%Y-%m-%d}",
                )
            )
    age = token_key_age(settings.pki_dir / "jwt", now)
    if age is not None and age > TOKEN_KEY_WARN:
        out.append(Finding("warning", "token_key", f"token signing key is {age.days} days old"))
    return out


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def health(settings: Settings, now: dt.datetime | None = None) -> dict[str, Any]:
    """The operator's view: expiry dates, ages and warnings, as JSON data."""
    now = now or pki.now()
    store = CaStore(settings.pki_dir)
    ca = store.certificate() if store.cert_path.exists() else None
    crl = store.crl()
    age = token_key_age(settings.pki_dir / "jwt", now)
    found = findings(settings, now)
    return {
        "status": "error"
        if any(f.level == "error" for f in found)
        else ("warning" if found else "ok"),
        "now": now.isoformat(),
        "ca_not_after": _iso(ca.not_valid_after_utc if ca else None),
        "crl_last_update": _iso(crl.last_update_utc if crl else None),
        "crl_next_update": _iso(crl.next_update_utc if crl else None),
        "server_certificates": {
            host: c.not_valid_after_utc.isoformat()
            for host, c in server_certificates(settings).items()
        },
        "token_key_age_seconds": int(age.total_seconds()) if age is not None else None,
        "warnings": [f"{f.level}: {f.what}: {f.message}" for f in found],
    }


def renew(settings: Settings, secret: bytes | None, now: dt.datetime | None = None) -> list[str]:
    """Renew what is due; returns one line per act. Without the CA passphrase only the
    token key is handled (the CRL is then the signer's job)."""
    from auth.tokens import KeySet
    from mapserver import db

    now = now or pki.now()
    store = CaStore(settings.pki_dir)
    done: list[str] = []
    if secret is not None:
        certs.require_ca(store)
        due_hosts = [h for h, c in server_certificates(settings).items() if certificate_due(c, now)]
        if due_hosts or crl_due(store.crl(), now):
            with db.transaction(settings) as conn:
                for host in due_hosts:
                    issued = certs.issue(
                        conn, store, secret, host, pki.Kind.SERVER, settings.pki_dir / "server"
                    )
                    done.append(
                        f"server certificate {host} renewed until {issued.not_after:%Y-%m-%d}"
                    )
                if crl_due(store.crl(), now):
                    crl = certs.publish_crl(conn, store, secret)
                    done.append(
                        f"CRL published, next update {crl.next_update_utc:%Y-%m-%d %H:%M} UTC"
                    )
    jwt_dir = settings.pki_dir / "jwt"
    age = token_key_age(jwt_dir, now)
    if age is not None and age >= TOKEN_KEY_ROTATE:
        done.append(f"token signing key rotated: {KeySet(jwt_dir).rotate()}")
    return done
