"""The audit spool against real PostgreSQL and a real disk: an entry is in its spool file
before the writer acknowledges it, is shipped to the queue exactly once, including from the
file of a process killed mid-stream, a line torn by a crash is never shipped, and a writer
whose shipments stall refuses new entries instead of spooling without bound."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import spool
from audit.record import Entry
from audit.sequencer import integrate
from audit.spool import SpoolBehind, SpoolClosed, SpoolWriter
from audit.verify import verify
from audit.writer import GroupCommitWriter, json_row, queued_row
from mapserver.cli import main
from mapserver.settings import Settings

from .conftest import Closing, audit_log_fixtures
from .python_process import run_python
from .sequenced import shipped
from .varied_entries import stored, varied

REPO = Path(__file__).resolve().parent.parent


log, key = audit_log_fixtures("citygrid_spool")


def _queued(settings: Settings, marker: str) -> list[str]:
    """The request ids of queued entries whose action is `marker`, in queue order."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT request_id FROM audit_queue WHERE action = %s ORDER BY id", (marker,)
        ).fetchall()
    return [r for (r,) in rows]


def _spooled_entries(directory: Path, marker: str) -> list[dict[str, Any]]:
    """`marker`'s entries in the spool files, in their order (one writer)."""
    found = []
    for path in directory.glob("*.spool"):
        for line in path.read_bytes().split(b"\0")[0].splitlines():  # the lines, not the room
            e = json.loads(line)["e"]
            if e["action"] == marker:
                found.append(e)
    return found


def _spooled(directory: Path, marker: str) -> list[str]:
    """The request ids of `marker`'s entries in the spool files, in their order."""
    return [e["request_id"] for e in _spooled_entries(directory, marker)]


def _spooled_details(directory: Path, marker: str) -> list[Any]:
    return [e["detail"] for e in _spooled_entries(directory, marker)]


def _verifies(settings: Settings, key: Ed25519PrivateKey) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        integrate(conn, key, 1000, 3600)
    with psycopg.connect(settings.database_url) as conn:
        report = verify(conn, key.public_key())
    assert report.ok, report.problem


def test_entries_are_on_disk_when_acknowledged_then_shipped_once(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    marker = f"spool.{uuid.uuid4().hex[:8]}"

    def one(i: int) -> int:
        return writer.write(Entry(action=marker, request_id=f"r{i}", detail={"n": i, "t": "é\n"}))

    with ThreadPoolExecutor(8) as pool:  # eight request threads at once
        assert sorted(pool.map(one, range(300))) == list(range(1, 301))
    # Acknowledged means flushed: every entry is a line of the spool file by now.
    lines = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("*.spool"))
    assert sum(1 for line in lines.splitlines() if marker.encode() in line) == 300
    assert writer.ship_now(timeout=30)
    assert sorted(_queued(log, marker)) == sorted(f"r{i}" for i in range(300))
    assert sum(n * k for n, k in writer.batch_sizes.items()) == 300
    assert max(writer.batch_sizes) > 1  # a flush covered the lines other threads wrote
    _verifies(log, key)


def test_lines_are_written_over_room_flushed_ahead_and_past_it(
    log: Settings,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    closing: Closing,
) -> None:
    """The shipper writes zeros ahead of the lines (allocated on disk, not a hole) and lines
    go over them, so the file does not grow with each line; a burst that outruns the room
    extends the file as before. Every line is shipped in order, no zero byte with it."""
    room = 16384  # small: the test outruns it
    writer = closing(
        SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool", room=room)
    )
    marker = f"room.{uuid.uuid4().hex[:8]}"
    writer.write(Entry(action=marker, request_id="r0"))
    f = writer._file
    assert f is not None
    deadline = time.monotonic() + 30
    while f.room - f.size < room // 2:  # the shipper's turn, after its first shipment
        assert time.monotonic() < deadline, (f.room, f.size)
        time.sleep(0.01)
    stat = os.stat(f.path)
    assert stat.st_size == f.room > f.size
    assert stat.st_blocks * 512 >= f.room  # written, not a hole
    assert f.path.read_bytes()[f.size :] == bytes(f.room - f.size)

    monkeypatch.setattr(writer, "_make_room", lambda: None)  # a burst the shipper never meets
    sizes = []
    for i in range(1, 120):  # about 60 kB: over the room, then past it
        writer.write(Entry(action=marker, request_id=f"r{i}"))
        sizes.append(os.stat(f.path).st_size)
    assert sizes[0] == stat.st_size  # the first lines went over the zeros
    assert sizes[-1] == f.size > stat.st_size  # the burst went past the room
    assert writer.ship_now(timeout=30)
    assert _queued(log, marker) == [f"r{i}" for i in range(120)]
    with open(f.path, "rb") as fh:
        assert spool.lines_end(fh, 0) == f.size
    _verifies(log, key)


