"""Photos are made small on the device before they are queued: turned upright, at most
`max_px` on their longer side, re-encoded as JPEG from the pixels alone (so the phone's
EXIF, GPS included, never leaves the device either). Deterministic: the same photo and
settings give the same bytes."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from mapserver.errors import InvalidInput

MAX_SOURCE_PIXELS = 50_000_000


def downsize(data: bytes, max_px: int, quality: int) -> bytes:
    """The JPEG to send for `data` (any image Pillow reads)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_SOURCE_PIXELS:
                raise InvalidInput("the photo has more than 50 million pixels")
            upright = ImageOps.exif_transpose(im)
            pixels = upright.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise InvalidInput("the photo is not an image this client reads") from None
    if max(pixels.size) > max_px:
        pixels.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
    fresh = Image.frombytes("RGB", pixels.size, pixels.tobytes())
    out = io.BytesIO()
    fresh.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def read(path: Path, max_px: int, quality: int) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    return downsize(data, max_px, quality)
