"""Witness cosignatures of checkpoints: C2SP tlog-cosignature v1 (Ed25519). Pure.

A cosignature is one more signed-note line under the checkpoint:

    — <witness name> base64(key id ‖ u64 big-endian time ‖ Ed25519 signature)

The key id is SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]; the signature is over

    cosignature/v1
    time <POSIX seconds, decimal>
    <the checkpoint body, final newline included>

and states that, at that time, this was the largest consistent tree the witness had seen.
Witnesses are named by signed-note verifier keys: `<name>+<hex key id>+<base64(0x04 ‖ key)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.checkpoint import Checkpoint

ALG_COSIGNATURE_V1 = 0x04
HEADER = b"cosignature/v1\n"
DASH = "\u2014"
MAX_TIME = 2**63 - 1
_NAME = re.compile(r"[^\s+]{1,200}")  # a note key name: no spaces, no plus signs
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class CosignatureError(ValueError):
    """A cosignature, verifier key or checkpoint that is malformed or does not verify."""


class NoCosignature(CosignatureError):
    """The note carries no cosignature line of this witness."""


class Witness(NamedTuple):
    """A cosigner a verifier trusts: its name and Ed25519 public key (raw, 32 bytes)."""

    name: str
    public: bytes

    def key_id(self) -> bytes:
        return key_id(self.name, self.public)

    def vkey(self) -> str:
        blob = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public).decode()
        return f"{self.name}+{self.key_id().hex()}+{blob}"

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public)


class Cosigned(NamedTuple):
    """A verified cosignature: who, when (POSIX seconds), of which checkpoint, and its line."""

    witness: str
    time: int
    checkpoint: Checkpoint
    body: str
    line: str


def raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public).digest()[:4]


def witness_of(name: str, key: Ed25519PrivateKey) -> Witness:
    if not _NAME.fullmatch(name):
        raise CosignatureError("a witness name has no spaces or plus signs")
    return Witness(name, raw(key.public_key()))


def parse_vkey(text: str) -> Witness:
    """A witness from its verifier key; the key id must match the name and key."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3 or not _NAME.fullmatch(parts[0]):
        raise CosignatureError("a witness key is <name>+<key id>+<base64 key>")
    name, hex_id, blob = parts
    try:
        decoded = base64.b64decode(blob, validate=True)
        wanted = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError):
        raise CosignatureError(f"witness key of {name}: bad encoding") from None
    if len(decoded) != 33 or decoded[0] != ALG_COSIGNATURE_V1:
        raise CosignatureError(f"witness key of {name}: not an Ed25519 cosignature/v1 key")
    witness = Witness(name, decoded[1:])
    if witness.key_id() != wanted:
        raise CosignatureError(f"witness key of {name}: key id does not match")
    return witness


def parse_vkeys(text: str) -> list[Witness]:
    """Comma-separated verifier keys (the setting `audit_witnesses`)."""
    witnesses = [parse_vkey(part) for part in text.split(",") if part.strip()]
    names = [w.name for w in witnesses]
    if len(set(names)) != len(names):
        raise CosignatureError("a witness is named twice")
    return witnesses


def split(note: str) -> tuple[str, list[str]]:
    """A signed note's body (final newline included) and its signature lines."""
    body, sep, rest = note.partition("\n\n")
    if not sep or not rest.endswith("\n"):
        raise CosignatureError("not a signed note")
    return body + "\n", rest[:-1].split("\n")


def parse_body(body: str) -> Checkpoint:
    """The origin, size and root of a checkpoint body (C2SP tlog-checkpoint)."""
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise CosignatureError("not a checkpoint")
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", lines[1]) or not _B64.fullmatch(lines[2]):
        raise CosignatureError("not a checkpoint")
    root = base64.b64decode(lines[2])
    if len(root) != 32:
        raise CosignatureError("a checkpoint's root is 32 bytes")
    return Checkpoint(lines[0], int(lines[1]), root)


def message(body: str, time: int) -> bytes:
    if not 0 <= time <= MAX_TIME:
        raise CosignatureError("cosignature time out of range")
    return HEADER + f"time {time}\n".encode() + body.encode()


def sign(body: str, key: Ed25519PrivateKey, name: str, time: int) -> str:
    """The cosignature line (without its newline) of `name` for a checkpoint body."""
    parse_body(body)
    witness = witness_of(name, key)
    signature = key.sign(message(body, time))
    blob = witness.key_id() + struct.pack(">Q", time) + signature
    return f"{DASH} {name} {base64.b64encode(blob).decode()}"


def cosign(note: str, key: Ed25519PrivateKey, name: str, time: int) -> str:
    """`note` with the witness's cosignature line added."""
    body, _ = split(note)
    return note + sign(body, key, name, time) + "\n"


def verify(note: str, witness: Witness) -> Cosigned:
    """The cosignature of `witness` on the checkpoint `note`; raises unless one verifies."""
    body, lines = split(note)
    checkpoint = parse_body(body)
    prefix = f"{DASH} {witness.name} "
    want = witness.key_id()
    public = witness.verifier()
    for line in lines:
        if not line.startswith(prefix):
            continue
        try:
            blob = base64.b64decode(line[len(prefix) :], validate=True)
        except binascii.Error:
            continue
        if len(blob) != 4 + 8 + 64 or blob[:4] != want:
            continue  # a line of another key of the same name
        (time,) = struct.unpack(">Q", blob[4:12])
        try:
            public.verify(blob[12:], message(body, time))
        except InvalidSignature:
            raise CosignatureError(f"the cosignature of {witness.name} does not verify") from None
        return Cosigned(witness.name, time, checkpoint, body, line)
    raise NoCosignature(f"no cosignature by {witness.name}")


def verify_any(note: str, witnesses: list[Witness]) -> list[Cosigned]:
    """Every valid cosignature on `note` by one of `witnesses` (a forged line raises)."""
    out = []
    for witness in witnesses:
        try:
            out.append(verify(note, witness))
        except NoCosignature:
            continue
    return out
