"""Exponential backoff with full jitter (pure: the random source is passed in)."""

from __future__ import annotations

import random
from typing import NamedTuple


class Backoff(NamedTuple):
    base_s: float = 1.0  # the first retry waits up to this
    cap_s: float = 300.0  # and no retry waits longer

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (1, 2, …): uniform in
        [0, min(cap, base·2^(attempt−1))], so that many devices do not retry in step."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(max(attempt - 1, 0), 30))
        return rng.uniform(0, ceiling)

    def after(self, attempt: int, rng: random.Random, retry_after: float | None) -> float:
        """The delay, but never shorter than a server's Retry-After (capped)."""
        wait = self.delay(attempt, rng)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap_s))
        return wait
