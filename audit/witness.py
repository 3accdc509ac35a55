"""A witness of the audit log, run by the security office on its own machine with its own key.

Each run fetches the log's newest checkpoint and a consistency proof from the last checkpoint
the witness cosigned, checks the log's signature (with the key pinned by its fingerprint at
`init`) and the proof, and only then cosigns (audit.cosignature) and posts the cosignature
back. What it saw is kept in its own directory, never on the server: a checkpoint smaller than
or inconsistent with it is refused, and stays refused on every later run.

    DIR/witness-ed25519.key   its private key (0600)
    DIR/state.json            name, the log key's fingerprint and key, last size/root/note
    DIR/cosigned.log          every note it cosigned, appended
    DIR/refusals.log          every refusal, appended
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit import checkpoint, cosignature, merkle
from mapserver.files import atomic_write

KEY_FILE = "witness-ed25519.key"
STATE_FILE = "state.json"
TIMEOUT = 30.0


class Refusal(Exception):
    """The log showed the witness something it must never cosign."""


class WitnessError(Exception):
    """The witness could not do its work (no state, server unreachable…): nothing is proven."""


def fingerprint(raw: bytes) -> str:
    """SHA-256 of a raw Ed25519 public key, as 16 groups of 4 hex digits."""
    digest = hashlib.sha256(raw).hexdigest()
    return " ".join(digest[i : i + 4] for i in range(0, 64, 4))


def normal_fingerprint(text: str) -> str:
    """A fingerprint as typed (spaces, colons, capitals) in its printed form."""
    digits = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise WitnessError("a fingerprint is 64 hexadecimal digits")
    return " ".join(digits[i : i + 4] for i in range(0, 64, 4))


@dataclass(frozen=True)
class State:
    name: str
    log_fingerprint: str
    log_key: str = ""  # base64 raw key, once seen and matching the fingerprint
    size: int = 0
    root: str = ""  # base64
    note: str = ""  # the last note cosigned, the witness's line included


class Latest(NamedTuple):
    checkpoint: checkpoint.Checkpoint
    note: str


# ---------------------------------------------------------------- the pure core


def check_key(state: State, raw: bytes) -> State:
    """Pin the log's key: it must match the fingerprint, and never change afterwards."""
    if fingerprint(raw) != state.log_fingerprint:
        raise Refusal(
            f"the log's key has fingerprint {fingerprint(raw)}, "
            f"not the pinned {state.log_fingerprint}"
        )
    encoded = base64.b64encode(raw).decode()
    if state.log_key and state.log_key != encoded:
        raise Refusal("the log's key differs from the one pinned at the first run")
    return replace(state, log_key=encoded)


def check_latest(state: State, note: str) -> Latest:
    """The log's newest checkpoint, signed by the pinned key and not below what was seen."""
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(state.log_key))
    try:
        signed = checkpoint.verify(note, public)
    except checkpoint.CheckpointError as exc:
        raise Refusal(f"the newest checkpoint is not signed by the log's key: {exc}") from None
    if signed.origin != checkpoint.ORIGIN:
        raise Refusal(f"the newest checkpoint is for another log ({signed.origin!r:.80})")
    if signed.size < state.size:
        raise Refusal(
            f"ROLLBACK: the log's newest checkpoint has {signed.size} entries, fewer than "
            f"the {state.size} this witness already cosigned"
        )
    if signed.size == state.size and signed.root != base64.b64decode(state.root):
        raise Refusal(
            f"FORK: the checkpoint of size {signed.size} has another root than the one cosigned"
        )
    return Latest(signed, note)


def check_consistency(state: State, latest: Latest, proof: list[bytes]) -> None:
    """Raise Refusal unless the newest checkpoint extends the last one cosigned."""
    if state.size == 0 or latest.checkpoint.size == state.size:
        return
    try:
        merkle.verify_consistency(
            state.size,
            latest.checkpoint.size,
            base64.b64decode(state.root),
            latest.checkpoint.root,
            proof,
        )
    except merkle.ProofError as exc:
        raise Refusal(
            f"INCONSISTENT: the checkpoint of size {latest.checkpoint.size} does not extend "
            f"the one of size {state.size} this witness cosigned ({exc})"
        ) from None


def cosign(state: State, latest: Latest, key: Ed25519PrivateKey, now: int) -> State:
    note = cosignature.cosign(latest.note, key, state.name, now)
    root = base64.b64encode(latest.checkpoint.root).decode()
    return replace(state, size=latest.checkpoint.size, root=root, note=note)


# ---------------------------------------------------------------- the log, over HTTPS


class Log(Protocol):
    def key(self) -> bytes: ...

    def latest(self) -> str: ...

    def consistency(self, old: int, new: int) -> list[bytes]: ...

    def post(self, note: str) -> None: ...


