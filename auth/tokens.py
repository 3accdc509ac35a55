"""Short-lived ES256 access tokens bound to the client certificate (RFC 8705 `cnf`).

A token is useless without the certificate it was issued over: validation compares the
presenting certificate's SHA-256 thumbprint with the token's `cnf.x5t#S256` in constant
time. Signing keys rotate by `kid`; older keys stay for validation until their tokens
have expired.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth.ca_store import write_private
from auth.identity import Identity, Unauthenticated

ALGORITHM = "ES256"
ISSUER = "citygrid"
AUDIENCE = "citygrid-api"
LIFETIME = 600
REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "cnf"]


def x5t_s256(sha256_hex: str) -> str:
    """RFC 8705 thumbprint: base64url (no padding) of the certificate's SHA-256."""
    return base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).rstrip(b"=").decode("ascii")


class KeySet:
    """Token signing keys in a directory, one PEM per kid; the newest signs.

    A token with an unknown kid may come from a key another process has just rotated in,
    so the directory is looked at again — but reloaded only when its stat changed, or at
    most once per `min_interval` seconds (timestamps can hide a change made within the same
    clock tick): a flood of made-up kids costs one stat each, not a directory of PEM parses.
    """

    def __init__(self, directory: Path, keep: int = 3, min_interval: float = 5.0):
        self.dir = Path(directory)
        self.keep = keep
        self.min_interval = min_interval
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._order: list[str] = []
        self._stamp: tuple[int, ...] | None = None
        self._loaded_at = 0.0
        self._refresh_lock = threading.Lock()
        self.reload()

    def _dir_stamp(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.dir)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink)

    def refresh(self) -> bool:
        """Reload if the directory changed (or `min_interval` passed); True if reloaded."""
        with self._refresh_lock:
            stale = time.monotonic() - self._loaded_at >= self.min_interval
            if self._dir_stamp() == self._stamp and not stale:
                return False
            self.reload()
            return True

    def reload(self) -> None:
        stamp = self._dir_stamp()  # taken first: a change during the load is seen next time
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        files = sorted(self.dir.glob("*.pem"), key=lambda p: p.stat().st_mtime_ns)
        for path in files:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                keys[path.stem] = key
        self._keys = keys
        self._order = [p.stem for p in files if p.stem in keys]
        self._stamp = stamp
        self._loaded_at = time.monotonic()

    def rotate(self) -> str:
        """Make a new signing key; drop keys beyond the newest `keep`."""
        kid = f"{int(time.time())}-{secrets.token_hex(4)}"
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(
            self.dir / f"{kid}.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        self.reload()
        for old in self._order[: -self.keep]:
            (self.dir / f"{old}.pem").unlink(missing_ok=True)
        self.reload()
        return kid

    @property
    def current(self) -> str:
        if not self._order:
            self.rotate()
        return self._order[-1]

    def signing_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        if self._dir_stamp() != self._stamp:  # rotated by `citygrid pki renew` (one stat)
            self.refresh()
        kid = self.current
        return kid, self._keys[kid]

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        key = self._keys.get(kid)
        return key.public_key() if key else None


def issue(keys: KeySet, who: Identity, lifetime: int = LIFETIME, now: float | None = None) -> str:
    now = time.time() if now is None else now
    kid, key = keys.signing_key()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": who.account,
        "iat": int(now),
        "nbf": int(now) - 5,
        "exp": int(now) + lifetime,
        "jti": secrets.token_urlsafe(12),
        "roles": list(who.roles),
        "cnf": {"x5t#S256": x5t_s256(who.cert_sha256)},
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def refused(check: str, message: str) -> Unauthenticated:
    """A refused token; `check` (for the audit entry) names the check that failed."""
    return Unauthenticated("bad_token", message, check=check)


# The failed check behind each of PyJWT's errors, most specific first.
CHECKS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.InvalidAudienceError, "wrong_audience"),
    (jwt.InvalidIssuerError, "wrong_issuer"),
    (jwt.MissingRequiredClaimError, "missing_claim"),
    (jwt.InvalidIssuedAtError, "bad_issued_at"),
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "algorithm"),
    (jwt.DecodeError, "malformed"),
)


def validate(keys: KeySet, token: str, presenting_sha256: str) -> dict[str, Any]:
    """Claims of a valid token presented over the certificate it was bound to; else 401."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise refused("malformed", "malformed token") from None
    if header.get("alg") != ALGORITHM:
        raise refused("algorithm", "token algorithm not accepted")
    kid = str(header.get("kid", ""))
    public = keys.public_key(kid)
    if public is None and keys.refresh():  # another process may have rotated the keys
        public = keys.public_key(kid)
    if public is None:
        raise refused("unknown_kid", "token signed with an unknown key")
    try:
        claims = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED},
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise refused("expired", "token expired") from None
    except jwt.InvalidTokenError as exc:
        check = next((name for kind, name in CHECKS if isinstance(exc, kind)), "invalid")
        if isinstance(exc, jwt.MissingRequiredClaimError):
            check = f"missing_claim:{exc.claim}"
        raise refused(check, f"token rejected: {type(exc).__name__}") from None
    bound = claims.get("cnf", {})
    expected = x5t_s256(presenting_sha256)
    if not isinstance(bound, dict) or not hmac.compare_digest(
        str(bound.get("x5t#S256", "")).encode(), expected.encode()
    ):
        raise refused("wrong_binding", "token not bound to this client certificate")
    return claims
