"""A task's photos and recordings, brought to the device when the inspector asks for them
(the reporter's photo to find the problem by, the bureau's to check the repair by).

Over a link that drops connections, a file comes in ranges of `chunk` bytes appended to
`NAME.part`, so a cut costs at most one range: the next request asks from where the part
ends. A finished file is checked against the SHA-256 its task lists (the hash the case's
signed step named) before it takes its name; one already there with that hash is not asked
for again. What the task says of a file is checked before it is used: a malformed entry is
one line, never a traceback."""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mapserver.cases.media import EXTENSIONS
from mapserver.device_client.backoff import Backoff
from mapserver.device_client.link import Link, LinkDown
from mapserver.device_client.plan import PASSING, Answer
from mapserver.errors import CityGridError

MAX_FAILURES = 12  # in a row, before the download is given up (run the command again)
_NUMBER = re.compile(r"[0-9-]{1,20}")  # a case number: also part of the file's name
_SHA256 = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18})")


class DownloadFailed(CityGridError):
    status = 502
    code = "download_failed"


class Fetched(NamedTuple):
    path: Path
    sha256: str
    bytes: int
    new: bool  # False: the device held it already


class Listed(NamedTuple):
    """One entry of a task's `attachments[]`, checked."""

    sha256: str
    bytes: int
    url: str
    media_type: str


def listed(number: str, item: Any) -> Listed:
    """The task's entry for a file, or DownloadFailed naming what is wrong with it."""
    if not _NUMBER.fullmatch(number):
        raise DownloadFailed(f"not a case number: {number[:40]!r}")
    try:
        sha, size, url, media_type = item["sha256"], item["bytes"], item["url"], item["media_type"]
    except (KeyError, TypeError) as exc:
        missing = f"no {exc}" if isinstance(exc, KeyError) else "not an object"
        raise DownloadFailed(f"{number}: a file of the task is malformed ({missing})") from None
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise DownloadFailed(f"{number}: a file of the task has no SHA-256 ({str(sha)[:80]!r})")
    if type(size) is not int or size <= 0:
        raise DownloadFailed(f"{number}: {sha[:12]}: bytes is not a positive integer")
    if url != f"/device/v1/cases/{number}/attachments/{sha}":
        raise DownloadFailed(f"{number}: the task names no file of this case: {str(url)[:100]!r}")
    if not isinstance(media_type, str):
        raise DownloadFailed(f"{number}: {sha[:12]}: media_type is not a string")
    return Listed(sha, size, url, media_type)


def name(number: str, file: Listed) -> str:
    return f"{number}-{file.sha256[:12]}.{EXTENSIONS.get(file.media_type, 'bin')}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    link: Link,
    number: str,
    item: Any,
    folder: Path,
    *,
    chunk: int,
    backoff: Backoff,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Bring one of a task's files (`attachments[]`) into `folder`."""
    file = listed(number, item)
    sha, size, url = file.sha256, file.bytes, file.url
    target = folder / name(number, file)
    if target.exists() and _sha256(target) == sha:
        return Fetched(target, sha, size, False)
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if part.exists() and part.stat().st_size > size:
        part.unlink()  # not the start of this file (the loop would skip it): begin again
    rng = rng or random.Random()
    failures = 0
    while (have := part.stat().st_size if part.exists() else 0) < size:
        try:
            answer = link.call("GET", url, {"Range": f"bytes={have}-{min(have + chunk, size) - 1}"})
        except LinkDown:
            answer = None
        if answer is not None and answer.status in (200, 206):
            _write(part, file, have, answer)
            failures = 0
            continue
        if answer is not None and answer.status not in PASSING:  # 502, 504 pass too
            code, message = answer.error()
            raise DownloadFailed(f"{sha[:12]}: refused ({answer.status}) {message or code}")
        failures += 1
        if failures > MAX_FAILURES:
            raise DownloadFailed(f"{sha[:12]}: the link failed {failures} times in a row")
        sleep(backoff.after(failures, rng, answer.retry_after() if answer else None))
    if _sha256(part) != sha:
        part.unlink()
        raise DownloadFailed(f"{sha[:12]}: the bytes do not hash to what the case signed")
    part.replace(target)
    return Fetched(target, sha, size, True)


def _write(part: Path, file: Listed, have: int, answer: Answer) -> None:
    """Append a range that starts where the part ends; a whole answer (200) replaces it.
    Nothing that would make the part longer than the file is written."""
    sha, size, body = file.sha256[:12], file.bytes, answer.body
    content_range = answer.headers.get("content-range", "")
    if answer.status == 200:
        if len(body) != size:
            raise DownloadFailed(f"{sha}: the server sent {len(body)} bytes of a file of {size}")
        part.write_bytes(body)
        return
    found = _RANGE.fullmatch(content_range.strip())
    if (
        found is None
        or int(found[1]) != have
        or int(found[2]) - have + 1 != len(body)
        or int(found[2]) >= int(found[3])
        or int(found[3]) != size
    ):
        raise DownloadFailed(
            f"{sha}: the server answered another range than asked for bytes {have}- of {size} "
            f"({content_range[:80]!r})"
        )
    with part.open("ab") as fh:
        fh.write(body)
