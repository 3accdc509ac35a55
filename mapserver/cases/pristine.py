"""Whether a photo another CityGrid install cleaned holds its pixels and nothing else. Pure.

The exchange peer's files are never re-encoded here (their hashes are what the peer's log
and signers vouched for), so they are read structure by structure against what this
install's own cleaning writes (mapserver.cases.media), and anything else is refused: a JPEG
is its start, one JFIF header without a thumbnail, quantisation and Huffman tables, a frame,
scans of entropy-coded data and its end as its last two bytes, every segment exactly as long
as what it declares; a PNG is its header, its image data (decompressed to exactly the rows
the header declares, nothing after the stream) and its end. EXIF, XMP, ICC profiles,
comments, text, bytes between segments or after the end: each is refused, wherever it sits.

What no structure check can see is data hidden in the pixels themselves (or past the last
block of a JPEG's entropy-coded data): that takes a peer that means it, not one that forgot
to clean."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from mapserver.errors import InvalidInput
from tiles import png

_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive (Huffman)
_JFIF = b"JFIF\x00"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type: grey, RGB, grey+alpha, RGBA
_PNG_KEPT = frozenset({b"IHDR", b"IDAT", b"IEND"})


class NotPristine(InvalidInput):
    """A photo that holds more than its pixels, or is not a well-formed file."""


def jpeg(data: bytes) -> None:
    """Refuse (NotPristine) a JPEG that holds anything but its pixels."""
    if not data.startswith(b"\xff\xd8"):
        raise NotPristine("the photo is not a JPEG")
    i, components, scanned = 2, 0, False
    while True:
        if i + 2 > len(data):
            raise NotPristine("the photo ends before its end-of-image marker")
        if data[i] != 0xFF:
            raise NotPristine(f"the photo has bytes that are no marker at offset {i}")
        marker = data[i + 1]
        if marker == 0xD9:
            if i + 2 != len(data):
                raise NotPristine("the photo has bytes after its end-of-image marker")
            if not scanned:
                raise NotPristine("the photo has no image data")
            return
        if i + 4 > len(data):
            raise NotPristine("the photo ends inside a segment")
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        body = data[i + 4 : i + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise NotPristine("the photo ends inside a segment")
        if marker == 0xE0 and i == 2:
            _jfif(body)
        elif marker == 0xDB:
            _tables(body, lambda b, j: 1 + 64 * ((b[j] >> 4) + 1), "quantisation", 1, 3)
        elif marker == 0xC4:
            _tables(body, _huffman_size, "Huffman", 1, 3)
        elif marker in _SOF:
            components = _frame(body)
        elif marker == 0xDD:
            if len(body) != 2:
                raise NotPristine("the photo's restart interval is malformed")
        elif marker == 0xDA:
            _scan(body, components)
            i = _entropy_end(data, i + 2 + length)
            scanned = True
            continue
        else:
            raise NotPristine(
                f"the photo carries a 0xFF{marker:02X} segment, which holds no pixels"
                " (EXIF, XMP, ICC, a comment or an application's data)"
            )
        i += 2 + length


def _jfif(body: bytes) -> None:
    """The JFIF header as an encoder writes it: version, density, no thumbnail."""
    if len(body) != 14 or not body.startswith(_JFIF) or body[12:14] != b"\x00\x00":
        raise NotPristine("the photo's JFIF header is not a plain one (a thumbnail or more)")


def _huffman_size(body: bytes, j: int) -> int:
    if j + 17 > len(body):
        raise NotPristine("the photo's Huffman table is malformed")
    return 17 + sum(body[j + 1 : j + 17])


def _tables(
    body: bytes, size: Callable[[bytes, int], int], what: str, top_class: int, top_id: int
) -> None:
    """A DQT or DHT segment: whole tables, one after another, to its last byte."""
    j = 0
    while j < len(body):
        if body[j] >> 4 > top_class or body[j] & 0x0F > top_id:
            raise NotPristine(f"the photo's {what} table is malformed")
        j += size(body, j)
    if j != len(body):
        raise NotPristine(f"the photo's {what} tables do not fill their segment exactly")


def _frame(body: bytes) -> int:
    if len(body) < 6 or body[0] != 8 or body[5] not in (1, 3) or len(body) != 6 + 3 * body[5]:
        raise NotPristine("the photo's frame header is malformed")
    return body[5]


def _scan(body: bytes, components: int) -> None:
    if not components:
        raise NotPristine("the photo has a scan before its frame")
    if not body or not 1 <= body[0] <= components or len(body) != 4 + 2 * body[0]:
        raise NotPristine("the photo's scan header is malformed")


def _entropy_end(data: bytes, j: int) -> int:
    """Where the entropy-coded data from `j` ends: the next marker that is neither a
    stuffed 0xFF00 nor a restart marker."""
    while True:
        j = data.find(b"\xff", j)
        if j < 0 or j + 1 >= len(data):
            raise NotPristine("the photo ends inside its image data")
        following = data[j + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            j += 2
            continue
        return j


def png_file(data: bytes, max_pixels: int) -> None:
    """Refuse (NotPristine) a PNG that holds anything but its pixels."""
    try:
        found = png.chunks(data)
    except png.PngError as exc:
        raise NotPristine(f"the photo is not a readable PNG ({exc})") from None
    if png.strip(data) != data or any(kind not in _PNG_KEPT for kind, _ in found):
        raise NotPristine("the photo carries PNG chunks beyond its pixels")
    if found[0][0] != b"IHDR" or len(found[0][1]) != 13 or found[-1][0] != b"IEND":
        raise NotPristine("the photo's PNG header or end is malformed")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", found[0][1]
    )
    if depth != 8 or colour not in _CHANNELS or (compression, filtering, interlace) != (0, 0, 0):
        raise NotPristine("the photo is not a PNG as cleaning writes it (8-bit, not interlaced)")
    if not 0 < width * height <= max_pixels:
        raise NotPristine(f"a photo may have at most {max_pixels:,} pixels")
    row = 1 + width * _CHANNELS[colour]
    stream = zlib.decompressobj()
    try:
        rows = stream.decompress(b"".join(p for kind, p in found if kind == b"IDAT"), row * height)
    except zlib.error:
        raise NotPristine("the photo's image data does not decompress") from None
    if len(rows) != row * height or not stream.eof or stream.unused_data or stream.unconsumed_tail:
        raise NotPristine("the photo's image data is not exactly the rows its header declares")
    if any(rows[k] > 4 for k in range(0, len(rows), row)):
        raise NotPristine("the photo's image data has an unknown row filter")
