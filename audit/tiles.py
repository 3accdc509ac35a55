"""The Merkle tree's interior nodes as C2SP tlog-tiles, and proofs read from them. Pure.

A tile at level L holds up to 256 consecutive hashes of the tree at height 8·L: level 0
holds leaf hashes, a hash at level L+1 is the root of a full tile at level L. Tile N of
level L is full once the tree has (N+1)·256 hashes at that level; before that it is a
partial tile `.p/W` of its first W hashes. Any subtree hash of height h is one hash of a
tile (h a multiple of 8) or the root of up to 128 consecutive hashes of one tile, so an
RFC 9162 proof over n leaves reads a few tiles per level: O(log n) tiles.

Paths follow https://c2sp.org/tlog-tiles: `tile/<L>/<N>[.p/<W>]` and, for entry bundles,
`tile/entries/<N>[.p/<W>]`, N written as 3-digit groups, all but the last prefixed `x`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from audit import merkle

HEIGHT = 8
WIDTH = 1 << HEIGHT  # hashes in a full tile
HASH = 32
ENTRIES = -1  # the level of entry bundles in a TileId


class TileError(ValueError):
    """A tile path that is not canonical, or a tile whose contents do not fit the tree."""


class TileId(NamedTuple):
    level: int  # ENTRIES for an entry bundle
    n: int  # the tile's index within its level
    width: int = WIDTH  # < WIDTH for a partial tile

    @property
    def path(self) -> str:
        return path(self)


class Tile(NamedTuple):
    """A full tile: its 256 hashes and their Merkle root (the tile's hash one level up)."""

    level: int
    n: int
    hashes: bytes
    root: bytes


# read_tile(level, index, width) -> the tile's first `width` hashes (WIDTH: the full tile)
ReadTile = Callable[[int, int, int], Sequence[bytes]]
# earlier(level, start, stop) -> hashes [start, stop) of a level, from before an append
Earlier = Callable[[int, int, int], Sequence[bytes]]


# ------------------------------------------------------------------------------- paths

_PATH = re.compile(r"^tile/(entries|[0-9]{1,2})/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([0-9]{1,3}))?\Z")


def encode_index(n: int) -> str:
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def path(tile: TileId) -> str:
    level = "entries" if tile.level == ENTRIES else str(tile.level)
    partial = f".p/{tile.width}" if tile.width < WIDTH else ""
    return f"tile/{level}/{encode_index(tile.n)}{partial}"


def parse(text: str) -> TileId:
    """The tile a path names; only the one canonical spelling of each tile is accepted."""
    match = _PATH.fullmatch(text)
    if not match:
        raise TileError("not a tile path: tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>]")
    level = ENTRIES if match[1] == "entries" else int(match[1])
    index = int(match[2].replace("x", "").replace("/", ""))
    width = int(match[3]) if match[3] else WIDTH
    if match[3] and not 0 < width < WIDTH:
        raise TileError("a partial tile has a width of 1 to 255")
    if level > 63 or (match[1] != "entries" and match[1] != str(level)):
        raise TileError("the level is a decimal number 0..63")
    tile = TileId(level, index, width)
    if path(tile) != text:
        raise TileError("not the canonical path of that tile")
    return tile


def width_at(level: int, index: int, size: int) -> int:
    """The width of tile `index` at `level` in a tree of `size` leaves (0: no such tile)."""
    count = size >> (HEIGHT * level)  # hashes at this level
    return max(0, min(WIDTH, count - index * WIDTH))


def tiles_for(size: int) -> list[TileId]:
    """Every tile (full or partial) of the tree of `size` leaves, level by level."""
    out = []
    level = 0
    while size >> (HEIGHT * level):
        count = size >> (HEIGHT * level)
        out += [TileId(level, i, width_at(level, i, size)) for i in range((count + 255) // WIDTH)]
        level += 1
    return out


# --------------------------------------------------------------------- writing tiles


def advance(size: int, leaves: Sequence[bytes], earlier: Earlier) -> list[Tile]:
    """The full tiles that appending `leaves` to a tree of `size` leaves completes, lowest
    level first. `earlier` gives hashes that were in the tree before (leaf hashes at level
    0, roots of full tiles one level down above it)."""
    out: list[Tile] = []
    start, new = size, list(leaves)
    level = 0
    while new:
        end = start + len(new)
        roots = []
        for t in range(start // WIDTH, end // WIDTH):
            lo = t * WIDTH
            hashes = list(earlier(level, lo, start)) if lo < start else []
            hashes += new[max(lo, start) - start : lo + WIDTH - start]
            if len(hashes) != WIDTH:
                raise TileError(f"level {level} lacks hashes below {start} for tile {t}")
            tile = Tile(level, t, b"".join(hashes), merkle.root(hashes))
            out.append(tile)
            roots.append(tile.root)
        start, new = start // WIDTH, roots
        level += 1
    return out


class Builder:
    """Tiles recomputed leaf by leaf, in one pass and O(256 · log n) memory."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = []
        self.done: list[int] = []  # full tiles per level so far

    def add(self, leaf: bytes) -> list[Tile]:
        out: list[Tile] = []
        level, value = 0, leaf
        while True:
            if level == len(self.levels):
                self.levels.append([])
                self.done.append(0)
            pending = self.levels[level]
            pending.append(value)
            if len(pending) < WIDTH:
                return out
            tile = Tile(level, self.done[level], b"".join(pending), merkle.root(pending))
            out.append(tile)
            self.levels[level], self.done[level] = [], self.done[level] + 1
            level, value = level + 1, tile.root


def split(hashes: bytes) -> list[bytes]:
    if len(hashes) % HASH:
        raise TileError("a tile is a whole number of 32-byte hashes")
    return [hashes[i : i + HASH] for i in range(0, len(hashes), HASH)]


# ------------------------------------------------------------------ proofs from tiles


class _Tree:
    """Subtree hashes of the tree of `size` leaves, read from tiles (each tile once)."""

    def __init__(self, size: int, read_tile: ReadTile):
        self.size = size
        self.read_tile = read_tile
        self.cache: dict[tuple[int, int], Sequence[bytes]] = {}

    def node(self, height: int, k: int) -> bytes:
        """The root of the perfect subtree over leaves [k·2^height, (k+1)·2^height)."""
        level, rest = divmod(height, HEIGHT)
        first, count = k << rest, 1 << rest  # positions among the level's hashes
        t = first >> HEIGHT
        width = width_at(level, t, self.size)
        if (first & (WIDTH - 1)) + count > width:
            raise TileError(f"node {height}/{k} is not in the tree of size {self.size}")
        hashes = self.cache.get((level, t))
        if hashes is None:
            hashes = self.read_tile(level, t, width)
            if len(hashes) != width or any(len(h) != HASH for h in hashes):
                raise TileError(f"tile {path(TileId(level, t, width))} has the wrong size")
            self.cache[(level, t)] = hashes
        offset = first & (WIDTH - 1)
        return merkle.root(hashes[offset : offset + count])

    def range(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges RFC 9162 proofs use (lo aligned to hi - lo's
        power-of-two ceiling): perfect subtrees, largest first, folded from the right."""
        pieces = []
        while lo < hi:
            height = (hi - lo).bit_length() - 1
            while lo & ((1 << height) - 1):
                height -= 1
            pieces.append(self.node(height, lo >> height))
            lo += 1 << height
        acc = pieces[-1]
        for left in reversed(pieces[:-1]):
            acc = merkle.node_hash(left, acc)
        return acc


def needed(proof: Callable[[ReadTile], object]) -> list[TileId]:
    """The tiles `proof(read_tile)` reads, found by running it over placeholder hashes, so
    that an edge can fetch them all at once."""
    seen: dict[TileId, None] = {}

    def record(level: int, n: int, width: int) -> list[bytes]:
        seen[TileId(level, n, width)] = None
        return [bytes(HASH)] * width

    proof(record)
    return list(seen)


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def root(size: int, read_tile: ReadTile) -> bytes:
    return _Tree(size, read_tile).range(0, size) if size else merkle.EMPTY_ROOT


def leaf(index: int, size: int, read_tile: ReadTile) -> bytes:
    return _Tree(size, read_tile).node(0, index)


def inclusion_proof(index: int, size: int, read_tile: ReadTile) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, read from tiles."""
    if not 0 <= index < size:
        raise merkle.ProofError(f"leaf {index} is not in a tree of size {size}")
    tree = _Tree(size, read_tile)
    path_: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path_.append(tree.range(lo + k, hi))
            hi = lo + k
        else:
            path_.append(tree.range(lo, lo + k))
            lo += k
    return path_[::-1]


def consistency_proof(old: int, size: int, read_tile: ReadTile) -> list[bytes]:
    """PROOF(old, D[size]) of RFC 9162 §2.1.4.1, read from tiles."""
    if not 0 < old <= size:
        raise merkle.ProofError(f"no consistency proof from size {old} to size {size}")
    tree = _Tree(size, read_tile)
    path_: list[bytes] = []
    lo, hi, m, complete = 0, size, old, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path_.append(tree.range(lo + k, hi))
            hi = lo + k
        else:
            path_.append(tree.range(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path_.append(tree.range(lo, hi))
    return path_[::-1]


# -------------------------------------------------------------------- entry bundles


def bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes."""
    out = bytearray()
    for e in entries:
        if len(e) > 0xFFFF:
            raise TileError("an entry of an entry bundle is at most 65535 bytes")
        out += struct.pack(">H", len(e)) + e
    return bytes(out)


def unbundle(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise TileError("truncated entry bundle")
        (n,) = struct.unpack_from(">H", data, i)
        if i + 2 + n > len(data):
            raise TileError("truncated entry bundle")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out
