"""Photos and recordings beside an exported bundle, checked offline with it.

`citygrid case export --files DIR` and `citygrid exchange export --files DIR` write each file
as `SHA256.EXT`. `citygrid verify-action BUNDLE --files DIR`, once the bundle verifies,
checks that every file there hashes to its name and is one the bundle vouches for (a signed
action's `attachments`, or an exchange message's listed files, which the peer's log
recorded), and names those vouched for that are not there. Pure but for reading and
writing the directory."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from mapserver.cases.media import EXTENSIONS
from mapserver.errors import CityGridError

_NAME = re.compile(r"([0-9a-f]{64})\.(jpg|png|amr|awb|mp3)")


class FileRefused(CityGridError):
    status = 400
    code = "file_refused"


class Checked(NamedTuple):
    verified: list[str]  # hashes of the files there, each vouched for
    missing: list[str]  # vouched for, not there


def write(folder: Path, files: Iterable[tuple[str, str, bytes]]) -> int:
    """Write (sha256, media type, bytes) as `SHA256.EXT` into `folder`; how many."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for sha256, media_type, data in files:
        (folder / f"{sha256}.{EXTENSIONS.get(media_type, 'bin')}").write_bytes(data)
        count += 1
    return count


def vouched_by_actions(parameters: Iterable[dict[str, Any]]) -> set[str]:
    """The hashes verified signed actions name in their `attachments`."""
    found: set[str] = set()
    for params in parameters:
        listed = params.get("attachments")
        if isinstance(listed, list):
            found.update(h for h in listed if isinstance(h, str))
    return found


def vouched_by_content(content: dict[str, Any]) -> set[str]:
    """The hashes a verified exchange message's content lists."""
    listed = content.get("attachments")
    if not isinstance(listed, list):
        return set()
    return {i["sha256"] for i in listed if isinstance(i, dict) and isinstance(i.get("sha256"), str)}


def check(folder: Path, vouched: set[str]) -> Checked:
    """Every file in `folder` hashes to its name and is vouched for (FileRefused naming the
    first that is not, or a file of another name)."""
    if not folder.is_dir():
        raise FileRefused(f"{folder} is not a directory")
    verified = []
    for path in sorted(folder.iterdir()):
        named = _NAME.fullmatch(path.name)
        if named is None or not path.is_file():
            raise FileRefused(f"{path.name}: not a file of an export (SHA256.EXT)")
        sha256 = named[1]
        if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise FileRefused(f"{path.name}: its bytes do not hash to its name (altered?)")
        if sha256 not in vouched:
            raise FileRefused(f"{path.name}: no signed action or message of the bundle names it")
        verified.append(sha256)
    return Checked(verified, sorted(vouched - set(verified)))


def said(checked: Checked) -> str:
    text = f"{len(checked.verified)} file(s) verified against what the bundle vouches for"
    if checked.missing:
        short = ", ".join(h[:12] for h in checked.missing)
        text += f"; {len(checked.missing)} it names not given ({short})"
    return text
