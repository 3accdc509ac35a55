"""The rate limiter's leases, against the real Redis: blocks of a fast client's requests are
counted at once, a slow client's one by one, and no worker's lease lets a request past the
limit."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mapserver import rate_limits
from mapserver.rate_limits import (
    LEASE_SECONDS,
    Lease,
    Limiter,
    block_most,
    next_block,
    retry_after,
)
from mapserver.settings import Settings


class Counted:
    """The limiter's script, called through, with its round trips counted."""

    def __init__(self, script: Any):
        self.script = script
        self.calls = 0

    def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        return self.script(**kwargs)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(Settings().redis_url)
    yield conn
    conn.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"{rate_limits.PREFIX}:test-{uuid.uuid4().hex}"
    yield name
    for k in client.scan_iter(f"{name}:*"):
        client.delete(k)


def limiter(client: redis.Redis) -> tuple[Limiter, Counted]:
    worker = Limiter(client, lambda roles: (0, 1), lambda roles: (0, 1), "tiles")
    counted = Counted(worker.script)
    worker.script = counted
    return worker, counted


def counted_in_redis(client: redis.Redis, key: str) -> int:
    return sum(int(client.get(k) or 0) for k in client.scan_iter(f"{key}:*"))


def test_a_fast_client_is_counted_in_growing_blocks(client: redis.Redis, key: str) -> None:
    worker, script = limiter(client)
    amount, window = 1200, 3600  # a block of at most 18
    answers = [worker.count(key, amount, window) for _ in range(100)]
    assert answers == [None] * 100
    # Blocks of 1, 2, 4, 8 and 16 (31 requests), then of 18: 100 requests in nine round
    # trips, and the last block's 3 unused requests counted ahead.
    assert script.calls == 9
    assert counted_in_redis(client, key) == 31 + 18 * 4 == 103
    assert worker.leases[key].left == 3
    assert worker.leases[key].block == block_most(amount) == 18


def test_a_small_limit_is_counted_one_by_one_and_exactly(client: redis.Redis, key: str) -> None:
    worker, script = limiter(client)
    answers = [worker.count(key, 30, 3600) for _ in range(31)]
    assert answers[:30] == [None] * 30
    assert answers[30] is not None and answers[30] > 0  # Retry-After, not counted
    assert script.calls == 31
    assert counted_in_redis(client, key) == 30


def test_workers_leases_never_pass_the_limit(client: redis.Redis, key: str) -> None:
    """Two workers, four threads each, far more requests than the limit: Redis counts exactly
    the limit, and the workers answer it less at most what their last leases left unused."""
    amount = 640  # blocks of at most 10
    workers = [limiter(client)[0] for _ in range(2)]
    allowed = [0] * 8
    start = threading.Barrier(8)

    def hammer(i: int) -> None:
        start.wait()
        for _ in range(200):
            if workers[i % 2].count(key, amount, 3600) is None:
                allowed[i] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counted_in_redis(client, key) == amount
    unused = sum(lease.left for w in workers for lease in w.leases.values())
    assert sum(allowed) == amount - unused
    assert unused <= 2 * block_most(amount)


def test_an_outage_is_refused_once_the_lease_is_used(client: redis.Redis, key: str) -> None:
    worker, _ = limiter(client)
    for _ in range(7):  # blocks of 1, 2 and 4, all used
        assert worker.count(key, 1200, 3600) is None
    lease = worker.leases[key]
    assert lease.left == 0 and lease.block == 4
    # Redis becomes unreachable: the next block cannot be counted, and the error is the
    # caller's 503 (mapserver.errors), not an answer.
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=2)
    worker.script = dead.register_script(rate_limits.SLIDING_WINDOW)
    with pytest.raises(redis.ConnectionError):
        worker.count(key, 1200, 3600)


def test_a_lease_ends_with_its_window_and_its_age() -> None:
    lease = Lease(number=7, left=5, block=8, granted=100.0)
    assert lease.take(7, 100.5) and lease.left == 4
    assert not lease.take(8, 100.6)  # the next fixed window
    assert not lease.take(7, 100.0 + LEASE_SECONDS)  # too old: Redis is asked again
    assert lease.left == 4


def test_blocks_double_only_when_used_up_quickly() -> None:
    used_up = Lease(number=1, left=0, block=4, granted=10.0)
    assert next_block(used_up, 10.5, most=18) == 8
    assert next_block(Lease(number=1, left=0, block=16, granted=10.0), 10.5, most=18) == 18
    assert next_block(used_up, 11.5, most=18) == 1  # a slow client: one at a time again
    assert next_block(Lease(number=1, left=2, block=4, granted=10.0), 10.5, most=18) == 1
    assert next_block(None, 10.0, most=18) == 1
    assert block_most(30) == 1 and block_most(600) == 9 and block_most(100_000) == 32


def test_a_window_edge_admits_no_request_past_the_limit(client: redis.Redis, key: str) -> None:
    """Just after a window ends, its count still weighs almost whole: with 3 of a limit of
    3 in it, a request 5 % into the next window is refused (2.85 + 1 would pass 3), one at a
    third is admitted (2.0 + 1). It was admitted at 5 % once (a room of 0.15 was taken for
    one request), and a test asking four times near a minute's end saw no 429."""
    script = client.register_script(rate_limits.SLIDING_WINDOW)
    keys = [f"{key}:101", f"{key}:100"]
    client.set(keys[1], 3)

    def ask(passed: float) -> list[int]:
        return [int(v) for v in script(keys=keys, args=[3, 60, passed, 1])]

    assert ask(0.05) == [0, 0, 3]
    assert ask(0.30) == [0, 0, 3]  # 2.1 + 1 still passes 3
    assert ask(0.34) == [1, 1, 3]  # 1.98 + 1: admitted, and counted
    assert ask(0.40) == [0, 1, 3]  # 1.8 + 1 + 1 passes 3
    # Retry-After names when the next request has room: at a third of the window (20 s) for
    # the first, at two thirds (40 s) once one is counted, the next window once two are.
    assert retry_after(3, 60, 3.0, 0, 3) == 17
    assert retry_after(3, 60, 24.0, 1, 3) == 16
    assert retry_after(3, 60, 24.0, 2, 3) == 36