def test_a_writer_without_room_only_appends(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    """`room=0` (a copy-on-write file system gains nothing from zeros written ahead): the file
    holds its lines and nothing after them, shipped or not."""
    writer = closing(
        SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool", room=0)
    )
    marker = f"no-room.{uuid.uuid4().hex[:8]}"
    for i in range(20):
        writer.write(Entry(action=marker, request_id=f"r{i}"))
    assert writer.ship_now(timeout=30)
    f = writer._file
    assert f is not None and f.room == 0
    assert os.stat(f.path).st_size == f.size
    assert _queued(log, marker) == [f"r{i}" for i in range(20)]


def test_flushes_put_off_are_one_flush_when_owed(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    """The sync worker's batch (auth.sync_worker): entries written while flushes are put off
    are admitted and held, not yet in the file, so not durable and not shipped, until the
    PutOff appends them in one write, in their order, and flushes them, all in one flush.
    Left unflushed (the answers were never sent), they are appended, wait for no one and go
    with the next flush."""
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    marker = f"spool.{uuid.uuid4().hex[:8]}"
    writer.write(Entry(action=marker, request_id="a0"))
    details: list[dict[str, object]] = [{"i": i} for i in range(5)]
    with spool.flushes_put_off() as owed:
        numbers = [
            writer.write(Entry(action=marker, request_id=f"b{i}", detail=details[i]))
            for i in range(5)
        ]
        assert numbers == [2, 3, 4, 5, 6] and len(owed) == 5
        details[0]["i"] = "changed after the write"  # the entry holds what it was given
        with pytest.raises(ValueError, match="outcome"):  # refused at once, not at the flush
            writer.write(Entry(action=marker, outcome="maybe", request_id="bad"))
        assert len(owed) == 5
        assert _spooled(tmp_path / "spool", marker) == ["a0"]  # held, not written
        assert writer.batch_sizes == {1: 1}  # a0's own flush
        assert writer.ship_now(timeout=30)
        assert _queued(log, marker) == ["a0"]  # nothing of the batch durable, nothing shipped
        owed.flush()
    assert _spooled(tmp_path / "spool", marker) == ["a0"] + [f"b{i}" for i in range(5)]
    assert writer.batch_sizes == {1: 1, 5: 1}
    assert _spooled_details(tmp_path / "spool", marker)[1:] == [{"i": i} for i in range(5)]
    assert writer.ship_now(timeout=30)
    assert _queued(log, marker) == ["a0"] + [f"b{i}" for i in range(5)]

    with spool.flushes_put_off():
        writer.write(Entry(action=marker, request_id="never-answered"))
    writer.write(Entry(action=marker, request_id="next"))  # flushed at once, with it
    assert writer.batch_sizes == {1: 1, 5: 1, 2: 1}
    assert writer.ship_now(timeout=30)
    assert _queued(log, marker)[-2:] == ["never-answered", "next"]
    _verifies(log, key)


def test_a_failed_put_off_flush_is_raised_and_the_file_abandoned(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    """A flush that fails (here the spool's descriptor is made a pipe's, which cannot be
    flushed) raises from the PutOff, so the worker answers none of the batch; the writer
    goes on in a new file, and the entry never flushed is never shipped."""
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    marker = f"spool.{uuid.uuid4().hex[:8]}"
    writer.write(Entry(action=marker, request_id="before"))
    with spool.flushes_put_off() as owed:
        writer.write(Entry(action=marker, request_id="lost"))
        first = writer._file
        assert first is not None
        readable, writable = os.pipe()
        os.dup2(readable, first.fd)  # the writer's descriptor, now a pipe's (closed by it)
        os.close(readable)
        try:
            with pytest.raises(OSError):
                owed.flush()
        finally:
            os.close(writable)
    assert writer._file is None  # abandoned: the next entry begins a new file
    writer.write(Entry(action=marker, request_id="after"))
    assert writer._file is not first
    assert writer.ship_now(timeout=30)
    assert _queued(log, marker) == ["before", "after"]


def test_a_killed_writers_file_is_adopted_and_shipped_exactly_once(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    directory = tmp_path / "spool"
    marker = f"killed.{uuid.uuid4().hex[:8]}"
    program = textwrap.dedent(
        f"""
        import os, sys, threading
        from pathlib import Path
        from audit import spool
        from audit.keys import signer
        from audit.record import Entry
        spool.SHIP_SECONDS = spool.SHIP_BUSY_SECONDS = 3600.0  # ships its first batch at most
        w = spool.SpoolWriter({log.serving_database_url!r}, signer(Path({str(log.pki_dir)!r})),
                              1000, 3600, Path({str(directory)!r}))
        def client(k):
            for i in range(100000):
                w.write(Entry(action={marker!r}, request_id=f"{{k}}-{{i}}"))
                os.write(1, f"{{k}}-{{i}}\\n".encode())  # one write: lines never interleave
        for k in range(4):
            threading.Thread(target=client, args=(k,), daemon=True).start()
        threading.Event().wait()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    printed: list[bytes] = []
    for line in proc.stdout:
        printed.append(line)
        if len(printed) >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    printed += list(proc.stdout)
    proc.wait()
    acknowledged = [line.decode().strip() for line in printed if line.endswith(b"\n")]
    assert len(_queued(log, marker)) < len(acknowledged)  # most of it waits in the file

    # A process of the same host finds the file nobody holds, ships it and deletes it.
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, directory))
    writer.write(Entry(action="spool.adopter"))
    shipped(log.database_url)
    deadline = time.monotonic() + 30
    while list(directory.glob(f"*-{proc.pid}-*.spool")):
        assert time.monotonic() < deadline, list(directory.iterdir())
        time.sleep(0.05)
    queued = _queued(log, marker)
    assert len(queued) == len(set(queued))  # exactly once
    assert set(acknowledged) <= set(queued)  # nothing acknowledged is lost
    with psycopg.connect(log.database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT path FROM audit_spool").fetchall()
    assert all(Path(p).exists() for (p,) in rows), rows  # the dead file's row is gone too
    _verifies(log, key)


def test_a_spooled_line_stores_what_the_database_queue_stores(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    """A spool line is the entry's canonical JSON and leaf hash, written once: values at the
    edges of a JSON round trip (escapes, a lone surrogate, floats outside the C encoder's
    agreement with RFC 8785, 2^40, nested detail, times with and without microseconds) are
    stored exactly as the database queue's writer stores them, and every leaf verifies.
    Lines of the earlier form (an array of the values), as a spool file of an older release
    holds them when adopted, are shipped alike."""
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    for e in varied("spooled"):
        writer.write(e)
    line = (tmp_path / "spool").glob("*.spool").__next__().read_bytes().split(b"\n")[0]
    assert line.startswith(b'{"e":{"account":"alice","action":"tiles.read",')
    assert writer.ship_now(timeout=30)
    older = tmp_path / "older"
    older.mkdir()
    path = older / f"{spool.HOST}-1-older.spool"
    rows = [json_row(queued_row(e, _now())) for e in varied("arrays")]
    path.write_bytes(("\n".join(rows) + "\n").encode())
    queue = closing(GroupCommitWriter(log.database_url, key, 1000, 3600, connections=1))
    for e in varied("queued"):
        queue.write(e)
    with psycopg.connect(log.serving_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_spool (host, path) VALUES (%s, %s)", (spool.HOST, str(path))
        )
        assert spool.adopt(conn, older, set()) == 1
    _verifies(log, key)
    with psycopg.connect(log.database_url) as conn:
        expected = stored(conn, "queued")
        assert len(expected) == len(varied("x"))
        assert stored(conn, "spooled") == expected
        assert stored(conn, "arrays") == expected


@pytest.mark.parametrize("room", [0, 4096], ids=["at-the-end", "before-room"])
def test_a_torn_line_is_never_shipped(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, room: int
) -> None:
    """A crash in the middle of a write leaves a line without its newline: it was never
    acknowledged, so the adopter ships the lines before it and drops the rest, and the
    zeros of the room written ahead, if any, with it."""
    directory = tmp_path / "spool"
    directory.mkdir()
    marker = f"torn.{uuid.uuid4().hex[:8]}"
    whole = [
        json_row(queued_row(Entry(action=marker, request_id=f"w{i}"), _now())) for i in range(3)
    ]
    torn = json_row(queued_row(Entry(action=marker, request_id="torn"), _now()))
    path = directory / f"{spool.HOST}-1-torn.spool"
    path.write_bytes(("\n".join(whole) + "\n" + torn[: len(torn) // 2]).encode() + bytes(room))
    with psycopg.connect(log.serving_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_spool (host, path) VALUES (%s, %s)", (spool.HOST, str(path))
        )
        assert spool.adopt(conn, directory, set()) == 1
        assert not path.exists()
        assert conn.execute(
            "SELECT count(*) FROM audit_spool WHERE path = %s", (str(path),)
        ).fetchone() == (0,)
    assert _queued(log, marker) == ["w0", "w1", "w2"]
    _verifies(log, key)


def test_a_shipped_offset_never_moves_back(log: Settings) -> None:
    with psycopg.connect(log.serving_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO audit_spool (host, path, shipped) VALUES ('h', '/x', 10)")
        with pytest.raises(psycopg.errors.RaiseException, match="only moves forward"):
            conn.execute("UPDATE audit_spool SET shipped = 0 WHERE host = 'h'")
        conn.execute("DELETE FROM audit_spool WHERE host = 'h'")


@contextlib.contextmanager
def _shipments_stalled(settings: Settings) -> Iterator[None]:
    """The database stalls every shipper: the spool's offset rows are locked by another
    transaction until the block ends."""
    with psycopg.connect(settings.database_url) as blocker:
        blocker.execute("SELECT * FROM audit_spool FOR UPDATE")
        yield
        blocker.rollback()


def test_stalled_shipments_refuse_new_entries_then_recover(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    writer = closing(
        SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool", max_lag=0.5)
    )
    marker = f"stall.{uuid.uuid4().hex[:8]}"
    writer.write(Entry(action=marker, request_id="before"))
    assert writer.ship_now(timeout=30)
    with _shipments_stalled(log):
        writer.write(Entry(action=marker, request_id="stalled"))  # durable on disk: accepted
        deadline = time.monotonic() + 30
        while writer.lag() <= 0.5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(SpoolBehind, match="unshipped"):
            writer.write(Entry(action=marker, request_id="refused"))
    assert writer.ship_now(timeout=30)
    writer.write(Entry(action=marker, request_id="after"))
    assert writer.ship_now(timeout=30)
    assert _queued(log, marker) == ["before", "stalled", "after"]
    _verifies(log, key)


def _killed_writer(settings: Settings, directory: Path, marker: str, count: int) -> None:
    """A process that spools `count` entries of `marker` (shipping at most the first), then is
    killed."""
    program = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from audit import spool
        from audit.keys import signer
        from audit.record import Entry
        spool.SHIP_SECONDS = spool.SHIP_BUSY_SECONDS = 3600.0
        w = spool.SpoolWriter({settings.serving_database_url!r},
                              signer(Path({str(settings.pki_dir)!r})), 1000, 3600,
                              Path({str(directory)!r}))
        for i in range({count}):
            w.write(Entry(action={marker!r}, request_id=f"k{{i}}"))
        os.write(1, b"spooled\\n")
        os.kill(os.getpid(), 9)
        """
    )
    done = run_python(program, b"spooled\n")
    assert done.returncode == -signal.SIGKILL


def test_a_closing_writer_adopts_what_a_killed_process_left(
    log: Settings,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    closing: Closing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop that follows a worker's death closely (before the survivor's next look for
    files nobody holds) still ships the dead worker's entries: a closing writer looks once
    more."""
    monkeypatch.setattr(spool, "ADOPT_SECONDS", 1e9)  # no look while it serves
    directory = tmp_path / "spool"
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, directory))
    writer.write(Entry(action="spool.survivor"))
    marker = f"left.{uuid.uuid4().hex[:8]}"
    _killed_writer(log, directory, marker, 20)
    assert len(list(directory.glob(f"*{spool.SUFFIX}"))) == 2  # the survivor's and the dead's
    assert writer.close()
    queued = _queued(log, marker)
    assert sorted(queued) == sorted(f"k{i}" for i in range(20))  # all, exactly once
    assert not list(directory.glob(f"*{spool.SUFFIX}"))
    _verifies(log, key)


def test_a_leaving_worker_ships_and_integrates_its_last_entries(
    log: Settings, tmp_path: Path
) -> None:
    """gunicorn's worker_exit (deploy/gunicorn/citygrid.conf.py) closes the spool before
    the sequencer's last round: entries answered just before a graceful stop, still waiting
    for the shipper's next shipment, are in the tree when the worker is gone."""
    directory = tmp_path / "spool"
    marker = f"leaving.{uuid.uuid4().hex[:8]}"
    program = textwrap.dedent(
        f"""
        import os, runpy
        from pathlib import Path
        from audit import spool
        from audit.keys import signer
        from audit.record import Entry
        spool.SHIP_BUSY_LINES, spool.SHIP_BUSY_SECONDS = 1, 3600.0  # a pause after each
        w = spool.SpoolWriter({log.serving_database_url!r},
                              signer(Path({str(log.pki_dir)!r})), 1000, 3600,
                              Path({str(directory)!r}))
        w.write(Entry(action={marker!r}, request_id="first"))
        assert w.ship_now(30)  # the shipper now pauses
        for i in range(10):
            w.write(Entry(action={marker!r}, request_id=f"w{{i}}"))
        conf = runpy.run_path({str(REPO / "deploy" / "gunicorn" / "citygrid.conf.py")!r})
        conf["worker_exit"](None, None)
        os.write(1, b"exited\\n")
        os._exit(0)  # gunicorn's worker_exit, then no more (atexit handlers are best effort)
        """
    )
    run_python(program, b"exited\n")
    with psycopg.connect(log.database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT request_id FROM audit_entry WHERE action = %s", (marker,)
        ).fetchall()
    assert sorted(r for (r,) in rows) == sorted(["first", *(f"w{i}" for i in range(10))])
    assert not list(directory.glob(f"*{spool.SUFFIX}"))


def test_a_closed_writer_ships_all_deletes_its_files_and_takes_no_more(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    directory = tmp_path / "spool"
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, directory))
    marker = f"close.{uuid.uuid4().hex[:8]}"
    for i in range(5):
        writer.write(Entry(action=marker, request_id=f"c{i}"))
    shipper = writer._shipper
    assert shipper is not None and shipper.is_alive()
    assert writer.close()
    assert not shipper.is_alive()
    assert _queued(log, marker) == [f"c{i}" for i in range(5)]
    assert not list(directory.glob(f"*{spool.SUFFIX}"))
    with psycopg.connect(log.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM audit_spool WHERE path LIKE %s",
                            (f"{directory}/%",)).fetchone() == (0,)  # fmt: skip
    with pytest.raises(SpoolClosed):
        writer.write(Entry(action=marker, request_id="late"))
    assert writer._shipper is shipper  # no shipper started again
    _verifies(log, key)


def test_a_writer_closed_while_the_database_stalls_leaves_its_file_to_be_adopted(
    log: Settings, key: Ed25519PrivateKey, tmp_path: Path, closing: Closing
) -> None:
    directory = tmp_path / "spool"
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, directory))
    marker = f"close-stalled.{uuid.uuid4().hex[:8]}"
    writer.write(Entry(action=marker, request_id="before"))
    assert writer.ship_now(timeout=30)
    with _shipments_stalled(log):
        writer.write(Entry(action=marker, request_id="unshipped"))
        assert not writer.close(timeout=0.5)
    shipper = writer._shipper
    assert shipper is not None
    shipper.join(30)  # its shipment went through once the lock was gone, or it gave up
    assert not shipper.is_alive()
    # Whatever is left is released: a new writer of the spool adopts and ships it.
    other = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, directory))
    deadline = time.monotonic() + 30
    while _queued(log, marker) != ["before", "unshipped"]:
        assert time.monotonic() < deadline, _queued(log, marker)
        time.sleep(0.05)
    assert other.close()
    deadline = time.monotonic() + 30
    while list(directory.glob(f"*{spool.SUFFIX}")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _verifies(log, key)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_audit_ship_ships_what_stopped_processes_left(log: Settings, tmp_path: Path) -> None:
    directory = tmp_path / "audit-spool"
    directory.mkdir()
    marker = f"cli.{uuid.uuid4().hex[:8]}"
    lines = [
        json_row(queued_row(Entry(action=marker, request_id=f"c{i}"), _now())) for i in range(2)
    ]
    path = directory / f"{spool.HOST}-2-stopped.spool"
    path.write_text("\n".join(lines) + "\n")
    with psycopg.connect(log.serving_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_spool (host, path) VALUES (%s, %s)", (spool.HOST, str(path))
        )
    env = {"CITYGRID_DATABASE_URL": log.database_url, "CITYGRID_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["audit", "ship"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == "audit spool: 1 file(s) shipped, 0 held by running processes\n"
    assert _queued(log, marker) == ["c0", "c1"] and not path.exists()
    # Nothing to ship says so; an unreachable database is one line and a non-zero exit.
    path.write_text(lines[0] + "\n")
    unreachable = {**env, "CITYGRID_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    result = CliRunner().invoke(main, ["audit", "ship"], env=unreachable)
    assert result.exit_code != 0 and "audit spool: not shipped" in result.output
    assert len(result.output.strip().splitlines()) == 1 and path.exists()


def test_a_busy_shipper_pauses_longer_and_ship_now_ends_the_pause(
    log: Settings,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    closing: Closing,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a shipment of SHIP_BUSY_LINES lines or more the shipper waits SHIP_BUSY_SECONDS
    (here an hour) before the next one, unless `ship_now` (or `close`) asks for it."""
    monkeypatch.setattr(spool, "SHIP_BUSY_SECONDS", 3600.0)
    writer = closing(SpoolWriter(log.serving_database_url, key, 1000, 3600, tmp_path / "spool"))
    marker = f"busy.{uuid.uuid4().hex[:8]}"
    with spool.flushes_put_off() as owed:  # durable together: shipped in one shipment
        for i in range(40):
            writer.write(Entry(action=marker, request_id=f"r{i}"))
        owed.flush()
    deadline = time.monotonic() + 30
    while len(_queued(log, marker)) < 40:  # shipped without being asked, at most a few rounds
        assert time.monotonic() < deadline, "the shipper did not ship"
        time.sleep(0.02)
    writer.write(Entry(action=marker, request_id="later"))
    time.sleep(4 * spool.SHIP_SECONDS)  # rounds a shipper that did not pause would have shipped in
    assert "later" not in _queued(log, marker)
    assert writer.ship_now(timeout=30)
    assert "later" in _queued(log, marker)
