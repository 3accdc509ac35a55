"""`citygrid device …`: the reference device client on the command line."""

from __future__ import annotations

import gzip
import json
import shutil
import ssl
import sys
from pathlib import Path
from typing import Any

import click

from mapserver.commands.base import fail, reports_errors
from mapserver.device_client import compose, config
from mapserver.device_client.backoff import Backoff
from mapserver.device_client.link import Link, LinkDown
from mapserver.device_client.queue import Item, Queue
from mapserver.errors import InvalidInput

DIR_OPTION = click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CITYGRID_DEVICE_DIR",
    default="device",
    show_default=True,
    help="The client's directory ($CITYGRID_DEVICE_DIR).",
)


@click.group()
def device() -> None:
    """The reference device client: queue reports and results, send them over a bad link."""


def _open(root: Path) -> tuple[config.Paths, config.ClientSettings]:
    paths = config.Paths(root)
    return paths, config.load(paths)


@device.command("init")
@DIR_OPTION
@click.option("--server", required=True, help="https://HOST:PORT of CityGrid.")
@click.option("--cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--key", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--ca", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--photo-max-px", type=int, default=1600, show_default=True)
@click.option("--jpeg-quality", type=int, default=85, show_default=True)
@click.option("--chunk-kib", type=int, default=128, show_default=True)
@reports_errors
def init(
    root: Path,
    server: str,
    cert: Path,
    key: Path,
    ca: Path,
    photo_max_px: int,
    jpeg_quality: int,
    chunk_kib: int,
) -> None:
    """Set up a device directory from the files of `citygrid pki issue --kind device`."""
    settings = config.ClientSettings(
        server.rstrip("/"),
        photo_max_px=photo_max_px,
        jpeg_quality=jpeg_quality,
        chunk_bytes=chunk_kib * 1024,
    ).check()
    try:  # the files as the link will use them: refused now, not at the first send
        ssl.create_default_context(cafile=str(ca)).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = exc.reason or "unreadable"
        raise InvalidInput(f"--cert, --key, --ca: not PEM files that fit ({reason})") from None
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    paths = config.Paths(root)
    config.write_private(paths.device_key, key.read_bytes())
    shutil.copyfile(cert, paths.device_crt)
    shutil.copyfile(ca, paths.ca)
    config.save(paths, settings)
    Queue(paths.queue).close()
    click.echo(f"device directory {root} ready; next: citygrid device enrol --code CODE")


@device.command("enrol")
@DIR_OPTION
@click.option("--code", required=True, help="One-time code (citygrid pki enrol-code ACCOUNT).")
@reports_errors
def enrol(root: Path, code: str) -> None:
    """Make the device's signing key here (0600) and have CityGrid certify it."""
    from mapserver.device_client import signer

    paths, settings = _open(root)
    link = Link(paths, settings)
    try:
        serial = signer.enrol_key(paths, link, code)
    except LinkDown as exc:
        raise InvalidInput(f"the server cannot be reached: {exc}") from None
    finally:
        link.close()
    click.echo(f"signing certificate {serial} enrolled: {paths.signing_crt}")


def _read_files(files: tuple[Path, ...]) -> list[bytes]:
    return [p.read_bytes() for p in files]


def _gps(value: str) -> tuple[float, float]:
    try:
        lon, lat = (float(v) for v in value.split(","))
    except ValueError:
        raise InvalidInput("--gps is LON,LAT in WGS84 degrees") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidInput("--gps is LON,LAT in WGS84 degrees")
    return lon, lat


PHOTO_OPTION = click.option(
    "--photo",
    "photo_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
)
VOICE_OPTION = click.option(
    "--voice",
    "voice_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A voice recording, AMR or MP3 (repeatable).",
)


@device.command("report")
@DIR_OPTION
@click.option("--kind", type=click.Choice(["event", "component"]), default="event")
@click.option("--major", required=True)
@click.option("--minor", required=True)
@click.option("--description", required=True)
@click.option("--gps", help="LON,LAT: the device's fix (WGS84).")
@click.option("--grid", help="Unit grid code.")
@click.option("--component", help="Component code.")
@click.option("--address", help="Address.")
@PHOTO_OPTION
@VOICE_OPTION
@reports_errors
def report(
    root: Path,
    kind: str,
    major: str,
    minor: str,
    description: str,
    gps: str | None,
    grid: str | None,
    component: str | None,
    address: str | None,
    photo_files: tuple[Path, ...],
    voice_files: tuple[Path, ...],
) -> None:
    """Queue a report (sent by `citygrid device send`)."""
    paths, settings = _open(root)
    places = {
        k: v for k, v in (("grid", grid), ("component", component), ("address", address)) if v
    }
    if len(places) + (gps is not None) != 1:
        raise InvalidInput(
            "place the report by exactly one of --gps, --grid, --component, --address"
        )
    queue = Queue(paths.queue)
    try:
        item = compose.report(
            queue,
            settings,
            kind=kind,
            major=major,
            minor=minor,
            description=description,
            gps=_gps(gps) if gps else None,
            place=places or None,
            photos=_read_files(photo_files),
            voices=_read_files(voice_files),
        )
    finally:
        queue.close()
    click.echo(
        f"queued report {item} with {len(photo_files)} photo(s), {len(voice_files)} recording(s)"
    )


