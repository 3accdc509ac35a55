"""Several stateless gateways behind one nginx: two `citygrid serve --behind-nginx` processes
(same PostgreSQL database, same Redis, same data directory and so the same token key) on
their own Unix sockets, one nginx with mutual TLS in front rendered from deploy/nginx with
both sockets. A token issued by one gateway is accepted by the other, a rate limit is hit
across both, and SIGKILLing one gateway (its arbiter and workers at once) under load costs
no GET and no audit entry: nginx passes the requests the dead one dropped to the survivor,
which also takes over the audit sequencer if the dead one led it."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner

from auth import accounts, certs, pki
from auth.ca_store import CaStore
from auth.tokens import KeySet
from mapserver import db
from mapserver.cli import main
from mapserver.serve import prepare_tls
from mapserver.settings import Settings

from .conftest import demo_database
from .load import Load, kill_group, sequencer_leader
from .nginx_front import NGINX_MISSING, App, Nginx, render, tls_get
from .sequenced import sequenced
from .tls import Reply, free_port

IN_CI = os.environ.get("CI", "").lower() == "true"
SECRET = "gateways test passphrase"
LIMITED = 12  # API requests per hour for the inspector role: the shared limit under test

pytestmark = pytest.mark.skipif(NGINX_MISSING and not IN_CI, reason="nginx is not installed")

# Which gateway answered each request, and after which failed attempts (test-only log).
ACCESS_LOG = (
    """log_format gateways '$request_method $status "$upstream_addr" "$upstream_status"';"""
    " access_log {path} gateways;"
)


@dataclass
class Front:
    settings: Settings
    port: int
    ca: Path
    out: Path
    gateways: list[App]
    access_log: Path

    def get(self, path: str, who: str, **kw: Any) -> Reply:
        """Through nginx, with `who`'s client certificate."""
        cert, key = self.out / f"{who}.crt", self.out / f"{who}.key"
        return tls_get(self.port, path, self.ca, cert, key, **kw)

    def direct(
        self, gateway: int, path: str, who: str, method: str = "GET", **headers: str
    ) -> Reply:
        """Straight to one gateway's socket, with the headers nginx sends for `who`."""
        conn = _UnixConnection(self.gateways[gateway].sock)
        try:
            conn.request(
                method,
                path,
                headers={
                    "X-SSL-Client-Cert": quote((self.out / f"{who}.crt").read_text()),
                    "X-SSL-Client-Verify": "SUCCESS",
                    "X-Real-IP": "127.0.0.1",
                    **headers,
                },
            )
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("localhost", timeout=20)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    if NGINX_MISSING:
        pytest.fail("nginx is not installed; CI requires the nginx tests to run")
    tmp = tmp_path_factory.mktemp("gateways")
    # nginx's workers open the sockets and send cached tiles: both directories must be
    # traversable by them (pytest's are 0700).
    data_dir = Path(tempfile.mkdtemp(prefix="citygrid-gws-var-"))
    data_dir.chmod(0o711)
    sock_dir = Path(tempfile.mkdtemp(prefix="citygrid-gws-"))
    sock_dir.chmod(0o711)
    settings = demo_database("citygrid_gws", data_dir)
    store = CaStore(settings.pki_dir)
    store.init(SECRET.encode())
    out = tmp / "certs"
    out.mkdir()
    with db.transaction(settings) as conn:
        for name, role in [
            ("gws-viewer", "viewer"),
            ("gws-other", "viewer"),
            ("gws-limited", "inspector"),
        ]:
            accounts.add(conn, name, [role], "street-001")
            certs.issue(conn, store, SECRET.encode(), name, pki.Kind.PERSON, out)
        certs.publish_crl(conn, store, SECRET.encode())
    os.environ["CITYGRID_CA_PASSPHRASE"] = SECRET
    try:
        prepare_tls(settings, "127.0.0.1")  # nginx's server certificate
    finally:
        del os.environ["CITYGRID_CA_PASSPHRASE"]
    KeySet(settings.pki_dir / "jwt").rotate()  # the one token key both gateways read
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_RATE_LIMIT_TILES": "*=100000/hour",
        "CITYGRID_RATE_LIMIT_API": f"*=100000/hour,inspector={LIMITED}/hour",
    }
    socks = [sock_dir / "gateway-1.sock", sock_dir / "gateway-2.sock"]
    port = free_port()
    conf = render(f"127.0.0.1:{port}", "127.0.0.1", settings.pki_dir, socks, settings.tile_dir)
    access_log = tmp / "access.log"
    gateways = [App(env, sock) for sock in socks]
    nginx = Nginx(tmp, conf, port, ACCESS_LOG.format(path=access_log))
    try:
        for gateway in gateways:
            gateway.wait_ready()
        nginx.wait_ready()
        yield Front(settings, port, store.cert_path, out, gateways, access_log)
    finally:
        for gateway in gateways:
            gateway.stop()
        nginx.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        db.drop_database(settings)


