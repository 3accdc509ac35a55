"""`citygrid audit verify`: recompute the Merkle tree and its tiles (audit.tiles) from the
stored entries in one linear pass and check every stored tile and signed checkpoint against
them, then the change register's hash chain (audit.register). The first problem found is
named. Checkpoints whose roots all match the one recomputed tree are consistent with each
other by construction, so no consistency proof is needed between them.

Witness cosignatures (audit.cosigned) bound what a server-side intruder can hide: an entry
count or newest checkpoint below the largest cosigned size is truncation, and the tree at a
cosigned size must have the cosigned root."""

from __future__ import annotations

import json
from typing import NamedTuple

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint, cosigned, entry, merkle, register, tiles, tree
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
    if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # One snapshot for the whole check: the sequencer may integrate entries meanwhile.
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
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
    size, frontier = 0, list[bytes]()
    builder = tiles.Builder()
    upper = {  # tiles above level 0: one in 256 of them
        (int(level), int(idx)): (bytes(h), bytes(r))
        for level, idx, h, r in conn.execute(
            "SELECT level, idx, hashes, root FROM audit_tile WHERE level > 0"
        ).fetchall()
    }
    outside = conn.execute("SELECT min(id) FROM audit_entry WHERE leaf_index IS NULL").fetchone()
    if outside and outside[0] is not None:
        return Report(0, 0, merkle.EMPTY_ROOT, f"entry {outside[0]} is not in the tree")

    def check_checkpoint(cp_size: int, cp_root: bytes, note: str) -> str | None:
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
        return None

    def check_tile(made: tiles.Tile, stored: tuple[bytes, bytes] | None) -> str | None:
        name = tiles.path(tiles.TileId(made.level, made.n))
        if stored is None:
            return f"{name} is missing"
        if stored != (made.hashes, made.root):
            return f"{name} differs from the tile recomputed from the entries"
        return None

    with (
        conn.cursor(name="audit_verify") as cur,
        conn.cursor(name="audit_verify_tiles") as tile_cur,
    ):
        cur.itersize = 5000
        cur.execute(f"SELECT {', '.join(names)} FROM audit_entry ORDER BY leaf_index")
        tile_cur.itersize = 100
        tile_cur.execute("SELECT idx, hashes, root FROM audit_tile WHERE level = 0 ORDER BY idx")
        level0 = iter(tile_cur)
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
            size, frontier = tree.append(size, frontier, recomputed)
            for made in builder.add(recomputed):
                if made.level == 0:
                    got = next(level0, None)
                    stored = (bytes(got[1]), bytes(got[2])) if got and got[0] == made.n else None
                else:
                    stored = upper.pop((made.level, made.n), None)
                problem = check_tile(made, stored)
                if problem:
                    return Report(size, 0, tree.root(frontier), problem, cosigned=top)
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
        beyond = next(level0, None)
    extra = [(0, int(beyond[0]))] if beyond else sorted(upper)
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
    if extra:
        name = tiles.path(tiles.TileId(*extra[0]))
        return Report(
            size,
            len(checkpoints),
            tree.root(frontier),
            f"{name} is stored but the {size} entries make no such full tile",
            cosigned=top,
        )
    changes, problem = register.verify(conn)
    return Report(size, len(checkpoints), tree.root(frontier), problem, changes, top)
