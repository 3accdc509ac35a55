"""The audit writer against real PostgreSQL: one refused entry never fails its batch-mates,
and whatever a client sends is stored escaped and capped, with the log still verifying.
The writer queues (audit_queue); the sequencer integrates the queue into the tree."""

from __future__ import annotations

import time
from concurrent.futures import Future

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import storable
from audit.keys import signer
from audit.record import Entry, append
from audit.sequencer import integrate
from audit.verify import verify
from audit.writer import JSON_FROM, GroupCommitWriter
from mapserver import db
from mapserver.settings import Settings

from .conftest import Closing, audit_log_fixtures
from .varied_entries import stored, varied

log, key = audit_log_fixtures("citygrid_writer")


def _sequenced(settings: Settings, key: Ed25519PrivateKey) -> None:
    """One sequencer round now (whichever process leads, rounds never integrate twice)."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        integrate(conn, key, 1000, 3600)


def _verifies(settings: Settings, key: Ed25519PrivateKey) -> None:
    _sequenced(settings, key)
    with psycopg.connect(settings.database_url) as conn:
        report = verify(conn, key.public_key())
    assert report.ok, report.problem


def _wait_for_lock_waiter(settings: Settings) -> None:
    """Until the writer's transaction waits for the queue's table lock held by the test."""
    deadline = time.monotonic() + 20
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the writer never waited for the queue lock")


def _one_batch(
    settings: Settings, writer: GroupCommitWriter, entries: list[Entry]
) -> list[Future[int]]:
    """Submit `entries` while the writer is held on a lock of the queue table, so that they
    are taken from its in-memory queue together, as one batch, once the lock is released."""
    with psycopg.connect(settings.database_url) as locker:
        locker.execute("LOCK TABLE audit_queue IN SHARE MODE")
        blocker = writer.submit(Entry(action="test.blocker"))
        _wait_for_lock_waiter(settings)
        futures = [writer.submit(e) for e in entries]
        locker.rollback()
    blocker.result(timeout=20)
    return futures


def _stored(settings: Settings, request_ids: list[str]) -> dict[str, int]:
    """Queue ids by request id, of the entries queued and of those in the tree (the same)."""
    with psycopg.connect(settings.database_url) as conn:
        queued = conn.execute(
            "SELECT request_id, id FROM audit_queue WHERE request_id = ANY(%s)", (request_ids,)
        ).fetchall()
        logged = conn.execute(
            "SELECT request_id, queue_id FROM audit_entry WHERE request_id = ANY(%s)",
            (request_ids,),
        ).fetchall()
    assert sorted(queued) == sorted(logged)
    return {r: int(i) for r, i in queued}


def test_a_healthy_batch_is_one_commit(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    writer = closing(
        GroupCommitWriter(log.database_url, key, every=1000, seconds=3600, connections=1)
    )
    ids = [f"healthy-{i}" for i in range(5)]
    futures = _one_batch(log, writer, [Entry(action="tiles.read", request_id=r) for r in ids])
    indexes = [f.result(timeout=20) for f in futures]
    assert writer.batch_sizes[5] == 1
    _sequenced(log, key)
    assert _stored(log, ids) == dict(zip(ids, indexes, strict=True))


def test_a_closed_writer_commits_what_is_queued_and_takes_no_more(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    writer = closing(GroupCommitWriter(log.serving_database_url, key, 1000, 3600, connections=2))
    futures = [writer.submit(Entry(action="closing", request_id=f"q{i}")) for i in range(20)]
    threads = [t for t in writer._threads if t is not None]
    assert len(threads) == 2
    assert writer.close()
    assert all(not t.is_alive() for t in threads)
    assert all(isinstance(f.result(timeout=0), int) for f in futures)
    late = writer.submit(Entry(action="closing", request_id="late"))
    with pytest.raises(RuntimeError, match="closed"):
        late.result(timeout=0)
    assert all(t is None or not t.is_alive() for t in writer._threads)  # none started again
    _verifies(log, key)


def test_a_refused_entry_fails_alone(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    """PostgreSQL refuses a status beyond its integer column; the Python side refuses an
    unknown outcome. Either fails only its own request: its batch-mates are committed."""
    writer = closing(
        GroupCommitWriter(log.database_url, key, every=1000, seconds=3600, connections=1)
    )
    good = [f"mate-{i}" for i in range(4)]
    batch = [
        Entry(action="tiles.read", request_id=good[0], status=200),
        Entry(action="tiles.read", request_id="refused-by-db", status=2**40),
        Entry(action="tiles.read", request_id=good[1], status=200),
        Entry(action="tiles.read", request_id="refused-by-check", outcome="maybe"),
        Entry(action="tiles.read", request_id=good[2], status=200),
        Entry(action="tiles.read", request_id=good[3], status=404, outcome="refused"),
    ]
    futures = _one_batch(log, writer, batch)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        futures[1].result(timeout=20)
    with pytest.raises(ValueError, match="outcome"):
        futures[3].result(timeout=20)
    indexes = [f.result(timeout=20) for i, f in enumerate(futures) if i not in (1, 3)]
    _sequenced(log, key)
    assert _stored(log, [*good, "refused-by-db", "refused-by-check"]) == dict(
        zip(good, indexes, strict=True)
    )
    assert indexes == sorted(indexes) and len(set(indexes)) == 4
    # The writer goes on: the next entry is committed on the same connection.
    assert writer.write(Entry(action="tiles.read", request_id="after")) > indexes[-1]
    _verifies(log, key)


def test_entries_held_back_are_committed_together_within_the_interval(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    """Entries submitted with urgent=False (the renderer's accepted answers) wait for the
    batch interval and go in one commit, in the order they were submitted; one that cannot
    be prepared fails at once, alone."""
    writer = closing(
        GroupCommitWriter(
            log.database_url, key, every=1000, seconds=3600, connections=1, interval=1.0
        )
    )
    ids = [f"held-{i}" for i in range(6)]
    futures = [
        writer.submit(Entry(action="renderer.tile", request_id=r), urgent=False) for r in ids
    ]
    broken = writer.submit(Entry(action="renderer.tile", outcome="maybe"), urgent=False)
    assert broken.done()
    with pytest.raises(ValueError, match="outcome"):
        broken.result()
    queued = [f.result(timeout=20) for f in futures]
    assert writer.batch_sizes == {6: 1}
    assert queued == sorted(queued)
    _sequenced(log, key)
    assert _stored(log, ids) == dict(zip(ids, queued, strict=True))


def test_an_urgent_entry_takes_the_held_ones_with_it(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    """An urgent entry (a refusal) is committed at once, and the entries held back so far go
    in its commit, before it; none of them waits out the interval."""
    writer = closing(
        GroupCommitWriter(
            log.database_url, key, every=1000, seconds=3600, connections=1, interval=600
        )
    )
    held = [
        writer.submit(Entry(action="renderer.tile", request_id=f"before-{i}"), urgent=False)
        for i in range(3)
    ]
    refusal = writer.submit(Entry(action="renderer.tile", request_id="refusal", outcome="refused"))
    last = refusal.result(timeout=20)  # not after the interval of ten minutes
    first = [f.result(timeout=20) for f in held]
    assert writer.batch_sizes == {4: 1}
    assert first == sorted(first) and first[-1] < last
    _verifies(log, key)


def test_a_large_batch_stores_what_single_entries_store(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    """A batch of JSON_FROM entries or more goes as one JSON parameter: the stored values are
    those single entries store, each leaf hash verifies, and a refused entry still fails
    alone (its batch-mates are committed one by one)."""
    assert len(varied("x")) >= JSON_FROM
    writer = closing(
        GroupCommitWriter(log.database_url, key, every=1000, seconds=3600, connections=1)
    )
    batched = varied("batched")
    futures = _one_batch(log, writer, batched)
    ids = [f.result(timeout=20) for f in futures]
    assert writer.batch_sizes[len(batched)] == 1 and ids == sorted(ids)
    singles = varied("single")
    for e in singles:
        writer.write(e)
    refused = [
        *varied("json-mate")[:9],
        Entry(action="tiles.read", request_id="big", status=2**40),
    ]
    outcome = _one_batch(log, writer, refused)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        outcome[-1].result(timeout=20)
    assert all(f.result(timeout=20) for f in outcome[:-1])
    _sequenced(log, key)
    with psycopg.connect(log.database_url) as conn:
        assert stored(conn, "batched") == stored(conn, "single")
        assert len(stored(conn, "batched")) == 12
        assert len(stored(conn, "json-mate")) == 9
    _verifies(log, key)


def _writers_waiting(settings: Settings, n: int) -> None:
    """Until `n` connections wait for the queue's table lock held by the test."""
    deadline = time.monotonic() + 20
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0] >= n:
                return
            time.sleep(0.02)
    raise AssertionError(f"fewer than {n} commits in flight")


