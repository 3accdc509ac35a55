"""The client's directory: its settings (device.json) and its key material, each private
key 0600. DIR/device.crt + device.key: the device certificate (TLS); DIR/signing.key +
signing.crt: the device's own signing key, made on the device and never sent; DIR/ca.crt:
CityGrid's CA; DIR/queue.sqlite3: what waits to be sent."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

from mapserver.errors import InvalidInput

SETTINGS = "device.json"


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    server: str  # https://HOST:PORT
    photo_max_px: int = 1600  # the longer side of a photo as sent
    jpeg_quality: int = 85
    chunk_bytes: int = 128 * 1024  # one tus PATCH; what a dropped link can cost at most
    timeout_s: float = 60.0  # per socket operation
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    reuse_connections: bool = True  # keep-alive; off: one connection per request

    def check(self) -> ClientSettings:
        if not self.server.startswith("https://"):
            raise InvalidInput("server must be an https:// URL")
        if not 64 <= self.photo_max_px <= 8000:
            raise InvalidInput("photo_max_px must be between 64 and 8000")
        if not 30 <= self.jpeg_quality <= 95:
            raise InvalidInput("jpeg_quality must be between 30 and 95")
        if not 1024 <= self.chunk_bytes <= 1 << 20:
            raise InvalidInput("chunk_bytes must be between 1 KiB and 1 MiB")
        if self.timeout_s <= 0 or self.backoff_base_s <= 0 or self.backoff_cap_s <= 0:
            raise InvalidInput("timeout_s, backoff_base_s and backoff_cap_s must be positive")
        return self


class Paths:
    def __init__(self, root: Path):
        self.root = root
        self.settings = root / SETTINGS
        self.device_crt, self.device_key = root / "device.crt", root / "device.key"
        self.signing_crt, self.signing_key = root / "signing.crt", root / "signing.key"
        self.ca = root / "ca.crt"
        self.queue = root / "queue.sqlite3"


def write_private(path: Path, data: bytes) -> None:
    """Written 0600 from the start (never readable by others, not even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def private_bytes(path: Path) -> bytes:
    """A key file's bytes; refused when others may read or write it."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError:
        raise InvalidInput(f"{path} cannot be read") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInput(f"{path} is open to others (mode {stat.S_IMODE(mode):04o}); chmod 600")
    return data


def save(paths: Paths, settings: ClientSettings) -> None:
    text = json.dumps(dataclasses.asdict(settings.check()), indent=2) + "\n"
    write_private(paths.settings, text.encode())


def load(paths: Paths) -> ClientSettings:
    try:
        raw: Any = json.loads(paths.settings.read_text("utf-8"))
    except OSError:
        raise InvalidInput(
            f"{paths.root} is not a device directory (citygrid device init)"
        ) from None
    except ValueError:
        raise InvalidInput(f"{paths.settings} is not JSON") from None
    names = {f.name for f in dataclasses.fields(ClientSettings)}
    if not isinstance(raw, dict) or not set(raw) <= names or "server" not in raw:
        raise InvalidInput(f"{paths.settings}: unknown or missing settings")
    try:
        return ClientSettings(**raw).check()
    except TypeError:
        raise InvalidInput(f"{paths.settings}: a setting has the wrong type") from None
