"""The CA on disk: $CITYGRID_DATA_DIR/pki/ca.crt, the passphrase-encrypted ca.key, crl.pem.

The passphrase comes from CITYGRID_CA_PASSPHRASE or the file named by
CITYGRID_CA_PASSPHRASE_FILE, never from a command line. Only the signer process
(`citygrid signer`) and the CLI read it; no web process does. PkiError messages name
settings and commands, never a path of the server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import pki
from mapserver.errors import CityGridError, Conflict
from mapserver.files import atomic_write

PASSPHRASE_ENV = "CITYGRID_CA_PASSPHRASE"
PASSPHRASE_FILE_ENV = "CITYGRID_CA_PASSPHRASE_FILE"
MIN_PASSPHRASE = 12


class PkiError(CityGridError):
    code = "pki"
    status = 400


def passphrase(environ: Mapping[str, str] | None = None) -> bytes:
    """The CA key's passphrase from the environment or a file; refuses weak or missing ones."""
    environ = os.environ if environ is None else environ
    value = environ.get(PASSPHRASE_ENV)
    source = PASSPHRASE_ENV
    if not value and environ.get(PASSPHRASE_FILE_ENV):
        source = PASSPHRASE_FILE_ENV
        try:
            value = Path(environ[PASSPHRASE_FILE_ENV]).read_text("utf-8").strip()
        except OSError as exc:
            raise PkiError(f"{PASSPHRASE_FILE_ENV}: cannot read the file: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise PkiError(f"{PASSPHRASE_FILE_ENV}: the file is not UTF-8 text") from None
    if not value:
        raise PkiError(f"set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV} to the CA passphrase")
    if len(value) < MIN_PASSPHRASE:
        raise PkiError(f"{source}: CA passphrase must have at least {MIN_PASSPHRASE} characters")
    return value.encode("utf-8")


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file atomically, readable by its owner only."""
    atomic_write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    atomic_write(path, data, 0o644)


class CaStore:
    """The CA's files under one directory."""

    def __init__(self, pki_dir: Path):
        self.dir = Path(pki_dir)

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.dir / "ca.key"

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    def exists(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def init(self, secret: bytes, name: str = "CityGrid CA") -> x509.Certificate:
        if self.exists():
            raise Conflict("a CA already exists in the data directory")
        key = pki.new_key()
        cert = pki.make_ca(key, name)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(secret),
        )
        write_private(self.key_path, encrypted)
        write_public(self.cert_path, pki.pem(cert))
        return cert

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except FileNotFoundError:
            raise PkiError("no CA yet: run `citygrid pki init`") from None
        except OSError as exc:
            raise PkiError(f"cannot read the CA certificate: {exc.strerror}") from None
        except ValueError:
            raise PkiError("the CA certificate is damaged") from None

    def key(self, secret: bytes) -> ec.EllipticCurvePrivateKey:
        try:
            data = self.key_path.read_bytes()
        except FileNotFoundError:
            raise PkiError("no CA yet: run `citygrid pki init`") from None
        except OSError as exc:
            # e.g. a web process of another user: the key belongs to the signer alone
            raise PkiError(f"cannot read the CA key: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=secret)
        except (ValueError, TypeError):
            raise PkiError("wrong CA passphrase") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError("CA key is not an EC key")
        return key

    def write_crl(self, crl: x509.CertificateRevocationList) -> None:
        try:
            write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            raise PkiError(f"cannot write the CRL: {exc.strerror}") from None

    def crl(self) -> x509.CertificateRevocationList | None:
        try:
            return x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PkiError(f"cannot read the CRL: {exc.strerror}") from None
        except ValueError:
            raise PkiError("the published CRL is damaged") from None