@device.command("result")
@DIR_OPTION
@click.argument("number")
@click.argument("outcome", type=click.Choice(sorted(compose.RESULTS)))
@click.option("--note", default="")
@PHOTO_OPTION
@VOICE_OPTION
@reports_errors
def result(
    root: Path,
    number: str,
    outcome: str,
    note: str,
    photo_files: tuple[Path, ...],
    voice_files: tuple[Path, ...],
) -> None:
    """Queue a verify or check result (pass / fail) for case NUMBER."""
    paths, settings = _open(root)
    queue = Queue(paths.queue)
    try:
        item = compose.result(
            queue,
            settings,
            number=number,
            outcome=outcome,
            note=note,
            photos=_read_files(photo_files),
            voices=_read_files(voice_files),
        )
    finally:
        queue.close()
    click.echo(f"queued {outcome} of {number} as {item}")


@device.command("send")
@DIR_OPTION
@click.option("--quiet", is_flag=True, help="No progress bars.")
@reports_errors
def send(root: Path, quiet: bool) -> None:
    """Send everything queued, in order, until done (retrying with backoff)."""
    from mapserver.device_client import signer
    from mapserver.device_client.progress import RichProgress
    from mapserver.device_client.sender import Halt, Sender

    paths, settings = _open(root)
    queue = Queue(paths.queue)
    link = Link(paths, settings)
    backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
    try:
        key = signer.load(paths)  # before the progress display, which a refusal left open
        with RichProgress(quiet) as progress:
            sender = Sender(queue, link, key, settings.chunk_bytes, backoff, progress=progress)
            summary = sender.drain()
    except Halt as exc:
        fail(str(exc))
    finally:
        queue.close()
    click.echo(
        f"sent {summary.sent}, failed {summary.failed}, retries {summary.retries}, "
        f"{link.requests} requests, {link.body_bytes} body bytes"
    )
    if summary.failed:
        sys.exit(1)


@device.command("status")
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True)
@reports_errors
def status(root: Path, as_json: bool) -> None:
    """What is queued, sent and failed."""
    paths, _ = _open(root)
    queue = Queue(paths.queue)
    try:
        rows = [_shown(i, queue) for i in queue.items()]
    finally:
        queue.close()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        click.echo(
            f"{row['id']:>5} {row['state']:<7} {row['action']:<16} {row['resource']:<20}"
            f" photos {row['photos_done']}/{row['photos']}  {row['number'] or row['error'] or ''}"
        )


def _shown(item: Item, queue: Queue) -> dict[str, Any]:
    photos = queue.photos(item.id)
    answer = json.loads(item.answer) if item.answer else {}
    return {
        "id": item.id,
        "state": item.state,
        "action": item.action,
        "resource": item.resource,
        "photos": len(photos),
        "photos_done": sum(p.attachment is not None for p in photos),
        "photo_sha256": [p.sha256 for p in photos],
        "attachments": [p.attachment for p in photos],
        "number": answer.get("number"),
        "error": item.error,
        "attempts": item.attempts,
    }


def _tasks(link: Link) -> list[dict[str, Any]]:
    """The cases waiting for this inspector, asked now."""
    try:
        answer = link.call("GET", "/device/v1/tasks", {"Accept-Encoding": "gzip"})
    except LinkDown as exc:
        raise InvalidInput(f"the server cannot be reached: {exc}") from None
    data = answer.body
    if answer.status != 200:
        raise InvalidInput(f"tasks refused: {answer.error()[1] or answer.status}")
    try:
        if answer.headers.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        found = json.loads(data)["tasks"]
    except (OSError, EOFError, ValueError, KeyError, TypeError):
        found = None
    if not isinstance(found, list) or not all(
        isinstance(t, dict) and isinstance(t.get("number"), str) for t in found
    ):
        raise InvalidInput("the server's task list is malformed")
    return found


@device.command("tasks")
@DIR_OPTION
@reports_errors
def tasks(root: Path) -> None:
    """The cases waiting for this inspector (asked now), with how many files each has."""
    paths, settings = _open(root)
    link = Link(paths, settings)
    try:
        for task in _tasks(link):
            attached = task.get("attachments")
            files = len(attached) if isinstance(attached, list) else 0
            click.echo(
                f"{task['number']} {task.get('task', ''):<6} {task.get('deadline', '')} "
                f"{task.get('address') or task.get('grid', '')}"
                + (f"  ({files} files: citygrid device files {task['number']})" if files else "")
            )
    finally:
        link.close()


@device.command("files")
@DIR_OPTION
@click.argument("number", required=False)
@click.option("--all", "every", is_flag=True, help="Every task's files (before going out).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to put them (default: DIR/files).",
)
@reports_errors
def files(root: Path, number: str | None, every: bool, out: Path | None) -> None:
    """Bring the photos and recordings of task NUMBER (or of every task, --all) to the
    device, each checked against the hash its case's step signed; a cut link resumes where
    the file stands, and a file the device holds is not asked for again."""
    from mapserver.device_client import downloads

    if (number is None) == (not every):
        raise InvalidInput("name a task's NUMBER or --all, not both")
    paths, settings = _open(root)
    link = Link(paths, settings)
    backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
    try:
        waiting = _tasks(link)
        chosen = waiting if every else [t for t in waiting if t["number"] == number]
        if not chosen and not every:
            raise InvalidInput(f"{number} is not among your tasks (citygrid device tasks)")
        for task in chosen:
            listed = task.get("attachments", [])
            if not isinstance(listed, list):
                raise downloads.DownloadFailed(
                    f"{task['number']}: the task's attachments are not a list"
                )
            for item in listed:
                got = downloads.fetch(
                    link, task["number"], item, out or root / "files",
                    chunk=settings.chunk_bytes, backoff=backoff,
                )  # fmt: skip
                said = "new" if got.new else "held"
                kind = str(item.get("kind", "file"))
                click.echo(f"{got.path}  {kind} {got.bytes} bytes, SHA-256 verified ({said})")
            if not listed and not every:
                click.echo(f"{number} has no photos or recordings")
    finally:
        link.close()


COMMANDS = [device]