def test_a_new_batch_does_not_wait_for_the_commit_in_flight(
    log: Settings, key: Ed25519PrivateKey, closing: Closing
) -> None:
    """With two connections, an entry arriving while a batch's commit is held is committed
    over the other connection at once: two commits are in flight together, and each
    request is answered with its own queue id once the hold ends."""
    writer = closing(
        GroupCommitWriter(log.database_url, key, every=1000, seconds=3600, connections=2)
    )
    with psycopg.connect(log.database_url) as locker:
        locker.execute("LOCK TABLE audit_queue IN SHARE MODE")
        first = writer.submit(Entry(action="tiles.read", request_id="in-flight-1"))
        _writers_waiting(log, 1)
        second = writer.submit(Entry(action="tiles.read", request_id="in-flight-2"))
        _writers_waiting(log, 2)  # not queued behind the first batch in this process
        assert not first.done() and not second.done()
        locker.rollback()
    ids = [first.result(timeout=20), second.result(timeout=20)]
    assert len(set(ids)) == 2 and sum(writer.batch_sizes.values()) == 2
    _sequenced(log, key)
    assert _stored(log, ["in-flight-1", "in-flight-2"]) == {
        "in-flight-1": ids[0],
        "in-flight-2": ids[1],
    }
    _verifies(log, key)


