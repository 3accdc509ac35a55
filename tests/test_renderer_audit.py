"""The renderer of the secure zone audits itself and takes its CRLs from the gateway.

Both zones run as separate gunicorn TLS processes (tests/zones.py). Every answer of the
renderer, accepted or refused, is an entry of its own tamper-evident log (its database, its
key) that `citygrid audit verify` with the renderer's settings checks: a refusal is in its
queue before it leaves, an accepted request's entry is written behind and arrives all the
same; with its audit writer unreachable it refuses (503) from the next answers on. CRLs
reach it only by push (`PUT /crl`): a revoked gateway service certificate is refused from
the next request on, even on an open connection; an older, foreign or malformed CRL is
refused and changes nothing; a CRL past its next update makes the renderer refuse with 503
until a fresh one arrives.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth import certs, pki
from auth.ca_store import CaStore
from mapserver import db
from mapserver.settings import Settings
from tiles import crl_push
from tiles import grant as grants
from tiles.renderer_audit import writer_url

from .admin_key import admin_env
from .tls import REFUSED, request
from .zones import SECRET, Zones, grant_refusals, tile_answers, two_zones
from .zones import renderer_entries as _entries_since
from .zones import renderer_log_size as _log_size
from .zones import sign_grant as _grant
from .zones import thumbprint_of as _sha


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    with two_zones(tmp_path_factory.mktemp("zones")) as found:
        yield found


def _gateway_settings(z: Zones) -> Settings:
    return dataclasses.replace(z.gateway_db, renderer_url=f"https://127.0.0.1:{z.renderer_port}")


def _tile(z: Zones) -> tuple[int, int, int]:
    desc = request(z.gateway_port, "/tiles/topo500", z.ca, *z.person).json()
    level = desc["levels"][-1]
    t = level["tiles"]
    return level["level"], (t["x_min"] + t["x_max"]) // 2, (t["y_min"] + t["y_max"]) // 2


def _ask(z: Zones, path: str, token: str | None, cert: tuple[Path, Path] | None = None,
         port: int | None = None, **kw: Any) -> Any:  # fmt: skip
    """Ask the renderer's app (or `port`: its tile channel, say)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request(port or z.renderer_port, path, z.ca, *(cert or z.service), headers=headers,
                   **kw)  # fmt: skip


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mapserver.cli", *args],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.1)


def _renderer_crl_number(z: Zones) -> int:
    crl = CaStore(z.map_db.pki_dir).crl()
    assert crl is not None
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def test_every_answer_is_audited_by_the_renderer_and_verifies(zones: Zones, tmp_path: Path) -> None:
    z, x, y = _tile(zones)
    mark = _log_size(zones)
    # Through the gateway: the renderer's entry names the gateway and the person's grant.
    assert request(zones.gateway_port, f"/tiles/topo500/{z}/{x}/{y}.png", zones.ca,
                   *zones.person).status == 200  # fmt: skip
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    ok = grants.Grant("zone-operator", ("topo500",), z, None)
    refusals = grant_refusals(zones, z, tmp_path)
    for token, cert, status, _ in refusals:
        assert _ask(zones, path, token, cert).status == status
    bad = f"/identify/topo500/{z}/{x}/{y}?col=999&row=1"
    assert _ask(zones, bad, _grant(zones, ok)).status == 400

    _until(lambda: bool(tile_answers(_entries_since(zones, mark))))  # its run, once handed over
    found = _entries_since(zones, mark)
    served = tile_answers(found)
    assert served and served[0]["account"] == "gateway"
    assert served[0]["detail"]["grant_account"] == "zone-operator"
    assert served[0]["detail"]["service"] == "gateway" and served[0]["status"] == 200
    assert served[0]["cert_sha256"] == _sha(zones.service[0])
    refused = [e for e in found if e["resource"] == path and e["outcome"] == "refused"]
    assert len(refused) == len(refusals)
    for entry, (token, cert, status, words) in zip(refused, refusals, strict=True):
        assert entry["status"] == status and words in entry["detail"]["reason"], entry
        assert entry["cert_sha256"] == _sha((cert or zones.service)[0])
        if token is not None:  # a refused grant is named by whom it claimed to be for
            named = entry["detail"].get("grant_account") or entry["detail"].get("grant_claimed")
            assert named == "zone-operator", entry
    person = refused[4]
    assert person["account"] == "" and "not a service" in person["detail"]["reason"]
    wrong_level = refused[5]
    assert wrong_level["account"] == "gateway"
    assert wrong_level["detail"]["grant_account"] == "zone-operator"
    (invalid,) = [e for e in found if e["action"] == "renderer.identify"]
    assert invalid["status"] == 400 and invalid["detail"]["reason"].startswith("invalid:")

    # Accepted requests are written behind: every one of a burst still reaches the log.
    burst = _grant(zones, ok._replace(account="zone-burst"))
    for _ in range(40):
        assert _ask(zones, path, burst).status == 200
    _until(lambda: _tiles_answered(zones, "zone-burst") == 40)

    # The renderer's log verifies with the renderer's settings and key, in its own zone.
    assert (zones.map_db.pki_dir / "audit-ed25519.pub").is_file()
    assert not (zones.map_db.pki_dir / "ca.key").exists()
    done = _cli(zones.map_db, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr


def _tiles_answered(z: Zones, account: str) -> int:
    """How many tile answers to `account`'s grants the renderer's tree records (in runs)."""
    with psycopg.connect(z.map_db.database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(jsonb_array_length(detail->'tiles')), 0) FROM audit_entry"
            " WHERE action = 'renderer.tiles' AND detail->>'grant_account' = %s",
            (account,),
        ).fetchone()
    return int(row[0]) if row else 0


