"""Proof that the audit log took an entry in, and when: the log's time of an act. Pure.

An exported act carries its audit entry, the entry's inclusion proof and a signed checkpoint
(cosigned by witnesses where they have). Offline, with only the pinned log key (and the
witnesses' keys), the entry's time is then the log's: the checkpoint signature commits to
every byte of the entry, its time included. A witness's cosignature bounds that time from
above with a clock the server does not control: an entry cannot claim a time later than
the moment a witness had already seen it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint, cosignature, entry, jcs, merkle
from audit.cosignature import CosignatureError, Cosigned, Witness

FORMAT_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
# A witness's clock and the server's may differ a little; never by more than this.
WITNESS_SKEW = dt.timedelta(minutes=5)


class NotLogged(ValueError):
    """The evidence does not show that the log holds this entry."""


class Logged(NamedTuple):
    at: dt.datetime  # the entry's time: the log's time of the act
    leaf_index: int
    tree_size: int
    entry: dict[str, Any]
    cosigned: list[Cosigned]  # by the pinned witnesses, each verified

    @property
    def witnessed_by(self) -> dt.datetime | None:
        """The earliest time a pinned witness had seen a tree holding the entry."""
        if not self.cosigned:
            return None
        return dt.datetime.fromtimestamp(min(c.time for c in self.cosigned), dt.UTC)


def evidence(
    values: dict[str, Any], index: int, size: int, proof: list[bytes], note: str
) -> dict[str, Any]:
    """The JSON form of the evidence for an entry (stored `values`) at `index`."""
    return {
        "entry": _json(values),
        "leaf_index": index,
        "tree_size": size,
        "proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": note,
    }


def _json(values: dict[str, Any]) -> dict[str, Any]:
    import json

    doc: dict[str, Any] = json.loads(entry.canonical(values))
    return doc


def verify(doc: Any, log_key: Ed25519PublicKey, witnesses: list[Witness]) -> Logged:
    """Check the evidence against the pinned log key; raises NotLogged naming what fails."""
    if not isinstance(doc, dict):
        raise NotLogged("no audit entry, inclusion proof and checkpoint")
    values, index, size = doc.get("entry"), doc.get("leaf_index"), doc.get("tree_size")
    proof, note = doc.get("proof"), doc.get("checkpoint")
    if not isinstance(values, dict) or set(values) != set(entry.FIELDS):
        raise NotLogged(f"the audit entry must have exactly {', '.join(entry.FIELDS)}")
    if not (isinstance(index, int) and isinstance(size, int) and 0 <= index < size):
        raise NotLogged("leaf_index and tree_size must be integers, 0 <= leaf_index < tree_size")
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        raise NotLogged("the inclusion proof must be a list of base64 hashes")
    if not isinstance(note, str):
        raise NotLogged("the checkpoint must be a signed note")
    try:
        signed = checkpoint.verify(note, log_key)
    except (checkpoint.CheckpointError, ValueError) as exc:
        raise NotLogged(f"checkpoint refused against the pinned log key: {exc}") from None
    if signed.origin != checkpoint.ORIGIN or signed.size != size:
        raise NotLogged("the checkpoint is not of this log or not of tree_size")
    try:
        hashes = [base64.b64decode(p, validate=True) for p in proof]
    except (binascii.Error, ValueError):
        raise NotLogged("the inclusion proof is not base64") from None
    leaf = merkle.leaf_hash(jcs.dumps(values))
    try:
        merkle.verify_inclusion(leaf, index, size, hashes, signed.root)
    except merkle.ProofError as exc:
        raise NotLogged(f"the entry is not in the checkpointed tree: {exc}") from None
    try:
        at = dt.datetime.strptime(str(values["at"]), FORMAT_TIME).replace(tzinfo=dt.UTC)
    except ValueError:
        raise NotLogged("the entry's time is unreadable") from None
    try:
        cosigned = cosignature.verify_any(note, witnesses)
    except CosignatureError as exc:
        raise NotLogged(f"checkpoint cosignature refused: {exc}") from None
    logged = Logged(at, index, size, values, cosigned)
    bound = logged.witnessed_by
    if bound is not None and at > bound + WITNESS_SKEW:
        raise NotLogged(
            f"the entry claims {at:%Y-%m-%dT%H:%M:%SZ}, after a witness had already seen it "
            f"({bound:%Y-%m-%dT%H:%M:%SZ}): the log's time is false"
        )
    return logged
