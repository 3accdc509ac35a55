"""The audit log's Ed25519 checkpoint key: made on first use, private to its owner; read
without writing anything where the file system is read-only (`load_signer`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mapserver.errors import InvalidInput
from mapserver.files import atomic_write

KEY_FILE = "audit-ed25519.key"
PUBLIC_FILE = "audit-ed25519.pub"


def _load(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def _create(path: Path) -> None:
    """Write a new key unless another process got there first (then theirs is used)."""
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        os.link(tmp, path)  # atomic and exclusive: fails if the key already exists
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def signer(pki_dir: Path) -> Ed25519PrivateKey:
    """The checkpoint signing key (and its public half beside it for verifiers)."""
    path = Path(pki_dir) / KEY_FILE
    if not path.exists():
        _create(path)
    key = _load(path)
    public = Path(pki_dir) / PUBLIC_FILE
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if not public.exists() or public.read_bytes() != pem:
        # On a read-only file system (a backup's unit) the key signs all the same.
        with contextlib.suppress(OSError):
            atomic_write(public, pem, 0o644)
    return key


def load_signer(pki_dir: Path) -> Ed25519PrivateKey:
    """The checkpoint signing key as it is: nothing made or written (a backup runs under
    systemd's ProtectSystem=strict, where `signer` could not write the public half)."""
    path = Path(pki_dir) / KEY_FILE
    try:
        return _load(path)
    except FileNotFoundError:
        raise InvalidInput(f"{path} is missing: this install has no audit log key") from None
    except OSError as exc:
        raise InvalidInput(f"{path} cannot be read ({exc.strerror})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(f"{path} is not an Ed25519 private key (PEM, unencrypted)") from None


def verifier(pki_dir: Path, path: Path | None = None) -> Ed25519PublicKey:
    source = path or Path(pki_dir) / PUBLIC_FILE
    try:
        key = serialization.load_pem_public_key(Path(source).read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{source} is not an Ed25519 public key (PEM)")
    return key