def _entries_of(z: Zones, account: str, table: str) -> list[tuple[str, int]]:
    """(outcome, status) of the renderer's entries for `account`'s grants in `table`
    (audit_queue: committed, sequenced or not; audit_entry: in the tree)."""
    sql = (
        f"SELECT outcome, status FROM {table} WHERE detail->>'grant_account' = %s"  # noqa: S608
        " OR detail->>'grant_claimed' = %s ORDER BY id"
    )
    with psycopg.connect(z.map_db.database_url) as conn:
        return [(str(o), int(s)) for o, s in conn.execute(sql, (account, account)).fetchall()]


def test_a_refusal_is_committed_before_it_leaves(zones: Zones) -> None:
    z, x, y = _tile(zones)
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    wrong = grants.Grant("zone-refused", ("topo500",), z - 1, None)
    expired = _grant(zones, wrong, lifetime=60, now=time.time() - 120)
    for status, token in ((403, _grant(zones, wrong)), (401, expired)):
        assert _ask(zones, path, token).status == status
        # Read at once, before any sequencing: the queue already holds it.
        assert _entries_of(zones, "zone-refused", "audit_queue")[-1] == ("refused", status)


def test_no_answer_without_the_renderers_audit(zones: Zones) -> None:
    z, x, y = _tile(zones)
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    token = _grant(zones, grants.Grant("zone-operator", ("topo500",), z, None))
    dbname = zones.map_db.database_url.rsplit("/", 1)[1]
    with psycopg.connect(zones.map_db.database_url, autocommit=True) as conn:
        conn.execute(f'REVOKE CONNECT ON DATABASE "{dbname}" FROM citygrid_audit')
        try:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usename = 'citygrid_audit' AND datname = %s",
                (dbname,),
            )
            # An answer in flight when the log went away may still leave (its entry was
            # written behind and is lost); the next ones are 503 while the log is away.
            assert _ask(zones, path, token).status in (200, 503)
            _until(lambda: _ask(zones, path, token).status == 503)
            channel = _ask(zones, path, token, port=zones.tile_port)
            for answer in (_ask(zones, path, token), _ask(zones, path, token), channel):
                assert answer.status == 503, answer.body
                assert answer.json()["error"] == "audit_unavailable"
                assert answer.headers["Content-Type"] == "application/json"
        finally:
            conn.execute(f'GRANT CONNECT ON DATABASE "{dbname}" TO citygrid_audit')
    # The role's rights are the log's only: no map table, no rewriting of the log.
    with psycopg.connect(writer_url(zones.map_db)) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM building")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM audit_entry")
    _until(lambda: _ask(zones, path, token).status == 200)


def _admin(z: Zones) -> dict[str, str]:
    """The environment of the gateway's CLI: CA passphrase, renderer, an administrator."""
    env = {
        "CITYGRID_DATABASE_URL": z.gateway_db.database_url,
        "CITYGRID_DATA_DIR": str(z.gateway_db.data_dir),
        "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
        "CITYGRID_RENDERER_URL": f"https://127.0.0.1:{z.renderer_port}",
    }
    signed = admin_env(env, "zone-admin")
    return {k: signed[k] for k in signed if k not in ("CITYGRID_DATABASE_URL", "CITYGRID_DATA_DIR")}


