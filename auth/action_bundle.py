"""Building the offline bundle of a stored signed action (auth.signed_action.verify_bundle).

The bundle carries the act's audit entry (found by the SHA-256 of its signature, which the
entry names), the entry's inclusion proof read from the tiles (O(log n) rows), the smallest
checkpoint that covers it (cosigned by a configured witness where one has), and two CRLs
from crl_history: the one current when the log took the act in, and the newest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from audit import logged, tiles
from audit.cosignature import Witness
from audit.entry import FIELDS
from audit.review import tile_reader
from auth import signed_action
from auth.ca_store import CaStore
from mapserver.errors import Conflict


class NotYetLogged(Conflict):
    """The act is stored but the log's evidence for it is not complete yet."""

    code = "not_yet_logged"


_not_yet = (
    "the act's audit entry is not under a signed checkpoint yet (one follows within "
    "seconds while entries arrive); try again shortly"
)


def for_action(
    conn: psycopg.Connection,
    pki_dir: Path,
    witnesses: list[Witness],
    data: bytes,
    signature: bytes,
    cert_pem: str,
    pending_ok: bool = False,
) -> dict[str, Any]:
    """The bundle of one stored act; raises NotYetLogged while its entry or a checkpoint
    covering it is missing (checkpoints follow within seconds while entries arrive). With
    `pending_ok` (pages that show the signatures at once) the bundle then says so instead,
    and an offline verifier refuses it, naming why."""
    try:
        return _complete(conn, pki_dir, witnesses, data, signature, cert_pem)
    except NotYetLogged as exc:
        if not pending_ok:
            raise
        doc = signed_action.bundle(
            data, signature, cert_pem, crls(conn, pki_dir, dt.datetime.now(dt.UTC)), {}
        )
        doc.update(log=None, pending=exc.message)
        return doc


def _complete(
    conn: psycopg.Connection,
    pki_dir: Path,
    witnesses: list[Witness],
    data: bytes,
    signature: bytes,
    cert_pem: str,
) -> dict[str, Any]:
    sha = hashlib.sha256(signature).hexdigest()
    log, at = entry_evidence(
        conn,
        witnesses,
        "detail ? 'signature_sha256' AND detail ->> 'signature_sha256' = %s",
        (sha,),
    )
    return signed_action.bundle(data, signature, cert_pem, crls(conn, pki_dir, at), log)


def entry_evidence(
    conn: psycopg.Connection,
    witnesses: list[Witness],
    where: str,
    params: tuple[Any, ...],
    newest: bool = False,
) -> tuple[dict[str, Any], dt.datetime]:
    """The log evidence (`audit.logged.evidence`) of the first (`newest`: the last) logged
    entry done (`outcome` ok) that `where` (fixed SQL, with `params`) picks under a signed
    checkpoint, and its time; NotYetLogged while there is none."""
    covered = conn.execute("SELECT coalesce(max(size), 0) FROM audit_checkpoint").fetchone()
    row = conn.execute(
        f"SELECT leaf_index, {', '.join(FIELDS)} FROM audit_entry"  # noqa: S608 - fixed names
        f" WHERE {where} AND outcome = 'ok' AND leaf_index IS NOT NULL"
        f" AND leaf_index < %s ORDER BY leaf_index {'DESC' if newest else ''} LIMIT 1",
        (*params, covered[0] if covered else 0),
    ).fetchone()
    if row is None:
        raise NotYetLogged(_not_yet)
    index = int(row[0])
    values = dict(zip(FIELDS, row[1:], strict=True))
    if isinstance(values["detail"], str):
        values["detail"] = json.loads(values["detail"])
    size, note = _checkpoint(conn, index, witnesses)
    plan = tiles.needed(lambda r: tiles.inclusion_proof(index, size, r))
    proof = tiles.inclusion_proof(index, size, tile_reader(conn, plan))
    return logged.evidence(values, index, size, proof, note), values["at"]


def _checkpoint(conn: psycopg.Connection, index: int, witnesses: list[Witness]) -> tuple[int, str]:
    """The smallest checkpoint covering `index` that a configured witness cosigned, with
    their cosignature lines; else the smallest covering checkpoint."""
    names = [w.name for w in witnesses]
    row = None
    if names:
        row = conn.execute(
            "SELECT c.size, c.note FROM audit_checkpoint c WHERE c.size > %s AND EXISTS"
            " (SELECT 1 FROM audit_cosignature s WHERE s.size = c.size AND s.root = c.root"
            "  AND s.witness = ANY(%s)) ORDER BY c.size LIMIT 1",
            (index, names),
        ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT size, note FROM audit_checkpoint WHERE size > %s ORDER BY size LIMIT 1",
            (index,),
        ).fetchone()
    if row is None:
        raise NotYetLogged(_not_yet)
    size, note = int(row[0]), str(row[1])
    lines = conn.execute(
        "SELECT line FROM audit_cosignature WHERE size = %s AND witness = ANY(%s) ORDER BY id",
        (size, names),
    ).fetchall()
    for (line,) in lines:
        if line not in note:
            note += f"{line}\n"  # the stored line verified when it was accepted
    return size, note


def crls(conn: psycopg.Connection, pki_dir: Path, at: dt.datetime) -> list[str]:
    """The CRL current at `at` and the newest one (PEM), from crl_history and the
    published file; fewer when there are none (the verifier then refuses, naming why)."""
    known: dict[int, tuple[dt.datetime, dt.datetime, str]] = {}
    for number, this_update, next_update, pem in conn.execute(
        "(SELECT number, this_update, next_update, pem FROM crl_history"
        "  WHERE this_update <= %s AND next_update >= %s ORDER BY number DESC LIMIT 1)"
        " UNION ALL (SELECT number, this_update, next_update, pem FROM crl_history"
        "  ORDER BY number DESC LIMIT 1)",
        (at, at),
    ).fetchall():
        known[int(number)] = (this_update, next_update, str(pem))
    published = CaStore(pki_dir).crl()
    if published is not None and published.next_update_utc is not None:
        number = published.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        pem = published.public_bytes(serialization.Encoding.PEM).decode("ascii")
        known.setdefault(int(number), (published.last_update_utc, published.next_update_utc, pem))
    current = [n for n, (lo, hi, _) in known.items() if lo <= at <= hi]
    chosen = {max(current)} if current else set()
    if known:
        chosen.add(max(known))
    return [known[n][2] for n in sorted(chosen)]