def test_hostile_values_are_stored_escaped_and_capped(
    log: Settings, key: Ed25519PrivateKey
) -> None:
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    hostile = Entry(
        action="tiles.read\x00",
        outcome="refused",
        account="eve\x1b[2J",
        method="GET\r\n",
        resource="/tiles/topo500/8/299/328.png\x00" + "x" * 500_000,
        request_id="hostile",
        client_addr="\ud800",
        detail={
            "query": "a\x00b\\x00c\x85",
            "key\x00": "line\nbreak\ttab",
            "big": 2**64,
            "nan": float("nan"),
            "deep": deep,
            "many": list(range(1000)),
        },
    )
    with db.transaction(log) as conn:
        append(conn, [hostile], key)
    with psycopg.connect(log.database_url) as conn:
        row = conn.execute(
            "SELECT action, account, method, resource, client_addr, detail"
            " FROM audit_entry WHERE request_id = 'hostile'"
        ).fetchone()
    assert row is not None
    action, account, method, resource, client_addr, detail = row
    assert action == "tiles.read\\x00"
    assert account == "eve\\x1b[2J"
    assert method == "GET\r\n"  # tab, newline and carriage return are data
    assert client_addr == "\\ud800"
    assert resource.startswith("/tiles/topo500/8/299/328.png\\x00xxx")
    assert len(resource) <= storable.RESOURCE_MAX + 20 and resource.endswith("]")
    assert detail["query"] == "a\\x00b\\\\x00c\\x85"  # an escaped NUL and a sent "\x00" differ
    assert detail["key\\x00"] == "line\nbreak\ttab"
    assert detail["big"] == str(2**64) and detail["nan"] == "nan"
    assert len(detail["many"]) == storable.DETAIL_ITEMS_MAX + 1
    nested, depth = detail["deep"], 1
    while isinstance(nested, list):
        nested, depth = nested[0], depth + 1
    assert depth == storable.DETAIL_DEPTH_MAX and nested.startswith("…")
    _verifies(log, key)


def test_text_escaping() -> None:
    assert storable.text("plain text 中文") == "plain text 中文"
    assert storable.text("a\\b") == "a\\\\b"
    assert storable.text("\x00\x7f\x9f\udfff") == "\\x00\\x7f\\x9f\\udfff"
    cut = storable.text("\x00" * 100, 10)
    assert cut == "\\x00\\x00…[+98]"
    assert storable.text("y" * 300) == "y" * storable.TEXT_MAX + "…[+44]"
    huge = storable.detail({"k": ["z" * 2000] * 100})
    assert list(huge) == ["truncated"] and len(huge["truncated"]) < storable.DETAIL_JSON_MAX + 20


@pytest.mark.parametrize(
    ("detail", "flat"),
    [
        ({"product": "topo500", "level": 7, "via": "accel", "hit": True, "f": 0.5}, True),
        ({"n": None, "text": "x" * storable.FLAT_TEXT_MAX}, True),
        ({"query": "a\x00b"}, False),  # escaped
        ({"k\x85": 1}, False),
        ({"big": 2**60}, False),  # kept as text
        ({"nan": float("nan")}, False),
        ({"long": "x" * (storable.FLAT_TEXT_MAX + 1)}, False),  # stored whole, not flat
        ({"list": [1, 2]}, False),
        ({str(i): i for i in range(storable.FLAT_MOST + 1)}, False),
        ({7: "a key that is no text"}, False),
    ],
)
def test_a_flat_detail_is_stored_as_the_general_path_makes_it(
    detail: dict[object, object], flat: bool
) -> None:
    """The fast path for small flat details (storable.detail) returns what the general
    escaping and capping returns, for details it takes and for those it leaves."""
    assert storable._flat_and_plain(detail) is flat  # type: ignore[arg-type]
    assert storable.detail(detail) == storable._plain(dict(detail), 0)  # type: ignore[arg-type]


def test_cli_audit_verify_passes_over_escaped_entries(log: Settings) -> None:
    """`citygrid audit verify` recomputes the same leaves from the stored, escaped rows."""
    from click.testing import CliRunner

    from mapserver.cli import main

    with db.transaction(log) as conn:
        append(conn, [Entry(action="cli\x00check", resource="\x07" * 5000)], signer(log.pki_dir))
    result = CliRunner().invoke(
        main,
        ["audit", "verify"],
        env={"CITYGRID_DATABASE_URL": log.database_url, "CITYGRID_DATA_DIR": str(log.data_dir)},
    )
    assert result.exit_code == 0, result.output
