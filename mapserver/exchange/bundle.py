"""The exchange bundle and its offline check. Pure: no I/O.

A bundle carries one message (a forwarded case, a case's result, component updates) as
`content`, and the signed actions behind it, each with its audit entry, the entry's
inclusion proof and the signed checkpoint of the sending install's log (the shape of
`audit.logged.evidence`), and the CRL of the sender's CA. The act that made the message
(the last action) was logged with `exchange: {source_id, seq, kind, to, content_sha256}` in
its entry, so the sender's log key vouches for the message's number, its addressee and
every byte of its content, and a person's signature for the act. The receiver pins the
sender's CA and log key (settings), never taking either from a bundle; the time of each act
is the log's, as issue #10 asks of all evidence.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from typing import Any, NamedTuple

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint, entry, merkle
from auth.signed_action import SignatureRefused, Verified, check, parse_envelope
from mapserver.errors import CityGridError

FORMAT = "citygrid-exchange/1"
# exchange.withdrawn: a message withdrawn by a signed act before the peer took it in, in its
# place under its number (mapserver.exchange.outbox.withdraw); nothing is applied for it.
KINDS = ("case.forward", "case.result", "component.update", "exchange.withdrawn")
ENTRY_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
# What a bundle, each of its actions and each action's log evidence hold; nothing else, so
# the bundle kept as evidence (exchange_inbox.bundle) holds nothing its checks did not cover.
FIELDS = frozenset({"format", "source_id", "seq", "kind", "from", "to", "content", "actions"})
ACTION_FIELDS = frozenset({"payload", "signature", "certificate", "crl", "log"})
LOG_FIELDS = frozenset({"entry", "leaf_index", "tree_size", "proof", "checkpoint"})
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # neither text nor jsonb can hold one


class BundleRefused(CityGridError):
    """The bundle does not prove what it claims; the reason names the first failing check."""

    status = 400
    code = "bundle_refused"


class PeerTrust(NamedTuple):
    """What the receiver pins of its peer (from its settings, never from a bundle)."""

    ca: x509.Certificate
    log_key: Ed25519PublicKey


class Message(NamedTuple):
    source_id: str
    seq: int
    kind: str
    to: str
    content: dict[str, Any]
    actions: list[Verified]  # oldest first; the last one made the message
    logged_at: dt.datetime  # the log's time of that act


def content_sha256(content: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(content)).hexdigest()


def _unstorable(value: Any) -> bool:
    """Whether a NUL or a lone surrogate is in any text of a parsed JSON value, names included."""
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is not None
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


def note(source_id: str, seq: int, kind: str, to: str, content: dict[str, Any]) -> dict[str, Any]:
    """What the act's audit entry says of the message it made."""
    return {
        "source_id": source_id,
        "seq": seq,
        "kind": kind,
        "to": to,
        "content_sha256": content_sha256(content),
    }


def build(
    source_id: str,
    seq: int,
    kind: str,
    sender: str,
    to: str,
    content: dict[str, Any],
    actions: list[dict[str, Any]],
) -> dict[str, Any]:
    """`actions`: each {payload, signature, certificate, crl, log} (see module docstring)."""
    return {
        "format": FORMAT,
        "source_id": source_id,
        "seq": seq,
        "kind": kind,
        "from": sender,
        "to": to,
        "content": content,
        "actions": actions,
    }


def _logged(doc: Any, key: Ed25519PublicKey, i: int) -> tuple[dict[str, Any], dt.datetime]:
    """The audit entry of action i, proven to be in the sender's checkpointed log."""
    if not isinstance(doc, dict):
        raise BundleRefused(f"action {i}: no audit evidence")
    if set(doc) - LOG_FIELDS:
        raise BundleRefused(f"action {i}: unknown audit evidence fields")
    values, index, size = doc.get("entry"), doc.get("leaf_index"), doc.get("tree_size")
    proof, signed_note = doc.get("proof"), doc.get("checkpoint")
    if not isinstance(values, dict) or set(values) != set(entry.FIELDS):
        raise BundleRefused(f"action {i}: the audit entry is malformed")
    if not (isinstance(index, int) and isinstance(size, int) and 0 <= index < size):
        raise BundleRefused(f"action {i}: leaf_index and tree_size are malformed")
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        raise BundleRefused(f"action {i}: the inclusion proof is malformed")
    try:
        signed = checkpoint.verify(str(signed_note), key)
    except (checkpoint.CheckpointError, ValueError):
        raise BundleRefused(
            f"action {i}: the checkpoint is not signed by the peer's log key"
        ) from None
    if signed.size != size:
        raise BundleRefused(f"action {i}: the checkpoint is not of tree_size")
    try:
        hashes = [base64.b64decode(p, validate=True) for p in proof]
    except (binascii.Error, ValueError):
        raise BundleRefused(f"action {i}: the inclusion proof is not base64") from None
    try:
        leaf = merkle.leaf_hash(rfc8785.dumps(values))
    except rfc8785.CanonicalizationError:  # a number out of its range
        raise BundleRefused(f"action {i}: the audit entry has no canonical form") from None
    try:
        merkle.verify_inclusion(leaf, index, size, hashes, signed.root)
    except merkle.ProofError:
        raise BundleRefused(
            f"action {i}: the audit entry is not in the peer's checkpointed log (altered?)"
        ) from None
    try:
        at = dt.datetime.strptime(str(values["at"]), ENTRY_TIME).replace(tzinfo=dt.UTC)
    except ValueError:
        raise BundleRefused(f"action {i}: the entry's time is unreadable") from None
    return values, at