def _service_certificate(z: Zones, out: Path) -> tuple[Path, Path, str]:
    """A further service certificate of the gateway (its serial too)."""
    store = CaStore(z.gateway_db.pki_dir)
    with db.transaction(z.gateway_db) as conn:
        issued = certs.issue(conn, store, SECRET, "gateway", pki.Kind.SERVICE, out)
    return out / "gateway.crt", out / "gateway.key", issued.serial


def test_a_pushed_crl_revokes_a_gateway_certificate_at_once(zones: Zones, tmp_path: Path) -> None:
    z, x, y = _tile(zones)
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    crt, key, serial = _service_certificate(zones, tmp_path / "second")
    token = _grant(zones, grants.Grant("zone-operator", ("topo500",), z, None), cert=crt)
    context = ssl.create_default_context(cafile=str(zones.ca))
    context.load_cert_chain(str(crt), str(key))
    kept = http.client.HTTPSConnection("127.0.0.1", zones.renderer_port, context=context)
    # and one to the tile channel (tiles.tile_channel), which checks as the app does
    channel = http.client.HTTPSConnection("127.0.0.1", zones.tile_port, context=context)

    def ask(conn: http.client.HTTPSConnection = kept) -> tuple[int, dict[str, Any]]:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        body = answer.read()
        is_json = answer.getheader("Content-Type") == "application/json"
        return answer.status, json.loads(body) if is_json else {}

    assert ask()[0] == 200
    assert ask(channel)[0] == 200
    before = _renderer_crl_number(zones)
    stored = (zones.map_db.pki_dir / "crl.pem").stat().st_ino
    # `pki revoke` publishes the CRL and pushes it; nobody copies a file or reloads anything.
    done = _cli(zones.gateway_db, "pki", "revoke", serial, "--reason", "key_compromise",
                **_admin(zones))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "installed on the renderer" in done.stdout, done.stdout + done.stderr
    assert _renderer_crl_number(zones) > before
    assert (zones.map_db.pki_dir / "crl.pem").stat().st_ino != stored  # replaced by rename
    # The connection opened before the push is refused on its next request, by the app ...
    status, body = ask()
    assert status == 403 and "revoked" in body["message"]
    kept.close()
    status, body = ask(channel)  # ... and by the tile channel
    assert status == 403 and "revoked" in body["message"]
    channel.close()
    # ... and a new handshake with it fails in TLS, audited too; the gateway's own
    # certificate still works.
    with pytest.raises(REFUSED):
        request(zones.renderer_port, path, zones.ca, crt, key)
    with pytest.raises(REFUSED):
        request(zones.tile_port, path, zones.ca, crt, key)

    def handshake_refused() -> bool:
        found = _entries_since(zones, 0)
        return any(e["action"] == "tls.refused" and e["detail"].get("reason") == "revoked"
                   for e in found)  # fmt: skip

    _until(handshake_refused)
    fine = _grant(zones, grants.Grant("zone-operator", ("topo500",), z, None))
    assert _ask(zones, path, fine).status == 200
    entries = _entries_since(zones, 0)
    assert any(
        e["action"] == "renderer.crl" and e["account"] == "gateway" and e["status"] == 200
        for e in entries
    )
    last = [e for e in entries if e["resource"] == path and e["cert_sha256"] == _sha(crt)][-1]
    assert last["outcome"] == "refused" and "revoked" in last["detail"]["reason"]


def test_the_gateway_pushes_each_new_crl_by_itself(zones: Zones) -> None:
    """The gateway watches its CRL file (the signer republishes it, revocations in the
    browser go through the signer): a new one reaches the renderer with no command."""
    before = _renderer_crl_number(zones)
    store = CaStore(zones.gateway_db.pki_dir)
    with db.transaction(zones.gateway_db) as conn:
        published = certs.publish_crl(conn, store, SECRET)
    number = published.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > before
    _until(lambda: _renderer_crl_number(zones) == number)


