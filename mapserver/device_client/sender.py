"""Sends the queue in order. Each item: its photos (tus), then its signed change under its
Idempotency-Key. A step that fails on the link or with a passing server error (429, 502,
503, 504) is tried again after an exponential backoff with jitter, for as long as it takes;
one the server fails on (500 and the other 5xx) MAX_FAULTS times, nothing moving between,
fails that item with the server's answer, as a refusal does, and the queue goes on. State
is in the queue after every step, so a killed client resumes where it stopped."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from typing import NamedTuple

from mapserver.device_client import plan
from mapserver.device_client.backoff import Backoff
from mapserver.device_client.link import Link, LinkDown, TokenRefused
from mapserver.device_client.queue import Item, Queue
from mapserver.device_client.signer import Signer
from mapserver.device_client.steps import Again, Refused, Stale, TokenExpired, checked
from mapserver.device_client.upload import upload

MAX_TOKEN_RENEWALS = 3  # a token refused again at once is not a token problem
# A server error that comes again and again is the server's answer to this request, not a
# bad moment: a retry under the same key still gets a change the server made before failing.
MAX_FAULTS = 5


class Halt(Exception):
    """Nothing can be sent (the device is refused a token): the queue stays as it is."""


class Summary(NamedTuple):
    sent: int
    failed: int
    retries: int


class Progress:
    """What the sender tells as it goes (the command line shows it with rich)."""

    def start(self, items: int, photo_bytes: int) -> None: ...
    def bytes(self, n: int) -> None: ...
    def item(self, item: Item, outcome: str) -> None: ...
    def retry(self, why: str, wait: float) -> None: ...


class Sender:
    def __init__(
        self,
        queue: Queue,
        link: Link,
        signer: Signer,
        chunk_bytes: int,
        backoff: Backoff,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        progress: Progress | None = None,
    ):
        self.queue, self.link, self.signer = queue, link, signer
        self.chunk_bytes, self.backoff = chunk_bytes, backoff
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.progress = progress or Progress()
        self._moved = 0  # bytes acknowledged: progress resets the backoff

    def drain(self) -> Summary:
        pending = self.queue.pending()
        self.progress.start(len(pending), self.queue.bytes_left())
        sent = failed = retries = 0
        for item in pending:
            outcome, tries = self._one(item)
            retries += tries
            if outcome == "sent":
                sent += 1
            else:
                failed += 1
            self.progress.item(self.queue.item(item.id), outcome)
        self.link.close()
        return Summary(sent, failed, retries)

    def _advance(self, n: int) -> None:
        if n > 0:
            self._moved += n
            self.progress.bytes(n)

    def _one(self, item: Item) -> tuple[str, int]:
        attempt = renewals = tries = faults = 0
        moved = self._moved
        renew = False
        while True:
            try:
                if renew:
                    renew = False
                    self.link.token(renew=True)
                self._send(item.id)
                return "sent", tries
            except Refused as exc:
                self.queue.failed(item.id, str(exc))
                return "failed", tries
            except TokenExpired as exc:
                renewals += 1
                if renewals > MAX_TOKEN_RENEWALS:
                    self.queue.failed(item.id, f"refused with a fresh token: {exc}")
                    return "failed", tries
                renew = True
            except Stale:
                self.queue.resign(item.id)
            except (Again, LinkDown, TokenRefused) as exc:
                if isinstance(exc, TokenRefused):
                    if plan.classify(exc.answer) is plan.Verdict.REFUSED:
                        raise Halt(f"the server refuses this device a token: {exc}") from None
                    renew = True
                tries += 1
                if isinstance(exc, Again) and exc.at_once:
                    continue
                if self._moved != moved:  # something got through since: start small again
                    attempt, faults, moved = 0, 0, self._moved
                if _fault(exc):
                    faults += 1
                    if faults >= MAX_FAULTS:
                        said = f"{exc} ({faults} times)"
                        if isinstance(exc, TokenRefused):
                            raise Halt(f"the server fails to give a token: {said}") from None
                        self.queue.failed(item.id, said)
                        return "failed", tries
                attempt += 1
                self.queue.tried(item.id)
                retry_after = exc.retry_after if isinstance(exc, Again) else None
                wait = self.backoff.after(attempt, self.rng, retry_after)
                self.progress.retry(str(exc), wait)
                self.sleep(wait)

    def _send(self, item_id: int) -> None:
        for photo in self.queue.photos(item_id):
            if photo.attachment is None:
                upload(self.link, self.queue, photo, self.chunk_bytes, self._advance)
        item = self.queue.item(item_id)
        if item.body is None:
            nonce = checked(self.link.call("POST", "/auth/nonce")).json()["nonce"]
            attachments = [p.attachment or "" for p in self.queue.photos(item_id)]
            body = plan.body(
                item.action,
                item.resource,
                item.params,
                attachments,
                item.beside,
                str(nonce),
                dt.datetime.now(dt.UTC),
                self.signer,
            )
            self.queue.signed(item_id, body)  # committed before it is first sent
            item = self.queue.item(item_id)
        assert item.body is not None
        headers = {"Idempotency-Key": item.key, "Content-Type": "application/json"}
        answer = checked(self.link.call("POST", item.path, headers, item.body))
        self.queue.sent(item_id, answer.body.decode("utf-8", "replace"))


def _fault(exc: Exception) -> bool:
    """The server failed on the request (not a passing moment, not the link)."""
    if isinstance(exc, TokenRefused):
        return plan.classify(exc.answer) is plan.Verdict.FAULT
    return isinstance(exc, Again) and exc.fault
