"""Grants: the short-lived ES256 token the gateway signs for each request to the renderer.

A grant names the account the gateway decided for, the products, the level and the street
scope (None: the whole district), and is bound (RFC 8705 `cnf`) to the gateway's service
certificate. The renderer checks it again, whatever the gateway decided: a tile outside the
scope, an expired grant, a grant signed with another key or presented over another
certificate is refused. The key pair is dedicated to grants: the gateway holds the private
key, the renderer only the public one (`citygrid renderer grant-key`).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth.ca_store import write_private, write_public
from auth.tokens import x5t_s256

ALGORITHM = "ES256"
ISSUER = "citygrid-gateway"
AUDIENCE = "citygrid-renderer"
LIFETIME = 60  # seconds; the gateway reuses a grant for at most half of it
MAX_LIFETIME = 300  # the renderer refuses grants that claim to live longer
REQUIRED = ["exp", "iat", "nbf", "iss", "aud", "sub", "cnf", "products", "level"]  # + streets


class Refused(Exception):
    """A grant the renderer does not accept; `check` names the failed check (for the log)."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


class Grant(NamedTuple):
    account: str
    products: tuple[str, ...]
    level: int
    streets: frozenset[str] | None  # None: every street


def make_keys(out_dir: Path) -> tuple[Path, Path]:
    """A new grant key pair: grant.key (0600, for the gateway) and grant.pub (the renderer)."""
    key = ec.generate_private_key(ec.SECP256R1())
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / "grant.key", out_dir / "grant.pub"
    write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )  # fmt: skip
    write_public(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return private, public


def load_private(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def load_public(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path}: not an EC public key")
    return key


def sign(
    key: ec.EllipticCurvePrivateKey,
    grant: Grant,
    cert_sha256: str,
    lifetime: int = LIFETIME,
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": grant.account,
        "iat": int(now),
        "nbf": int(now) - 5,
        "exp": int(now) + lifetime,
        "jti": secrets.token_urlsafe(9),
        "products": list(grant.products),
        "level": grant.level,
        "streets": None if grant.streets is None else sorted(grant.streets),
        "cnf": {"x5t#S256": x5t_s256(cert_sha256)},
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


class Signer:
    """The gateway's side: signs grants, reusing one for the same grant while more than half
    of its lifetime remains (one signature per account, product and level, not per tile)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert_sha256: str, lifetime: int = LIFETIME):
        self.key = key
        self.cert_sha256 = cert_sha256
        self.lifetime = lifetime
        self._held: dict[Grant, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def token(self, grant: Grant) -> str:
        now = time.time()
        held = self._held.get(grant)
        if held is not None and held[0] > now:
            return held[1]
        token = sign(self.key, grant, self.cert_sha256, self.lifetime, now)
        with self._lock:
            if len(self._held) > 10_000:
                self._held = {g: h for g, h in self._held.items() if h[0] > now}
            self._held[grant] = (now + self.lifetime / 2, token)
        return token


def verify(public: ec.EllipticCurvePublicKey, token: str, presenting_sha256: str) -> Grant:
    """The grant in a valid token presented over the certificate it is bound to; else Refused."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Refused("malformed", "malformed grant") from None
    if header.get("alg") != ALGORITHM:
        raise Refused("algorithm", "grant algorithm not accepted")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, public, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
            options={"require": REQUIRED}, leeway=0,
        )  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise Refused("expired", "grant expired") from None
    except jwt.InvalidSignatureError:
        raise Refused("bad_signature", "grant not signed by the gateway's key") from None
    except jwt.InvalidTokenError as exc:
        raise Refused("invalid", f"grant rejected: {type(exc).__name__}") from None
    if "streets" not in claims:  # present, null for every street (PyJWT's require refuses null)
        raise Refused("invalid", "grant rejected: no street scope")
    if int(claims["exp"]) - int(claims["iat"]) > MAX_LIFETIME:
        raise Refused("too_long", "grant lives too long")
    bound = claims["cnf"]
    if not isinstance(bound, dict) or bound.get("x5t#S256") != x5t_s256(presenting_sha256):
        raise Refused("wrong_binding", "grant not bound to this client certificate")
    products, level, streets = claims["products"], claims["level"], claims["streets"]
    if not (
        isinstance(products, list)
        and all(isinstance(p, str) for p in products)
        and isinstance(level, int)
        and (streets is None or isinstance(streets, list))
        and all(isinstance(s, str) for s in streets or ())
    ):
        raise Refused("malformed", "grant claims of the wrong type")
    return Grant(
        str(claims["sub"]), tuple(products), level, None if streets is None else frozenset(streets)
    )


def expiry(token: str) -> float:
    """The `exp` of a token `verify` accepted (read without checking again)."""
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


def covers(grant: Grant, products: Iterable[str], level: int) -> bool:
    return level == grant.level and all(p in grant.products for p in products)


def covers_one(grant: Grant, product: str, level: int) -> bool:
    """`covers` for one product (a tile's: asked on every tile, without a list to build)."""
    return level == grant.level and product in grant.products