def test_a_token_from_one_gateway_is_accepted_by_the_other(front: Front) -> None:
    """Sessionless: nothing of a token lives in the gateway that issued it."""
    issued = front.direct(0, "/auth/token", "gws-viewer", method="POST")
    assert issued.status == 200
    bearer = f"Bearer {issued.json()['access_token']}"
    other = front.direct(1, "/auth/whoami", "gws-viewer", Authorization=bearer)
    assert other.status == 200 and other.json()["account"] == "gws-viewer"
    # Still bound to the certificate it was issued over, on either gateway.
    stolen = front.direct(1, "/auth/whoami", "gws-other", Authorization=bearer)
    assert stolen.status == 401
    through = front.get("/auth/whoami", "gws-viewer", headers={"Authorization": bearer})
    assert through.status == 200 and through.json()["account"] == "gws-viewer"


def test_a_rate_limit_is_counted_across_both_gateways(front: Front) -> None:
    """Half the limit on each gateway: neither has seen the limit, together they have."""
    half = LIMITED // 2
    for gateway in (0, 1):
        statuses = [
            front.direct(gateway, "/auth/whoami", "gws-limited").status for _ in range(half)
        ]
        assert statuses == [200] * half
    for gateway in (0, 1):
        over = front.direct(gateway, "/auth/whoami", "gws-limited")
        assert over.status == 429 and over.json()["error"] == "too_many_requests"
    assert front.get("/auth/whoami", "gws-limited").status == 429


def _kind(n: int) -> str:
    """A client's n-th request: mostly cached tiles, some API reads, a few token POSTs."""
    return "post" if n % 10 == 0 else "api" if n % 10 in (1, 5) else "tile"


def _attempts(access_log: Path) -> list[tuple[str, int, list[str], list[str]]]:
    """nginx's log: method, status, the gateways tried in order and what each answered."""
    rows = []
    for line in access_log.read_text().splitlines():
        method, status, addrs, answers = line.split(" ", 2)[0:2] + line.split('"')[1:4:2]
        rows.append((method, int(status), addrs.split(", "), answers.split(", ")))
    return rows


