"""Queued items as the device makes them: a report (placed by a GPS fix, a grid, a
component or an address) or a verify/check result, with photos downsized first and voice
recordings (AMR or MP3, as the server takes them) as they are."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from mapserver import text_limits
from mapserver.cases import media
from mapserver.cases.place import ADDRESS
from mapserver.cases.store import MAX_DESCRIPTION, MAX_NOTE
from mapserver.device_client import photos as photos_mod
from mapserver.device_client import plan
from mapserver.device_client.config import ClientSettings
from mapserver.device_client.queue import Queue
from mapserver.errors import InvalidInput

MAX_ATTACHMENTS = 9  # photos and recordings per signed action, as the server takes them
RESULTS = {"verify": ("verify", "reported"), "pass": ("check_pass", "checking")}
RESULTS["fail"] = ("check_fail", "checking")
_NUMBER = re.compile(r"^\d{4}-\d{6}\Z")


def _now() -> dt.datetime:
    return dt.datetime.now().astimezone()  # the device's clock, with its offset


def _text(name: str, value: str, most: int, required: bool = True) -> None:
    """A text the server would refuse (its length, a control character; `value` as the
    server checks it) is refused before anything is queued, not at `send`."""
    if required and not value.strip():
        raise InvalidInput(f"{name} is required")
    text_limits.Limit(name, most).check(value)


def _attachments(
    settings: ClientSettings, photos: list[bytes], voices: list[bytes]
) -> list[tuple[str, bytes]]:
    """(media type, bytes) of each attachment as it is sent: photos downsized to JPEG, voice
    recordings as they are, their type read from their bytes."""
    if len(photos) + len(voices) > MAX_ATTACHMENTS:
        raise InvalidInput(f"at most {MAX_ATTACHMENTS} photos and recordings per report or result")
    sent = [
        ("image/jpeg", photos_mod.downsize(data, settings.photo_max_px, settings.jpeg_quality))
        for data in photos
    ]
    for data in voices:
        kind = media.sniff(data)
        if kind not in media.VOICE_TYPES:
            raise InvalidInput("a voice recording is AMR, AMR-WB or MP3 (read from its bytes)")
        if len(data) > media.MAX_BYTES["voice"]:
            most = media.MAX_BYTES["voice"] >> 20
            raise InvalidInput(f"a voice recording has at most {most} MiB")
        sent.append((kind, data))
    return sent


def report(
    queue: Queue,
    settings: ClientSettings,
    *,
    kind: str,
    major: str,
    minor: str,
    description: str,
    gps: tuple[float, float] | None = None,
    place: dict[str, str] | None = None,
    photos: list[bytes] = [],  # noqa: B006 (never mutated)
    voices: list[bytes] = [],  # noqa: B006 (never mutated)
    when: dt.datetime | None = None,
) -> int:
    """Queue a report; exactly one of `gps` (WGS84 lon, lat) and `place`."""
    if (gps is None) == (place is None):
        raise InvalidInput("a report is placed by a GPS fix or by a grid, component or address")
    if kind == "component" and (place is None or set(place) != {"component"}):
        raise InvalidInput("a component case is placed by its component: give --component")
    _text("description", description.strip(), MAX_DESCRIPTION)  # as mapserver.cases.store
    if place is not None and "address" in place:
        _text("address", place["address"], ADDRESS.chars)  # as mapserver.cases.place: unstripped
    beside: dict[str, Any] | None = None
    if gps is not None:
        signed_place, beside = plan.gps_place(*gps)
        beside = {"fix": beside}
    else:
        assert place is not None
        signed_place = dict(place)
    params = plan.report_params(kind, major, minor, description, signed_place, when or _now())
    sent = _attachments(settings, photos, voices)
    return queue.add("/device/v1/reports", "case.report", "cases", params, beside, sent)


def result(
    queue: Queue,
    settings: ClientSettings,
    *,
    number: str,
    outcome: str,
    note: str = "",
    photos: list[bytes] = [],  # noqa: B006 (never mutated)
    voices: list[bytes] = [],  # noqa: B006 (never mutated)
    when: dt.datetime | None = None,
) -> int:
    """Queue a verify (`verify`) or check result (`pass`, `fail`) for case `number`."""
    if not _NUMBER.match(number):
        raise InvalidInput("a case number looks like 2026-000123")
    if outcome not in RESULTS:
        raise InvalidInput(f"the result is one of {', '.join(RESULTS)}")
    name, state = RESULTS[outcome]
    _text("note", note.strip(), MAX_NOTE, required=False)
    params: dict[str, Any] = {"from": state, "client_time": (when or _now()).isoformat()}
    if note:
        params["note"] = note
    sent = _attachments(settings, photos, voices)
    path = f"/device/v1/cases/{number}/{name}"
    return queue.add(path, f"case.{name}", f"case {number}", params, None, sent)
