"""The server's store of witness cosignatures (table audit_cosignature, migration 0015).

A cosignature is its own proof: it is accepted only when it verifies against a configured
witness key, the note also carries the log's own signature, and the log holds that very
checkpoint. `citygrid audit verify` reads them back, checking each again.
"""

from __future__ import annotations

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint, cosignature
from audit.cosignature import CosignatureError, Cosigned, Witness
from mapserver.errors import Conflict, InvalidInput

NOTE_MAX = 4096


def accept(
    conn: psycopg.Connection, note: str, witnesses: list[Witness], log_key: Ed25519PublicKey
) -> list[Cosigned]:
    """Verify and store the cosignatures on `note` by configured witnesses; returns them."""
    if len(note) > NOTE_MAX:
        raise InvalidInput(f"a cosigned checkpoint is at most {NOTE_MAX} characters")
    try:
        found = cosignature.verify_any(note, witnesses)
        signed = checkpoint.verify(note, log_key)
    except (CosignatureError, checkpoint.CheckpointError) as exc:
        raise InvalidInput(f"cosignature refused: {exc}") from None
    if not found:
        raise InvalidInput("cosignature refused: no cosignature by a configured witness")
    row = conn.execute(
        "SELECT root FROM audit_checkpoint WHERE size = %s", (signed.size,)
    ).fetchone()
    if row is None or bytes(row[0]) != signed.root:
        raise Conflict(f"the log holds no checkpoint of size {signed.size} with this root")
    for c in found:
        conn.execute(
            "INSERT INTO audit_cosignature (witness, size, root, time, body, line)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (c.witness, c.checkpoint.size, c.checkpoint.root, c.time, c.body, c.line),
        )
    return found


def stored(conn: psycopg.Connection, witnesses: list[Witness]) -> tuple[list[Cosigned], str | None]:
    """The stored cosignatures of configured witnesses, largest size first, each verified
    again; and the first stored row that no longer verifies (None if all do)."""
    by_name = {w.name: w for w in witnesses}
    rows = conn.execute(
        "SELECT id, witness, size, root, body, line FROM audit_cosignature ORDER BY size DESC, id"
    ).fetchall()
    out: list[Cosigned] = []
    for row_id, name, size, root, body, line in rows:
        witness = by_name.get(name)
        if witness is None:
            continue  # a witness no longer trusted proves nothing either way
        try:
            c = cosignature.verify(f"{body}\n{line}\n", witness)
        except CosignatureError as exc:
            return out, f"cosignature {row_id} of {name}: {exc}"
        if c.checkpoint.size != size or c.checkpoint.root != bytes(root):
            return out, f"cosignature {row_id} of {name}: stored size or root differs from it"
        out.append(c)
    return out, None