class HttpsLog:
    """The review API of a CityGrid server, with a security officer's client certificate."""

    def __init__(self, url: str, cert: Path, key: Path, ca: Path):
        if not url.startswith("https://"):
            raise WitnessError(f"--server must be an https:// URL, not {url!r}")
        self.url = url.rstrip("/")
        try:
            self.context = ssl.create_default_context(cafile=str(ca))
            self.context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as exc:  # a file of another kind, or a key of another certificate
            reason = exc.reason or "unreadable"
            raise WitnessError(f"--cert, --key, --ca: not PEM files that fit ({reason})") from None

    def _call(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=TIMEOUT) as r:
                return int(r.status), json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read())
            except ValueError:
                payload = {}
            return int(exc.code), payload
        except (OSError, ValueError) as exc:
            raise WitnessError(f"{self.url}{path}: {exc}") from None

    def _get(self, path: str) -> Any:
        status, payload = self._call(path)
        if status != 200:
            raise WitnessError(f"{path}: HTTP {status} {payload.get('message', '')}")
        return payload

    def key(self) -> bytes:
        return base64.b64decode(self._get("/audit/key")["public_key"])

    def latest(self) -> str:
        found = self._get("/audit/checkpoints")["checkpoints"]
        if not found:
            raise WitnessError("the log has no checkpoint yet")
        return str(found[0]["note"])

    def consistency(self, old: int, new: int) -> list[bytes]:
        status, payload = self._call(f"/audit/proof/consistency?from={old}&to={new}")
        if status == 404:
            raise Refusal(
                f"the log no longer has a checkpoint of size {old}, which this witness "
                f"cosigned, to prove size {new} consistent with it"
            )
        if status != 200:
            raise WitnessError(f"consistency proof: HTTP {status} {payload.get('message', '')}")
        return [base64.b64decode(p) for p in payload["proof"]]

    def post(self, note: str) -> None:
        status, payload = self._call("/audit/cosignatures", {"checkpoint": note})
        if status != 201:
            raise WitnessError(
                f"the server did not keep the cosignature: HTTP {status} "
                f"{payload.get('message', '')}"
            )


# ---------------------------------------------------------------- the state directory


def _key(directory: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key((directory / KEY_FILE).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise WitnessError(f"{directory / KEY_FILE} is not an Ed25519 key")
    return key


def load(directory: Path) -> State:
    path = directory / STATE_FILE
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise WitnessError(f"no witness state in {directory} ({type(exc).__name__})") from None
    try:
        state = State(**json.loads(text))
    except (ValueError, TypeError):
        state = None
    kinds = {"name": str, "log_fingerprint": str, "log_key": str, "size": int, "root": str,
             "note": str}  # fmt: skip
    if state is None or any(type(getattr(state, f)) is not k for f, k in kinds.items()):
        raise WitnessError(
            f"{path} is damaged: not a witness's state (restore it from a backup; a new "
            "state would cosign from scratch)"
        )
    return state


def save(directory: Path, state: State) -> None:
    atomic_write(directory / STATE_FILE, json.dumps(asdict(state), indent=1).encode(), 0o600)


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)


def init(directory: Path, name: str, log_fingerprint: str) -> cosignature.Witness:
    """A new witness: its key and an empty state; its verifier key is what the server is
    configured with (CITYGRID_AUDIT_WITNESSES). Refused before anything is written."""
    fingerprint = normal_fingerprint(log_fingerprint)
    key = Ed25519PrivateKey.generate()
    witness = cosignature.witness_of(name, key)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (directory / KEY_FILE).exists() or (directory / STATE_FILE).exists():
        raise WitnessError(f"{directory} already holds a witness")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(directory / KEY_FILE, pem, 0o600)
    save(directory, State(name, fingerprint))
    return witness


def public(directory: Path) -> cosignature.Witness:
    return cosignature.witness_of(load(directory).name, _key(directory))


def run(directory: Path, log: Log, now: int) -> State:
    """One round: check the log and cosign its newest checkpoint. Raises Refusal (recorded in
    refusals.log) when the log contradicts what the witness saw."""
    state = load(directory)
    key = _key(directory)
    try:
        state = check_key(state, log.key())
        latest = check_latest(state, log.latest())
        if latest.checkpoint.size == state.size:
            log.post(state.note)  # nothing new: make sure the server holds the cosignature
            return state
        proof = log.consistency(state.size, latest.checkpoint.size) if state.size else []
        check_consistency(state, latest, proof)
    except Refusal as exc:
        _append(directory / "refusals.log", f"{now} {exc}\n")
        raise
    state = cosign(state, latest, key, now)
    save(directory, state)  # remembered before the server hears of it
    _append(directory / "cosigned.log", state.note + "\n")
    log.post(state.note)
    return state
