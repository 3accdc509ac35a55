"""PNG chunk inspection and the whitelist that keeps every tile free of metadata.

A tile leaving the secure zone is pixels and a palette, nothing else: no text, time,
physical size, colour profile, EXIF or private chunks that could carry a coordinate.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALLOWED = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})


class PngError(ValueError):
    pass


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, checking lengths and CRCs."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG")
    out = []
    i = len(SIGNATURE)
    while i < len(data):
        if i + 8 > len(data):
            raise PngError("truncated chunk header")
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        payload = data[i + 8 : i + 8 + length]
        if len(payload) != length or i + 12 + length > len(data):
            raise PngError("truncated chunk")
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        if zlib.crc32(kind + payload) != crc:
            raise PngError(f"bad CRC in {kind!r}")
        out.append((kind, payload))
        i += 12 + length
        if kind == b"IEND":
            break
    return out


def chunk_types(data: bytes) -> list[str]:
    return [kind.decode("latin-1") for kind, _ in chunks(data)]


def strip(data: bytes) -> bytes:
    """The same PNG with every chunk outside the whitelist removed."""
    parts = [SIGNATURE]
    for kind, payload in chunks(data):
        if kind in ALLOWED:
            parts.append(struct.pack(">I", len(payload)) + kind + payload)
            parts.append(struct.pack(">I", zlib.crc32(kind + payload)))
    return b"".join(parts)


def is_clean(data: bytes) -> bool:
    try:
        return all(kind in ALLOWED for kind, _ in chunks(data))
    except PngError:
        return False
