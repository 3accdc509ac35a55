"""Case acts on a real server (gunicorn, mutual TLS, 2 workers) while parts of it fail: the
audit log unable to take entries, a worker killed in the middle of an act. A step is either
done, signed and audited once, or not done at all; the client's retry of the same signed
body is safe."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from mapserver import db

from .app_client import SECRET, Install
from .conftest import demo_database
from .sequenced import sequenced
from .test_cases import Desk
from .tls import REFUSED, Reply, Server, request


class Floor:
    """The desk's people and a real server over their database."""

    def __init__(self, desk: Desk, server: Server):
        self.desk = desk
        self.server = server
        self.url = desk.install.settings.database_url

    def post(self, who: str, path: str, body: Any) -> Reply:
        return self.get(
            who,
            path,
            method="POST",
            body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )

    def get(self, who: str, path: str, **sent: Any) -> Reply:
        out = self.desk.install.out
        return request(
            self.server.port,
            path,
            self.desk.install.store.cert_path,
            out / f"cs-{who}.crt",
            out / f"cs-{who}.key",
            **sent,
        )

    def spread(self, who: str, path: str) -> None:
        """16 reads at once: each worker answers some."""
        with ThreadPoolExecutor(8) as pool:
            assert {r.status for r in pool.map(lambda _: self.get(who, path), range(16))} == {200}

    def signed(self, who: str, number: str, name: str, **params: Any) -> dict[str, str]:
        return self.desk.install.envelope(f"cs-{who}", f"case.{name}", f"case {number}", params)

    def new_case(self, upto: int = 0) -> str:
        """A recorded case, taken `upto` steps towards a bureau's handling."""
        number = str(self.desk.record().get_json()["number"])
        steps = [
            ("operator", "accept", {}),
            ("leader", "file", {}),
            ("dispatcher", "dispatch", {"bureau": self.desk.bureau}),
            ("bureau", "receive", {}),
        ]
        for who, name, params in steps[:upto]:
            assert self.desk.act(who, number, name, **params).status_code == 200, name
        return number

    def acts_logged(self, number: str) -> list[tuple[str, int, str | None]]:
        """(action, status, case_version) of the case's acts the audit queue holds."""
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT action, status, detail ->> 'case_version' FROM audit_queue"
                " WHERE resource = %s AND method = 'POST' ORDER BY id",
                (f"case {number}",),
            ).fetchall()
        return [(str(a), int(s), v) for a, s, v in rows]


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Floor]:
    settings = demo_database("citygrid_case_faults", tmp_path_factory.mktemp("faults-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("faults-certs"), rate_limit_api="*=100000/hour"
    )
    desk = Desk(install)
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
        }
    )
    try:
        server.wait_ready()
        yield Floor(desk, server)
    finally:
        server.stop()
        install.close()
        db.drop_database(settings)


def test_an_act_the_audit_log_cannot_take_is_either_logged_or_not_done(floor: Floor) -> None:
    """Audit shipments stalled past the spool's bound (a worker then answers 503): a step
    sent then was committed and answered 503, with no audit entry for it ever; the client's
    retry was refused as stale. Now the step commits with its entry, or not at all."""
    number = floor.new_case(upto=1)
    body = floor.signed("leader", number, "file", **{"from": "accepted"})
    floor.spread("leader", f"/cases/{number}")  # each worker's spool file registered
    with psycopg.connect(floor.url) as blocker:
        blocker.execute("LOCK TABLE audit_spool IN ACCESS EXCLUSIVE MODE")  # shipments stall
        floor.spread("leader", f"/cases/{number}")  # an unshipped entry in each worker
        deadline = time.monotonic() + 30
        while floor.get("leader", f"/cases/{number}").status != 503:  # past the bound
            assert time.monotonic() < deadline, "the spool never fell behind"
            time.sleep(0.2)
        reply = floor.post("leader", f"/cases/{number}/file", body)
        after = floor.desk.snapshot(number)
        blocker.rollback()
    assert reply.status in (200, 503), reply
    assert "Traceback" not in reply.body.decode()
    sequenced(floor.url)
    logged = [a for a in floor.acts_logged(number) if a[0] == "case.file"]
    if reply.status == 503:
        assert reply.json()["error"] == "unavailable"
        assert after[:2] == ("accepted", 2), after  # nothing done
        assert not any(status == 200 for _, status, _ in logged), logged
    else:
        assert after[:2] == ("filed", 3), after
        assert logged == [("case.file", 200, "3")], logged


def _workers(server: Server) -> set[int]:
    """The gunicorn workers: the serving process's children."""
    found: set[int] = set()
    for task in os.listdir(f"/proc/{server.proc.pid}/task"):
        with open(f"/proc/{server.proc.pid}/task/{task}/children") as f:
            found |= {int(p) for p in f.read().split()}
    return found


def _wait_for_lock(url: str, sent: Future[Reply]) -> None:
    """Until a request waits for a case's row lock (its own connection: a transaction's
    pg_stat_activity is a snapshot)."""
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%%FROM city_case%%FOR UPDATE%%'"
        ).fetchone():
            assert time.monotonic() < deadline and not sent.done(), "the act never waited"
            time.sleep(0.02)


def test_a_worker_killed_in_the_middle_of_an_act_leaves_it_undone_and_the_retry_safe(
    floor: Floor,
) -> None:
    """Every worker SIGKILLed while a dispatch waits for the case's row: nothing of it stays
    (its nonce unspent), the client's retry of the very same signed body is done once and
    logged once, and a third sending is refused as a replay."""
    number = floor.new_case(upto=2)
    body = floor.signed(
        "dispatcher", number, "dispatch", bureau=floor.desk.bureau, **{"from": "filed"}
    )
    path = f"/cases/{number}/dispatch"
    with ThreadPoolExecutor(1) as pool, psycopg.connect(floor.url) as blocker:
        blocker.execute("SELECT 1 FROM city_case WHERE number = %s FOR UPDATE", (number,))
        sent = pool.submit(floor.post, "dispatcher", path, body)
        _wait_for_lock(floor.url, sent)
        killed = _workers(floor.server)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(REFUSED):
            sent.result(30)
        blocker.rollback()
    assert floor.desk.snapshot(number)[:2] == ("filed", 3)
    deadline = time.monotonic() + 60
    while True:  # the killed workers' backends gone, new workers serving
        try:
            retried = floor.post("dispatcher", path, body)
            break
        except REFUSED:
            assert time.monotonic() < deadline, "no worker came back"
            time.sleep(0.1)
    assert retried.status == 200, retried
    assert not killed & _workers(floor.server)
    again = floor.post("dispatcher", path, body)
    assert again.status == 400 and "replayed" in again.json()["message"], again
    state, version, bureau, events = floor.desk.snapshot(number)
    assert (state, version, bureau, events) == ("dispatched", 4, floor.desk.bureau, 4)
    sequenced(floor.url)
    done = [a for a in floor.acts_logged(number) if a[0] == "case.dispatch" and a[1] == 200]
    assert done == [("case.dispatch", 200, "4")], floor.acts_logged(number)