def test_killing_a_gateway_under_load(front: Front) -> None:
    """SIGKILL the gateway whose worker leads the audit sequencer, mid-load: no GET fails
    (nginx passes what the dead one dropped to the survivor), only POSTs in flight at the
    kill may (nginx never replays them), every 200 has exactly one audit entry, the log
    verifies and the survivor's sequencer leads."""
    url = front.settings.database_url
    tile = front.get("/tiles/topo2000", "gws-viewer").json()["levels"][-1]
    path = f"/tiles/topo2000/{tile['level']}/{tile['tiles']['x_min']}/{tile['tiles']['y_min']}.png"
    # Warm-up, all at once: a worker's first tile request loads the tile service, and the
    # first of all renders the tile (the others wait for it): cached from now on.
    with ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda i: front.direct(i % 2, path, "gws-viewer").status, range(8)))
    assert warm == [200] * 8
    token = front.get("/auth/token", "gws-viewer", method="POST").json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    sequenced(url)
    with psycopg.connect(url) as conn:
        mark = conn.execute("SELECT coalesce(max(id), 0) FROM audit_queue").fetchone()[0]  # type: ignore[index]
    logged_before = len(front.access_log.read_text().splitlines())

    def send(n: int) -> Reply:
        kind = _kind(n)
        if kind == "post":
            return front.get("/auth/token", "gws-viewer", method="POST")
        if kind == "api":
            return front.get("/auth/whoami", "gws-viewer", headers=bearer)
        return front.get(path, "gws-viewer")

    leader = sequencer_leader(url)
    [victim] = [g for g in front.gateways if g.proc.pid == os.getpgid(leader)]
    [survivor] = [g for g in front.gateways if g is not victim]
    with Load(send, clients=8) as load:
        load.answers_reach(100)
        killed = kill_group(victim.proc)
        load.answers_reach(len(load.answered) + 100)  # served on by the survivor
        successor = sequencer_leader(url, other_than=leader)
    assert os.getpgid(successor) == survivor.proc.pid

    outcomes = load.outcomes
    failed = [o for o in outcomes if o.status != 200]
    in_flight = [o for o in outcomes if o.in_flight(killed)]
    # No GET fails; a POST may fail only if it was in flight, with nginx's JSON 502.
    assert [o for o in failed if _kind(o.n) != "post"] == []
    assert all(o.in_flight(killed) and o.status == 502 for o in failed), failed
    attempts = _attempts(front.access_log)[logged_before:]
    retried = [a for a in attempts if len(a[2]) > 1]
    victim_sock = f"unix:{victim.sock}"
    # nginx noticed: a request the dead gateway dropped or refused went on to the survivor
    # (or, a POST, failed); then the dead one is skipped (fail_timeout).
    assert retried or failed
    assert all(a[2][0] == victim_sock and a[3][-1] == "200" for a in retried), retried
    after_kill = [a for a in attempts if a[3][-1] == "200"][-50:]
    assert all(a[2][-1] == f"unix:{survivor.sock}" for a in after_kill)

    # Every 200 has exactly one entry; entries beyond the 200s are requests the dead
    # gateway had logged but never answered (nginx retried or failed them).
    answered = load.answered
    sequenced(url)
    with psycopg.connect(url) as conn:
        per_request: dict[str, int] = dict(
            conn.execute(
                "SELECT request_id, count(*) FROM audit_entry WHERE request_id = ANY(%s)"
                " GROUP BY request_id",
                (answered,),
            ).fetchall()
        )
        entries = conn.execute(
            "SELECT count(*) FROM audit_entry WHERE queue_id > %s AND account = 'gws-viewer'",
            (mark,),
        ).fetchone()[0]  # type: ignore[index]
    assert set(per_request) == set(answered) and set(per_request.values()) == {1}
    assert len(answered) <= entries <= len(answered) + len(retried) + len(failed)
    result = CliRunner().invoke(
        main,
        ["audit", "verify"],
        env={"CITYGRID_DATABASE_URL": url, "CITYGRID_DATA_DIR": str(front.settings.data_dir)},
    )
    assert result.exit_code == 0, result.output
    print(
        f"\n{len(outcomes)} requests ({dict(Counter(_kind(o.n) for o in outcomes))}),"
        f" {len(answered)} answered 200, {len(failed)} failed"
        f" ({dict(Counter(_kind(o.n) for o in failed))}), {len(in_flight)} in flight at the"
        f" kill, {len(retried)} retried by nginx on the survivor, {entries} audit entries"
    )

    # The survivor gone too: nginx answers JSON, not its HTML error page.
    survivor.stop()
    none_left = front.get("/auth/whoami", "gws-viewer")
    assert none_left.status == 502 and none_left.json()["error"] == "no_gateway"
