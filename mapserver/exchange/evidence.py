"""An act's evidence as the exchange bundle carries it: the signed action's bytes, the CA's
current CRL, and its audit entry with the inclusion proof and signed checkpoint (the shape
of `audit.logged.evidence`). None while the log has not taken the entry in yet."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import psycopg

from audit import entry, review
from auth.ca_store import CaStore
from mapserver.errors import NotFound
from mapserver.settings import Settings

_ENTRY = ", ".join(entry.FIELDS)


class Pending(Exception):
    """The act's audit entry is not yet in the log or not yet under a checkpoint."""


def of_action(conn: psycopg.Connection, settings: Settings, action_id: int) -> dict[str, Any]:
    """The bundle form of signed action `action_id`; raises Pending until it can be proven."""
    row = conn.execute(
        "SELECT account, payload, signature, certificate, signature_sha256, at"
        " FROM signed_action WHERE id = %s",
        (action_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no signed action {action_id}")
    _, payload, signature, certificate, sha, at = row
    logged = conn.execute(
        f"SELECT {_ENTRY}, leaf_index FROM audit_entry"  # noqa: S608 - fixed names
        " WHERE detail ? 'signature_sha256' AND detail ->> 'signature_sha256' = %s"
        " AND at >= %s AND outcome = 'ok' ORDER BY leaf_index LIMIT 1",
        (sha, at - dt.timedelta(minutes=1)),
    ).fetchone()
    if logged is None:
        raise Pending(f"the audit entry of signed action {action_id} is not in the log yet")
    values = dict(zip(entry.FIELDS, logged[:-1], strict=True))
    try:
        proof = review.inclusion(conn, int(logged[-1]))
    except NotFound:
        raise Pending(
            f"no checkpoint covers the audit entry of signed action {action_id}"
        ) from None
    crl = CaStore(settings.pki_dir).crl_path
    return {
        "payload": base64.b64encode(bytes(payload)).decode(),
        "signature": base64.b64encode(bytes(signature)).decode(),
        "certificate": certificate,
        "crl": crl.read_text("ascii") if crl.exists() else None,
        "log": {
            "entry": json.loads(entry.canonical(values)),
            "leaf_index": proof["leaf_index"],
            "tree_size": proof["tree_size"],
            "proof": proof["proof"],
            "checkpoint": proof["checkpoint"],
        },
    }
