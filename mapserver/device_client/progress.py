"""Progress on the command line with rich: photo bytes acknowledged and items sent."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from mapserver.device_client.queue import Item
from mapserver.device_client.sender import Progress as Base


class RichProgress(Base):
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            disable=quiet,
        )
        self.photos: TaskID | None = None
        self.items: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.bars.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bars.__exit__(kind, exc, tb)

    def start(self, items: int, photo_bytes: int) -> None:
        self.photos = self.bars.add_task("photos", total=photo_bytes)
        self.items = self.bars.add_task(f"{items} items", total=items)

    def bytes(self, n: int) -> None:
        if self.photos is not None:
            self.bars.advance(self.photos, n)

    def item(self, item: Item, outcome: str) -> None:
        if self.items is not None:
            self.bars.advance(self.items, 1)
        if outcome != "sent" and not self.quiet:
            self.bars.console.print(f"item {item.id} {outcome}: {item.error}")

    def retry(self, why: str, wait: float) -> None:
        if not self.quiet:
            self.bars.console.print(f"retry in {wait:.1f} s: {why}", style="dim")