def test_one_process_of_a_machine_pushes_each_crl(zones: Zones, tmp_path: Path) -> None:
    """Beside the gateway's worker, two more watchers of the same install on this machine:
    a new CRL reaches the renderer by one PUT, the worker's (it holds the lock file)."""
    settings = _gateway_settings(zones)
    mark = _log_size(zones)
    # An earlier test's push may be logged after `mark` (the renderer writes such entries
    # behind, in batches): only the answers from now on count.
    since = dt.datetime.now(dt.UTC)
    with db.transaction(zones.gateway_db) as conn:
        published = certs.publish_crl(conn, CaStore(zones.gateway_db.pki_dir), SECRET)
    number = published.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    _until(lambda: _renderer_crl_number(zones) == number)

    def puts() -> list[dict[str, object]]:
        found = _entries_since(zones, mark)
        return [e for e in found if e["resource"] == "/crl" and e["at"] >= since]  # type: ignore[operator]

    _until(lambda: bool(puts()))  # the renderer logs an accepted request's entry behind
    others = [crl_push.Watcher(settings), crl_push.Watcher(settings)]
    for watcher in others:
        watcher.once()  # the file changed since they last pushed (never): they would push now
        assert not watcher.leading() and watcher.pushed is None
    assert len(puts()) == 1, puts()
    # When the holder is gone, the next watcher to look takes over.
    alone = dataclasses.replace(settings, data_dir=tmp_path)
    first, second = crl_push.Watcher(alone), crl_push.Watcher(alone)
    assert first.leading() and not second.leading()
    first.stop()
    assert second.leading()
    second.stop()


def test_an_apps_watcher_stops_with_it(zones: Zones, tmp_path: Path) -> None:
    """An app made in a process that outlives it stops its watcher (and lets the machine's
    lock go) with `stop_watching`: no push is tried after the app is gone."""
    alone = dataclasses.replace(_gateway_settings(zones), data_dir=tmp_path)
    watcher = crl_push.watch(alone)
    assert crl_push.watch(alone) is watcher  # one a process
    assert watcher.leading()
    crl_push.stop_watching()
    assert not watcher._thread.is_alive()
    other = crl_push.Watcher(alone)
    assert other.leading()  # the lock went with the stopped watcher
    other.stop()
    crl_push.stop_watching()  # none running: nothing to do


def test_a_watcher_asked_from_several_threads_at_once_leads(tmp_path: Path) -> None:
    """`leading()` asked by the watcher's own thread and by a caller at the same moment: each
    opened the lock file, and the second's flock failed against the first's, so a watcher
    that held the lock said it did not (seen once in CI, in the test above). Now every
    caller sees it lead, and a stopped one leads nothing and lets the lock go."""
    for trial in range(50):
        (tmp_path / str(trial)).mkdir()
        watcher = crl_push.Watcher(Settings(data_dir=tmp_path / str(trial)))
        start = threading.Barrier(6)
        seen: list[bool] = []

        def ask(w: crl_push.Watcher, b: threading.Barrier, out: list[bool]) -> None:
            b.wait()
            out.append(w.leading())

        askers = [threading.Thread(target=ask, args=(watcher, start, seen)) for _ in range(6)]
        for t in askers:
            t.start()
        for t in askers:
            t.join()
        assert seen == [True] * 6, (trial, seen)
        watcher.stop()
        assert not watcher.leading()
        other = crl_push.Watcher(watcher.settings)
        assert other.leading()
        other.stop()


def _pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def _put(z: Zones, data: bytes, cert: tuple[Path, Path] | None = None) -> Any:
    return request(z.renderer_port, "/crl", z.ca, *(cert or z.service), method="PUT", body=data)


