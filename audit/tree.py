"""The right edge of an append-only Merkle tree (a compact range): O(log n) state that
absorbs leaves one by one and yields the RFC 9162 root of everything absorbed. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from audit.merkle import EMPTY_ROOT, node_hash


def append(size: int, frontier: list[bytes], leaf: bytes) -> tuple[int, list[bytes]]:
    """Add one leaf hash. `frontier` holds the roots of the perfect subtrees that make up
    the tree, largest (leftmost) first; returns the new (size, frontier)."""
    frontier = [*frontier, leaf]
    n = size
    while n & 1:  # merge equal-sized subtrees, as a binary counter carries
        right = frontier.pop()
        left = frontier.pop()
        frontier.append(node_hash(left, right))
        n >>= 1
    return size + 1, frontier


def extend(size: int, frontier: list[bytes], leaves: Iterable[bytes]) -> tuple[int, list[bytes]]:
    for leaf in leaves:
        size, frontier = append(size, frontier, leaf)
    return size, frontier


def root(frontier: list[bytes]) -> bytes:
    """RFC 9162 root of the tree whose right edge is `frontier`."""
    if not frontier:
        return EMPTY_ROOT
    acc = frontier[-1]
    for left in reversed(frontier[:-1]):
        acc = node_hash(left, acc)
    return acc
