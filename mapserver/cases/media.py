"""Photos and voice recordings of a case, cleaned before they are stored. Pure: bytes in,
bytes out, no I/O.

The type is read from the bytes, never from what a client declares. A photo keeps nothing
but its pixels: it is decoded, turned upright by its EXIF orientation, converted to sRGB
by its ICC profile, and re-encoded from a fresh image, so EXIF (GPS included), XMP, ICC
profiles, comments and text chunks are all gone (phone photos carry the place they were
taken). A voice recording is parsed frame by frame and only its audio frames are kept:
AMR has no metadata at all; MP3 loses its ID3 and APE tags.
"""

from __future__ import annotations

import io
import struct
from typing import NamedTuple

from PIL import Image, ImageCms, ImageOps

from mapserver.cases import pristine
from mapserver.errors import CityGridError, InvalidInput
from tiles import png

MiB = 1 << 20
PHOTO_TYPES = ("image/jpeg", "image/png")
VOICE_TYPES = ("audio/amr", "audio/amr-wb", "audio/mpeg")
ACCEPTED = PHOTO_TYPES + VOICE_TYPES
# A file name's extension for each type (downloads, exports).
EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "audio/amr": "amr",
    "audio/amr-wb": "awb",
    "audio/mpeg": "mp3",
}
MAX_BYTES = {"photo": 8 * MiB, "voice": 4 * MiB}
MAX_PIXELS = 50_000_000  # checked from the header, before anything is decoded
JPEG_QUALITY = (90, 80, 70)  # tried in turn until the cleaned photo fits its size limit

# Errors Pillow raises on bytes that are not a readable image of the declared kind.
_UNREADABLE = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
    Image.DecompressionBombError,
)


class UnsupportedType(CityGridError):
    status = 415
    code = "unsupported_media_type"


class TooLarge(CityGridError):
    status = 413
    code = "too_large"


class Cleaned(NamedTuple):
    """What is stored: the cleaned bytes and what a person may know about them."""

    media_type: str
    kind: str  # photo | voice
    data: bytes
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None


def kind_of(media_type: str) -> str:
    if media_type in PHOTO_TYPES:
        return "photo"
    if media_type in VOICE_TYPES:
        return "voice"
    raise UnsupportedType(f"Content-Type must be one of {', '.join(ACCEPTED)}")


