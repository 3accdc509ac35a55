"""A task's photos and recordings, brought to the device when the inspector asks for them
(the reporter's photo to find the problem by, the bureau's to check the repair by).

Over a link that drops connections, a file comes in ranges of `chunk` bytes appended to
`NAME.part`, so a cut costs at most one range: the next request asks from where the part
ends. A finished file is checked against the SHA-256 its task lists (the hash the case's
signed step named) before it takes its name; one already there with that hash is not asked
for again."""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from mapserver.cases.media import EXTENSIONS
from mapserver.device_client.backoff import Backoff
from mapserver.device_client.link import Link, LinkDown
from mapserver.errors import CityGridError

MAX_FAILURES = 12  # in a row, before the download is given up (run the command again)
_URL = re.compile(r"/device/v1/cases/[0-9-]{1,20}/attachments/[0-9a-f]{64}")
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


class DownloadFailed(CityGridError):
    status = 502
    code = "download_failed"


class Fetched(NamedTuple):
    path: Path
    sha256: str
    bytes: int
    new: bool  # False: the device held it already


def name(number: str, item: Mapping[str, Any]) -> str:
    return f"{number}-{item['sha256'][:12]}.{EXTENSIONS.get(item['media_type'], 'bin')}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    link: Link,
    number: str,
    item: Mapping[str, Any],
    folder: Path,
    *,
    chunk: int,
    backoff: Backoff,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Bring one of a task's files (`attachments[]`) into `folder`."""
    sha, size, url = str(item["sha256"]), int(item["bytes"]), str(item["url"])
    if not _URL.fullmatch(url):
        raise DownloadFailed(f"the task names no file of this server: {url[:100]!r}")
    target = folder / name(number, item)
    if target.exists() and _sha256(target) == sha:
        return Fetched(target, sha, size, False)
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    rng = rng or random.Random()
    failures = 0
    while (have := part.stat().st_size if part.exists() else 0) < size:
        try:
            answer = link.call("GET", url, {"Range": f"bytes={have}-{min(have + chunk, size) - 1}"})
        except LinkDown:
            answer = None
        if answer is not None and answer.status in (200, 206):
            _write(part, have, answer.status, answer.headers.get("content-range", ""), answer.body)
            failures = 0
            continue
        if answer is not None and answer.status not in (429, 503):
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


def _write(part: Path, have: int, status: int, content_range: str, body: bytes) -> None:
    """Append a range that starts where the part ends; a whole answer (200) replaces it."""
    if status == 200:
        part.write_bytes(body)
        return
    found = _RANGE.fullmatch(content_range.strip())
    if found is None or int(found[1]) != have or int(found[2]) - have + 1 != len(body):
        raise DownloadFailed(f"the server answered another range than asked ({content_range!r})")
    with part.open("ab") as fh:
        fh.write(body)
