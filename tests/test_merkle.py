"""RFC 9162 Merkle proofs against the transparency-dev/merkle vectors embedded in
tests/data/merkle_vectors.json, and proofs we generate ourselves."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from audit import merkle

VECTORS = json.loads((Path(__file__).parent / "data" / "merkle_vectors.json").read_text())


def _b(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(items: list[str] | None) -> list[bytes]:
    return [_b(p) for p in items or []]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: c["file"])
def test_inclusion_vectors(case: dict) -> None:  # type: ignore[type-arg]
    args = (
        _b(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        _proof(case["proof"]),
        _b(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: c["file"])
def test_consistency_vectors(case: dict) -> None:  # type: ignore[type-arg]
    args = (
        case["size1"],
        case["size2"],
        _b(case["root1"]),
        _b(case["root2"]),
        _proof(case["proof"]),
    )
    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_vectors_include_error_cases() -> None:
    for kind in ("inclusion", "consistency"):
        wants = {c["wantErr"] for c in VECTORS[kind]}
        assert wants == {True, False}
        assert len(VECTORS[kind]) > 50


LEAVES = [merkle.leaf_hash(f"entry {i}".encode()) for i in range(40)]


def test_known_roots() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT
    # RFC 6962 test leaves as used by transparency-dev: root of the 8 standard leaves.
    inputs = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    got = merkle.root([merkle.leaf_hash(x) for x in inputs])
    assert got.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 16, 17, 40])
def test_generated_proofs_verify(size: int) -> None:
    leaves = LEAVES[:size]
    r = merkle.root(leaves)
    for i in range(size):
        merkle.verify_inclusion(leaves[i], i, size, merkle.inclusion_proof(leaves, i), r)
    for m in range(1, size + 1):
        old = merkle.root(leaves[:m])
        merkle.verify_consistency(m, size, old, r, merkle.consistency_proof(leaves, m))


def test_dropped_entry_breaks_consistency() -> None:
    before = LEAVES[:20]
    after_forged = LEAVES[:7] + LEAVES[8:30]  # entry 7 silently removed
    proof = merkle.consistency_proof(after_forged, 20)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(
            20, len(after_forged), merkle.root(before), merkle.root(after_forged), proof
        )