def _revoked(pem: Any, cert: x509.Certificate, ca: x509.Certificate, at: dt.datetime) -> bool:
    """Whether the bundled CRL (signed by the pinned CA) lists `cert` as revoked by `at`."""
    if not isinstance(pem, str):
        raise BundleRefused("no CRL of the peer's CA: revocation cannot be judged")
    try:
        crl = x509.load_pem_x509_crl(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise BundleRefused("the bundled CRL is unreadable") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise BundleRefused("the bundled CRL is not signed by the peer's CA")
    listed = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    return listed is not None and listed.revocation_date_utc <= at


def verify(doc: Any, trust: PeerTrust, me: str, sender: str) -> Message:
    """Check a bundle from `sender` addressed to `me`; raises BundleRefused naming what fails."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleRefused(f"not a CityGrid exchange bundle ({FORMAT})")
    if _unstorable(doc):
        raise BundleRefused("the bundle holds a NUL character or a lone surrogate")
    if set(doc) - FIELDS:
        raise BundleRefused("unknown bundle fields: " + ", ".join(sorted(set(doc) - FIELDS))[:200])
    source_id, seq, kind = doc.get("source_id"), doc.get("seq"), doc.get("kind")
    content, actions, to = doc.get("content"), doc.get("actions"), doc.get("to")
    if not isinstance(source_id, str) or not 0 < len(source_id) <= 200:
        raise BundleRefused("source_id must be text")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0:
        raise BundleRefused("seq must be a positive number")
    if kind not in KINDS:
        raise BundleRefused("kind must be one of " + ", ".join(KINDS))
    if not isinstance(content, dict) or not isinstance(actions, list) or not actions:
        raise BundleRefused("a bundle holds content and at least one signed action")
    if to != me:
        raise BundleRefused(f"the bundle is addressed to {repr(to)[:50]}, not to {me!r}")
    if doc.get("from") != sender:
        raise BundleRefused(f"the bundle is not from {sender!r}, the peer")
    verified: list[Verified] = []
    values: dict[str, Any] = {}
    at = dt.datetime.min.replace(tzinfo=dt.UTC)
    for i, action in enumerate(actions, start=1):
        if not isinstance(action, dict):
            raise BundleRefused(f"action {i}: not a signed action")
        if set(action) - ACTION_FIELDS:
            raise BundleRefused(f"action {i}: unknown signed action fields")
        try:
            data, signature, cert = parse_envelope(action)
        except SignatureRefused as exc:
            raise BundleRefused(f"action {i}: {exc.message}") from None
        values, at = _logged(action.get("log"), trust.log_key, i)
        detail = values.get("detail")
        if (
            not isinstance(detail, dict)
            or detail.get("signature_sha256") != hashlib.sha256(signature).hexdigest()
        ):
            raise BundleRefused(f"action {i}: the audit entry does not name this signature")
        if values.get("outcome") != "ok":
            raise BundleRefused(f"action {i}: the peer's log recorded the act as not done")
        revoked = _revoked(action.get("crl"), cert, trust.ca, at)
        try:
            verified.append(check(data, signature, cert, trust.ca, at, revoked))
        except SignatureRefused as exc:
            raise BundleRefused(f"action {i}: {exc.message} (at the log's time)") from None
    said = values.get("detail", {}).get("exchange")
    try:
        told = note(source_id, seq, str(kind), me, content)
    except rfc8785.CanonicalizationError:  # a number out of its range: no log recorded it
        raise BundleRefused("the content has no canonical (RFC 8785) form") from None
    if said != told:
        raise BundleRefused(
            "the message (source_id, seq, kind, addressee or content) is not what the peer's "
            "log recorded for the act"
        )
    return Message(source_id, seq, str(kind), me, content, verified, at)
