"""The tus 1.0 resumable upload protocol (core, creation, checksum, expiration, termination)
as pure header parsing and building: no I/O. https://tus.io/protocols/resumable-upload"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Mapping
from email.utils import format_datetime

from mapserver.errors import CityGridError, InvalidInput

VERSION = "1.0.0"
EXTENSIONS = "creation,checksum,expiration,termination"
CHECKSUM_ALGORITHMS = ("sha256", "sha1")
OFFSET_TYPE = "application/offset+octet-stream"
MAX_METADATA = 1024


class VersionMismatch(CityGridError):
    status = 412
    code = "tus_version"


class OffsetMismatch(CityGridError):
    """The client's Upload-Offset is not where the upload stands: HEAD, then resume."""

    status = 409
    code = "offset_mismatch"

    def __init__(self, offset: int):
        super().__init__(f"the upload stands at offset {offset}; resume from there")
        self.offset = offset

    @property
    def details(self) -> dict[str, object]:
        return {"offset": self.offset}


class ChecksumMismatch(CityGridError):
    """tus's 460: the chunk's bytes are not what the client hashed; nothing was kept."""

    status = 460
    code = "checksum_mismatch"


class WrongContentType(CityGridError):
    status = 415
    code = "unsupported_media_type"


class TooLarge(CityGridError):
    status = 413
    code = "too_large"


def resumable(headers: Mapping[str, str]) -> None:
    """Every request but OPTIONS names the protocol version it speaks."""
    if headers.get("Tus-Resumable") != VERSION:
        raise VersionMismatch(f"Tus-Resumable: {VERSION} is required")


def _whole(headers: Mapping[str, str], name: str) -> int:
    value = headers.get(name)
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 12:
        raise InvalidInput(f"{name} must be a non-negative whole number")
    return int(value)


def upload_length(headers: Mapping[str, str], largest: int) -> int:
    if "Upload-Defer-Length" in headers:
        raise InvalidInput("Upload-Defer-Length is not supported: send Upload-Length")
    length = _whole(headers, "Upload-Length")
    if length == 0:
        raise InvalidInput("Upload-Length must be at least 1")
    if length > largest:
        raise TooLarge(f"this upload may have at most {largest} bytes")
    return length


def upload_offset(headers: Mapping[str, str]) -> int:
    return _whole(headers, "Upload-Offset")


def metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` pairs (values UTF-8 here)."""
    raw = headers.get("Upload-Metadata", "")
    if len(raw) > MAX_METADATA:
        raise InvalidInput(f"Upload-Metadata may have at most {MAX_METADATA} characters")
    found: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = pair.partition(" ")
        if not key.isascii() or not key.isprintable() or key in found:
            raise InvalidInput("Upload-Metadata: keys must be distinct ASCII")
        try:
            found[key] = base64.b64decode(value, validate=True).decode("utf-8") if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput(f"Upload-Metadata: {key[:20]!r} is not base64 of UTF-8") from None
    return found


def checksum(headers: Mapping[str, str]) -> tuple[str, bytes]:
    """(algorithm, digest) of Upload-Checksum, required on every PATCH here."""
    value = headers.get("Upload-Checksum")
    if value is None:
        raise InvalidInput("Upload-Checksum (sha256 BASE64) is required on every PATCH")
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidInput(f"Upload-Checksum: algorithm one of {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise InvalidInput("Upload-Checksum: the digest must be base64") from None
    return algorithm, digest


def verify(algorithm: str, digest: bytes, data: bytes) -> None:
    if hashlib.new(algorithm, data).digest() != digest:
        raise ChecksumMismatch("the chunk does not match its Upload-Checksum; nothing was kept")


def content_type(mimetype: str) -> None:
    if mimetype != OFFSET_TYPE:
        raise WrongContentType(f"PATCH bodies are {OFFSET_TYPE}")


def expires(when: dt.datetime) -> str:
    """Upload-Expires in the RFC 9110 date format."""
    return format_datetime(when.astimezone(dt.UTC), usegmt=True)


def discovery(largest: int) -> dict[str, str]:
    """The headers of OPTIONS: what this server speaks."""
    return {
        "Tus-Resumable": VERSION,
        "Tus-Version": VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(largest),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
