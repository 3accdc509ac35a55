"""How an answer moves a queued step on: the exceptions the sender acts on."""

from __future__ import annotations

from mapserver.device_client.plan import Answer, Verdict, classify


class Again(Exception):
    """Try the step again: after a backoff, or at once."""

    def __init__(
        self,
        why: str,
        retry_after: float | None = None,
        at_once: bool = False,
        fault: bool = False,
    ):
        super().__init__(why)
        self.retry_after = retry_after
        self.at_once = at_once
        self.fault = fault  # the server failed on it: tried a bounded number of times


class TokenExpired(Exception):
    pass


class Stale(Exception):
    """The signature is too old to be taken: sign again."""


class Refused(Exception):
    """The server will never take the item as it is: it fails, the queue goes on."""


def checked(answer: Answer) -> Answer:
    verdict = classify(answer)
    if verdict is Verdict.OK:
        return answer
    code, message = answer.error()
    if verdict is Verdict.RETRY:
        raise Again(f"HTTP {answer.status} {code}", answer.retry_after())
    if verdict is Verdict.FAULT:
        said = f"HTTP {answer.status} {code}: {message}".strip(" :")
        raise Again(said, answer.retry_after(), fault=True)
    if verdict is Verdict.TOKEN:
        raise TokenExpired(message)
    if verdict is Verdict.RESIGN:
        raise Stale(message)
    raise Refused(f"HTTP {answer.status} {code}: {message}".strip())