def test_an_older_foreign_or_broken_crl_changes_nothing(zones: Zones) -> None:
    store = CaStore(zones.gateway_db.pki_dir)
    with db.connect(zones.gateway_db) as conn:
        oldest = conn.execute("SELECT pem FROM crl_history ORDER BY number LIMIT 1").fetchone()
    assert oldest is not None
    held = (zones.map_db.pki_dir / "crl.pem").read_bytes()
    number = _renderer_crl_number(zones)
    older = _put(zones, oldest[0].encode())
    assert older.status == 409 and older.json()["error"] == "crl_not_newer"
    foreign_key = ec.generate_private_key(ec.SECP256R1())
    forged = pki.build_crl(foreign_key, pki.make_ca(foreign_key, "Not CityGrid"), [], number + 100)
    answer = _put(zones, _pem(forged))
    assert answer.status == 400 and "not signed by CityGrid's CA" in answer.json()["message"]
    assert _put(zones, b"not a CRL").status == 400
    # A CRL of CityGrid's CA that is already past its next update is no replacement either.
    ca_key = store.key(SECRET)
    past = pki.build_crl(ca_key, store.certificate(), [], number + 50,
                         dt.timedelta(hours=1), pki.now() - dt.timedelta(hours=2))  # fmt: skip
    assert _put(zones, _pem(past)).status == 400
    # A person's certificate may not push at all.
    assert _put(zones, held, zones.person).status == 403
    assert (zones.map_db.pki_dir / "crl.pem").read_bytes() == held
    again = _put(zones, held)  # the CRL held already: accepted, nothing to do
    assert again.status == 200 and again.json() == {
        "installed": False, "number": number, "next_update": again.json()["next_update"]
    }  # fmt: skip
    by_hand = _cli(zones.gateway_db, "renderer", "push-crl",
                   CITYGRID_RENDERER_URL=f"https://127.0.0.1:{zones.renderer_port}")  # fmt: skip
    assert by_hand.returncode == 0, by_hand.stderr
    assert by_hand.stdout.strip() == f"CRL {number} already held by the renderer"
    assert (zones.map_db.pki_dir / "crl.pem").read_bytes() == held


def test_renderer_commands_without_a_renderer_say_so_in_one_line(tmp_path: Path) -> None:
    """Without renderer_url, push-crl and sync-areas answered with click's usage text and
    "Try --help" (exit 2), though no option would help: a setting is missing."""
    from click.testing import CliRunner

    from mapserver.cli import main

    env = {"CITYGRID_DATA_DIR": str(tmp_path), "CITYGRID_RENDERER_URL": ""}
    for command in ("push-crl", "sync-areas"):
        result = CliRunner().invoke(main, ["renderer", command], env=env)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("citygrid: error: renderer_url is not set: ")
        assert result.output.count("\n") == 1, result.output


def test_a_stale_crl_refuses_everything_until_a_fresh_one_arrives(zones: Zones) -> None:
    z, x, y = _tile(zones)
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    token = _grant(zones, grants.Grant("zone-operator", ("topo500",), z, None))
    store = CaStore(zones.gateway_db.pki_dir)
    with db.connect(zones.gateway_db) as conn:
        number = conn.execute("SELECT nextval('crl_number')").fetchone()[0]  # type: ignore[index]
    # A CRL of CityGrid's CA that runs out two seconds from now.
    began = pki.now() - dt.timedelta(seconds=10)
    short = pki.build_crl(store.key(SECRET), store.certificate(), [], int(number),
                          dt.timedelta(seconds=12), began)  # fmt: skip
    pushed = crl_push.push(_gateway_settings(zones), _pem(short))
    assert pushed.installed and pushed.number == number

    def stale() -> bool:
        return _ask(zones, path, token).status == 503

    _until(stale)
    answer = _ask(zones, path, token)
    assert answer.json()["error"] == "crl_unusable" and "ran out" in answer.json()["message"]
    channel = _ask(zones, path, token, port=zones.tile_port)
    assert channel.status == 503 and channel.json()["error"] == "crl_unusable"
    # Through the gateway: refused, never a 500.
    via = request(zones.gateway_port, f"/tiles/topo500/{z}/{x}/{y}.png", zones.ca, *zones.person)
    assert via.status == 503
    # A fresh CRL, published and pushed by `citygrid pki crl`, and the renderer serves again.
    done = _cli(
        zones.gateway_db, "pki", "crl", CITYGRID_CA_PASSPHRASE=SECRET.decode(),
        CITYGRID_RENDERER_URL=f"https://127.0.0.1:{zones.renderer_port}",
    )  # fmt: skip
    assert done.returncode == 0 and "installed on the renderer" in done.stdout, done.stderr
    assert _ask(zones, path, token).status == 200
    # All of it (refusals, handshakes refused, pushes, the 503s) is a log that verifies.
    done = _cli(zones.map_db, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr


def test_request_ids_name_the_process_that_answered_even_after_a_fork() -> None:
    """The process id in a request id is read once per process, and again in a forked child
    (a worker forked from a parent that loaded the app): ids of two processes never meet."""
    from tiles.renderer_audit import request_id

    mine = request_id()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, through the pipe
        os.write(write, request_id().encode())
        os._exit(0)
    os.close(write)
    theirs = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert mine.split("-")[0].endswith(f"{os.getpid():x}")
    assert theirs.split("-")[0].endswith(f"{child:x}") and theirs != mine
