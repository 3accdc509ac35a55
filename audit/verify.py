"""`citygrid audit verify`: recompute the Merkle tree from the stored entries and check
every signed checkpoint and their mutual consistency, then the change register's hash chain
(audit.register). The first problem found is named.

Witness cosignatures (audit.cosigned) bound what a server-side intruder can hide: an entry
count or newest checkpoint below the largest cosigned size is truncation, and the tree at a
cosigned size must have the cosigned root."""

from __future__ import annotations

import json
from typing import NamedTuple

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint, cosigned, entry, merkle, register, tree
from audit.cosignature import Cosigned, Witness


class Report(NamedTuple):
    entries: int
    checkpoints: int
    root: bytes
    problem: str | None
    changes: int = 0  # entries of the change register, checked after the audit log
    cosigned: Cosigned | None = None  # the largest checkpoint a configured witness cosigned

    @property
    def ok(self) -> bool:
        return self.problem is None


def _values(row: tuple, names: list[str]) -> dict:  # type: ignore[type-arg]
    values = dict(zip(names, row, strict=True))
    if isinstance(values.get("detail"), str):
        values["detail"] = json.loads(values["detail"])
    return values


def _truncation(size: int, newest_checkpoint: int, top: Cosigned | None) -> str | None:
    if top is None:
        return None
    cosigned_size = top.checkpoint.size
    if size < cosigned_size:
        return (
            f"TRUNCATED: only {size} entries remain below the size {cosigned_size} "
            f"that witness {top.witness} cosigned"
        )
    if newest_checkpoint < cosigned_size:
        return (
            f"TRUNCATED: the newest checkpoint is at size {newest_checkpoint}, below the size "
            f"{cosigned_size} that witness {top.witness} cosigned"
        )
    return None


def verify(
    conn: psycopg.Connection, public: Ed25519PublicKey, witnesses: list[Witness] | None = None
) -> Report:
    names = [*entry.FIELDS, "id", "leaf_index", "leaf_hash"]
    cosigs, bad = cosigned.stored(conn, witnesses or [])
    top = cosigs[0] if cosigs else None
    if bad:
        return Report(0, 0, merkle.EMPTY_ROOT, bad, cosigned=top)
    at_size: dict[int, list[Cosigned]] = {}
    for c in cosigs:
        at_size.setdefault(c.checkpoint.size, []).append(c)
    checkpoints = conn.execute(
        "SELECT size, root, note FROM audit_checkpoint ORDER BY size"
    ).fetchall()
    pending = list(checkpoints)
    leaves: list[bytes] = []
    size, frontier = 0, list[bytes]()
    previous: tuple[int, bytes] | None = None
    outside = conn.execute("SELECT min(id) FROM audit_entry WHERE leaf_index IS NULL").fetchone()
    if outside and outside[0] is not None:
        return Report(0, 0, merkle.EMPTY_ROOT, f"entry {outside[0]} is not in the tree")

    def check_checkpoint(cp_size: int, cp_root: bytes, note: str) -> str | None:
        nonlocal previous
        try:
            signed = checkpoint.verify(note, public)
        except checkpoint.CheckpointError as exc:
            return f"checkpoint at size {cp_size}: {exc}"
        if signed.size != cp_size or signed.root != bytes(cp_root):
            return f"checkpoint at size {cp_size}: stored size or root differs from its note"
        if tree.root(frontier) != signed.root:
            return (
                f"checkpoint at size {cp_size} no longer matches the entries: "
                f"the log was changed at or before leaf {cp_size - 1}"
            )
        if previous is not None:
            old_size, old_root = previous
            proof = merkle.consistency_proof(leaves, old_size)
            try:
                merkle.verify_consistency(old_size, cp_size, old_root, signed.root, proof)
            except merkle.ProofError as exc:
                return f"checkpoints {old_size} → {cp_size} are not consistent: {exc}"
        previous = (cp_size, signed.root)
        return None

    with conn.cursor(name="audit_verify") as cur:
        cur.itersize = 5000
        cur.execute(f"SELECT {', '.join(names)} FROM audit_entry ORDER BY leaf_index")
        for row in cur:
            values = _values(row, names)
            if values["leaf_index"] != size:
                return Report(
                    size,
                    0,
                    tree.root(frontier),
                    f"leaf {size} is missing (next stored leaf is {values['leaf_index']})",
                )
            recomputed = entry.leaf(values)
            if recomputed != bytes(values["leaf_hash"]):
                return Report(
                    size,
                    0,
                    tree.root(frontier),
                    f"entry {values['id']} (leaf {size}) was altered after it was written",
                )
            leaves.append(recomputed)
            size, frontier = tree.append(size, frontier, recomputed)
            for c in at_size.get(size, []):
                if c.checkpoint.root != tree.root(frontier):
                    return Report(
                        size,
                        len(checkpoints),
                        tree.root(frontier),
                        f"the tree of size {size} differs from the one witness {c.witness} "
                        f"cosigned: the log was rewritten at or before leaf {size - 1}",
                        cosigned=top,
                    )
            while pending and pending[0][0] == size:
                cp_size, cp_root, note = pending.pop(0)
                problem = check_checkpoint(cp_size, cp_root, note)
                if problem:
                    root = tree.root(frontier)
                    return Report(size, len(checkpoints), root, problem, cosigned=top)
    newest = checkpoints[-1][0] if checkpoints else 0
    truncated = _truncation(size, newest, top)
    if truncated:
        return Report(size, len(checkpoints), tree.root(frontier), truncated, cosigned=top)
    if pending:
        cp_size = pending[0][0]
        return Report(
            size,
            len(checkpoints),
            tree.root(frontier),
            f"checkpoint at size {cp_size} no longer matches: only {size} entries remain",
            cosigned=top,
        )
    state = conn.execute("SELECT size, frontier FROM audit_tree").fetchone()
    if state and (int(state[0]) != size or [bytes(h) for h in state[1]] != frontier):
        return Report(
            size,
            len(checkpoints),
            tree.root(frontier),
            f"the tree state (size {state[0]}) differs from the {size} entries",
            cosigned=top,
        )
    changes, problem = register.verify(conn)
    return Report(size, len(checkpoints), tree.root(frontier), problem, changes, top)
