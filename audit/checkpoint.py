"""Signed checkpoints in the C2SP tlog-checkpoint / signed-note text format, Ed25519. Pure.

    <origin>
    <tree size>
    <base64 root hash>

    — <key name> <base64(key id ‖ signature)>

The key id is the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key).
"""

from __future__ import annotations

import base64
import hashlib
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ORIGIN = "citygrid.audit/v1"
KEY_NAME = "citygrid-audit"
ALG_ED25519 = b"\x01"


class CheckpointError(ValueError):
    pass


class Checkpoint(NamedTuple):
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + raw).digest()[:4]


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey, name: str = KEY_NAME) -> str:
    body = checkpoint.body()
    signature = key.sign(body)
    blob = base64.b64encode(key_id(name, key.public_key()) + signature).decode()
    return body.decode() + f"\n\u2014 {name} {blob}\n"


def verify(note: str, public: Ed25519PublicKey, name: str = KEY_NAME) -> Checkpoint:
    """Parse a signed note and check the signature of `name`; returns the checkpoint."""
    body, sep, signatures = note.partition("\n\n")
    if not sep:
        raise CheckpointError("not a signed note")
    body_bytes = (body + "\n").encode()
    lines = body.split("\n")
    if len(lines) < 3 or not (lines[1].isascii() and lines[1].isdigit()):
        raise CheckpointError("not a checkpoint")
    want = key_id(name, public)
    for line in signatures.splitlines():
        prefix = f"\u2014 {name} "
        if not line.startswith(prefix):
            continue
        try:
            blob = base64.b64decode(line[len(prefix) :], validate=True)
        except ValueError:
            continue
        if blob[:4] != want:
            continue
        try:
            public.verify(blob[4:], body_bytes)
        except InvalidSignature:
            raise CheckpointError("checkpoint signature does not verify") from None
        try:
            root = base64.b64decode(lines[2], validate=True)
        except ValueError:
            raise CheckpointError("bad root hash") from None
        return Checkpoint(lines[0], int(lines[1]), root)
    raise CheckpointError(f"no signature by {name}")