def sniff(data: bytes) -> str | None:
    """The media type the bytes are, by their signature (None: none accepted)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(png.SIGNATURE):
        return "image/png"
    if data.startswith(AMR_WB_MAGIC):
        return "audio/amr-wb"
    if data.startswith(AMR_MAGIC):
        return "audio/amr"
    if data.startswith(b"ID3") or (len(data) >= 4 and _mp3_frame(data, 0) is not None):
        return "audio/mpeg"
    return None


def clean(declared: str, data: bytes) -> Cleaned:
    """The cleaned attachment of `data`, which the client declared as `declared`.

    415 for a type not taken or bytes of another type than declared, 413 over the kind's
    size limit, 400 for bytes that do not decode."""
    kind = kind_of(declared)
    if not data:
        raise InvalidInput("the attachment is empty")
    if len(data) > MAX_BYTES[kind]:
        raise TooLarge(f"a {kind} may have at most {MAX_BYTES[kind] // MiB} MiB")
    actual = sniff(data)
    if actual != declared:
        raise UnsupportedType(
            f"the bytes are {actual or 'of no accepted type'}, not {declared}"
            f"; accepted: {', '.join(ACCEPTED)}"
        )
    if kind == "photo":
        cleaned = _photo(declared, data)
    elif declared == "audio/mpeg":
        cleaned = _mp3(data)
    else:
        cleaned = _amr(declared, data)
    if len(cleaned.data) > MAX_BYTES[kind]:
        raise TooLarge(f"the cleaned {kind} is larger than {MAX_BYTES[kind] // MiB} MiB")
    return cleaned


def check_clean(declared: str, data: bytes) -> Cleaned:
    """What another CityGrid install sent as cleaned (the exchange peer's files): its type
    read from the bytes, within the size limits, fully decodable, and holding nothing but
    pixels (mapserver.cases.pristine) or audio frames. Never re-encoded, since its hash is
    what the peer's log vouched for: anything more is refused (415 or 400, as `clean`)."""
    kind = kind_of(declared)
    if not data or len(data) > MAX_BYTES[kind]:
        raise TooLarge(f"a {kind} has 1 byte to {MAX_BYTES[kind] // MiB} MiB")
    actual = sniff(data)
    if actual != declared:
        raise UnsupportedType(f"the bytes are {actual or 'of no accepted type'}, not {declared}")
    if kind == "voice":
        found = _mp3(data) if declared == "audio/mpeg" else _amr(declared, data)
        if found.data != data:
            raise InvalidInput("the recording carries tags, not only audio frames")
        return found
    if declared == "image/png":
        pristine.png_file(data, MAX_PIXELS)
    else:
        pristine.jpeg(data)
    with _decoded(declared, data) as im:
        return Cleaned(declared, "photo", data, im.width, im.height)


# -- photos ---------------------------------------------------------------------------


def _decoded(media_type: str, data: bytes) -> Image.Image:
    """The photo, decoded whole (its size checked from the header first); 400 otherwise."""
    fmt = "JPEG" if media_type == "image/jpeg" else "PNG"
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
        if im.width * im.height > MAX_PIXELS:
            raise InvalidInput(f"a photo may have at most {MAX_PIXELS:,} pixels")
        im.load()
    except _UNREADABLE:
        raise InvalidInput(f"the photo is not a readable {fmt}") from None
    return im


def _photo(media_type: str, data: bytes) -> Cleaned:
    fmt = "JPEG" if media_type == "image/jpeg" else "PNG"
    with _decoded(media_type, data) as im:
        try:
            icc = im.info.get("icc_profile")
            upright = _upright(im)
            pixels = _srgb(upright, icc, fmt)
        except _UNREADABLE:
            raise InvalidInput(f"the photo is not a readable {fmt}") from None
    # A fresh image from the pixels alone: no info, no EXIF, no profile, nothing to carry.
    fresh = Image.frombytes(pixels.mode, pixels.size, pixels.tobytes())
    if fmt == "PNG":
        out = io.BytesIO()
        fresh.save(out, "PNG", compress_level=9)
        encoded = png.strip(out.getvalue())  # the tile whitelist: IHDR/PLTE/tRNS/IDAT/IEND
    else:
        for quality in JPEG_QUALITY:
            out = io.BytesIO()
            fresh.save(out, "JPEG", quality=quality, optimize=True)
            encoded = out.getvalue()
            if len(encoded) <= MAX_BYTES["photo"]:
                break
    return Cleaned(media_type, "photo", encoded, fresh.width, fresh.height)


def _upright(im: Image.Image) -> Image.Image:
    """Turned as its EXIF orientation says; unreadable EXIF has no orientation to apply."""
    try:
        return ImageOps.exif_transpose(im)
    except _UNREADABLE:
        return im


def _srgb(im: Image.Image, icc: bytes | None, fmt: str) -> Image.Image:
    """The pixels in sRGB and a mode the output format holds without a palette or profile."""
    alpha = fmt == "PNG" and (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info)
    grey = im.mode in ("1", "L", "LA", "F") or im.mode.startswith("I")
    target = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
    if icc and not grey:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            base = im.convert("RGBA" if alpha else ("CMYK" if im.mode == "CMYK" else "RGB"))
            converted = ImageCms.profileToProfile(
                base, source, ImageCms.createProfile("sRGB"), outputMode=target
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: the pixels as they are
    if im.mode.startswith("I"):  # 16-bit grey: keep the high byte
        im = im.convert("I").point(lambda v: v * (1 / 256))
    return im.convert(target)


# -- voice: AMR -----------------------------------------------------------------------

AMR_MAGIC = b"#!AMR\n"
AMR_WB_MAGIC = b"#!AMR-WB\n"
# Bytes of a frame (its header byte included) by frame type; 0: not allowed in a file.
_AMR_SIZES = {
    "audio/amr": (13, 14, 16, 18, 20, 21, 27, 32, 6, 0, 0, 0, 0, 0, 0, 1),
    "audio/amr-wb": (18, 24, 33, 37, 41, 47, 51, 59, 61, 6, 0, 0, 0, 0, 1, 1),
}
AMR_FRAME_MS = 20


def _amr(media_type: str, data: bytes) -> Cleaned:
    magic = AMR_MAGIC if media_type == "audio/amr" else AMR_WB_MAGIC
    sizes = _AMR_SIZES[media_type]
    i, frames = len(magic), 0
    while i < len(data):
        header = data[i]
        size = sizes[(header >> 3) & 0x0F]
        if header & 0x83 or size == 0 or i + size > len(data):
            raise InvalidInput(f"the recording is not a clean AMR stream (frame {frames + 1})")
        i += size
        frames += 1
    if frames == 0:
        raise InvalidInput("the recording holds no audio frames")
    return Cleaned(media_type, "voice", data, duration_ms=frames * AMR_FRAME_MS)


# -- voice: MP3 -----------------------------------------------------------------------

_MP3_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_TRAILING_TAGS = (b"TAG", b"APETAGEX", b"LYRICSBEGIN")


def _mp3_frame(data: bytes, i: int) -> tuple[int, int, int] | None:
    """(length, samples, sample rate) of the MPEG layer III frame at `i`, or None."""
    if i + 4 > len(data):
        return None
    b1, b2 = data[i + 1], data[i + 2]
    if data[i] != 0xFF or b1 & 0xE0 != 0xE0:
        return None
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index, padding = b2 >> 4, (b2 >> 2) & 3, (b2 >> 1) & 1
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    kbps = _MP3_KBPS[1 if version == 3 else 2][bitrate_index]
    rate = _MP3_RATES[version][rate_index]
    per_frame = 144_000 if version == 3 else 72_000
    return per_frame * kbps // rate + padding, 1152 if version == 3 else 576, rate


def _mp3(data: bytes) -> Cleaned:
    """The audio frames only: ID3v2 before, ID3v1/APE/Lyrics tags after are dropped."""
    i = 0
    while data.startswith(b"ID3", i) and i + 10 <= len(data):
        size = 0
        for byte in data[i + 6 : i + 10]:
            if byte & 0x80:
                raise InvalidInput("the recording's ID3 tag is malformed")
            size = size << 7 | byte
        i += 10 + size + (10 if data[i + 5] & 0x10 else 0)
    frames: list[bytes] = []
    seconds = 0.0
    while i < len(data):
        found = _mp3_frame(data, i)
        if found is None or i + found[0] > len(data):
            if frames and data.startswith(_TRAILING_TAGS, i):
                break
            raise InvalidInput(f"the recording is not a clean MP3 stream (frame {len(frames) + 1})")
        length, samples, rate = found
        frames.append(data[i : i + length])
        seconds += samples / rate
        i += length
    if not frames:
        raise InvalidInput("the recording holds no audio frames")
    return Cleaned("audio/mpeg", "voice", b"".join(frames), duration_ms=round(seconds * 1000))
