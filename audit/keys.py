"""The audit log's Ed25519 checkpoint key: made on first use, private to its owner."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auth.ca_store import write_private, write_public

KEY_FILE = "audit-ed25519.key"
PUBLIC_FILE = "audit-ed25519.pub"


def signer(pki_dir: Path) -> Ed25519PrivateKey:
    path = Path(pki_dir) / KEY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_public(
        Path(pki_dir) / PUBLIC_FILE,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return key


def verifier(pki_dir: Path, path: Path | None = None) -> Ed25519PublicKey:
    source = path or Path(pki_dir) / PUBLIC_FILE
    key = serialization.load_pem_public_key(Path(source).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{source} is not an Ed25519 public key")
    return key
