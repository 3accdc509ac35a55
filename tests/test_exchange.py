"""The city–district exchange between two real installs: two databases, two CAs, two audit
logs, two gunicorn servers over mutual TLS. The district forwards a case to the city, the
city's result comes back and the district closes the case; the city forwards a case to the
district; component updates reach the city. Bundles are then tampered with, replayed and
reordered, and each is refused with its reason, changing nothing."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from psycopg.types.json import Jsonb

from audit import checkpoint, merkle
from audit.keys import PUBLIC_FILE, signer
from auth import accounts, certs, pki, signed_action
from auth.ca_store import CaStore
from mapserver import db, pipeline_health
from mapserver.exchange import bundle, evidence, inbox, sender
from mapserver.settings import Settings

from .conftest import demo_database, empty_database
from .mutations import KINDS, leaves, mutated
from .sequenced import sequenced
from .test_case_attachments import amr, phone_photo, screenshot_png
from .tls import Reply, Server, free_port, request

SECRET = "exchange test passphrase"


@dataclasses.dataclass
class Side:
    """One install: its database, CA, people, server and exchange settings."""

    name: str
    settings: Settings
    out: Path
    env: dict[str, str]
    server: Server | None = None

    @property
    def store(self) -> CaStore:
        return CaStore(self.settings.pki_dir)

    def people(self, *who: tuple[str, str, str | None]) -> None:
        with db.transaction(self.settings) as conn:
            for name, role, org in who:
                accounts.add(conn, name, [role], org)
                certs.issue(conn, self.store, SECRET.encode(), name, pki.Kind.PERSON, self.out)
                if role != "exchange_peer":
                    certs.issue(conn, self.store, SECRET.encode(), name, pki.Kind.SIGNING, self.out)
            certs.publish_crl(conn, self.store, SECRET.encode())

    def ask(
        self, who: str, method: str, path: str, body: Any = None, out: Path | None = None
    ) -> Reply:
        assert self.server is not None
        folder = out or self.out
        data = json.dumps(body).encode() if body is not None else None
        return request(
            self.server.port, path, self.store.cert_path, folder / f"{who}.crt",
            folder / f"{who}.key", method=method, body=data,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )  # fmt: skip

    def signed(
        self, who: str, path: str, action: str, resource: str, params: dict[str, Any]
    ) -> Reply:
        cert = x509.load_pem_x509_certificates((self.out / f"{who}.signing.crt").read_bytes())[0]
        key = serialization.load_pem_private_key(
            (self.out / f"{who}.signing.key").read_bytes(), None
        )
        nonce = self.ask(who, "POST", "/auth/nonce").json()["nonce"]
        data = signed_action.payload(
            action, resource, params, nonce, pki.now(), pki.thumbprint(cert)
        )
        envelope = {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),  # type: ignore[arg-type]
            "certificate": pki.pem(cert).decode(),
        }
        return self.ask(who, "POST", path, envelope)

    def act(self, who: str, number: str, name: str, **params: Any) -> Reply:
        state = self.sql("SELECT state FROM city_case WHERE number = %s", number)[0][0]
        return self.signed(
            who,
            f"/cases/{number}/{name}",
            f"case.{name}",
            f"case {number}",
            {"from": state, **params},
        )

    def sql(self, query: str, *args: Any) -> Any:
        if "audit_entry" in query:  # a request's entry reaches the tree a moment after it
            sequenced(self.settings.database_url)
        with psycopg.connect(self.settings.database_url) as conn:
            return conn.execute(query, args).fetchall()

    def send(self, **changes: Any) -> list[sender.Sent]:
        return sender.send_pending(dataclasses.replace(self.settings, **changes))


@dataclasses.dataclass
class World:
    district: Side
    city: Side
    grid: str


def _side(name: str, settings: Settings, out: Path, port: int) -> Side:
    CaStore(settings.pki_dir).init(SECRET.encode(), name=f"CityGrid CA {name}")
    signer(settings.pki_dir)  # the audit log key, and its public half for the peer
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_CA_PASSPHRASE": SECRET,
        "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
        "CITYGRID_AUDIT_CHECKPOINT_SECONDS": "1",
    }
    return Side(name, settings, out, env)


def _exchange(side: Side, role: str, peer: Side, port: int, client: str) -> None:
    """Point `side` at `peer`: the peer's URL, CA and log key, and the client certificate
    the peer's CA issued for `side` (account `client` there, role exchange_peer)."""
    values: dict[str, Any] = {
        "exchange_role": role,
        "exchange_peer_url": f"https://127.0.0.1:{port}",
        "exchange_peer_ca": str(peer.store.cert_path),
        "exchange_peer_log_key": str(peer.settings.pki_dir / PUBLIC_FILE),
        "exchange_client_cert": str(peer.out / f"{client}.crt"),
        "exchange_client_key": str(peer.out / f"{client}.key"),
    }
    side.settings = dataclasses.replace(side.settings, **values)
    side.env.update({f"CITYGRID_{k.upper()}": v for k, v in values.items()})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d_port, c_port = free_port(), free_port()
    district = _side(
        "区级", demo_database("citygrid_xd", tmp_path_factory.mktemp("xd-var")),
        tmp_path_factory.mktemp("xd-certs"), d_port,
    )  # fmt: skip
    city = _side(
        "市级", empty_database("citygrid_xc", tmp_path_factory.mktemp("xc-var")),
        tmp_path_factory.mktemp("xc-certs"), c_port,
    )  # fmt: skip
    with db.transaction(district.settings) as conn:
        conn.execute(
            "INSERT INTO organisation (code, name, kind)"
            " VALUES ('city-platform', '市级平台', 'bureau')"
        )
        grid = conn.execute(
            "SELECT code FROM unit_grid WHERE code LIKE '110108001%' ORDER BY code LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
        bureau = conn.execute(
            "SELECT o.code FROM organisation o JOIN component c ON c.owner_dept = o.name"
            " WHERE o.kind = 'bureau' ORDER BY o.code LIMIT 1"
        ).fetchone()[0]  # type: ignore[index]
    district.people(
        ("d-operator", "operator", None), ("d-leader", "shift_leader", None),
        ("d-dispatcher", "dispatcher", None), ("d-inspector", "inspector", "street-001"),
        ("d-liaison", "bureau_handler", "city-platform"), ("d-bureau", "bureau_handler", bureau),
        ("city-peer", "exchange_peer", None),
    )  # fmt: skip
    city.people(("c-dispatcher", "dispatcher", None), ("district-peer", "exchange_peer", None))
    _exchange(district, "district", city, c_port, "district-peer")
    _exchange(city, "city", district, d_port, "city-peer")
    servers = []
    try:
        for side, port in ((district, d_port), (city, c_port)):
            side.server = Server(side.env, port=port)
            servers.append(side.server)
        for s in servers:
            s.wait_ready()
        yield World(district, city, grid)
    finally:
        for s in servers:
            s.stop()
        db.drop_database(district.settings)
        db.drop_database(city.settings)


def _ready(side: Side, seq: int, timeout: float = 30) -> dict[str, Any]:
    """The bundle of outbox message `seq` once the log holds (and a checkpoint covers) every
    act it carries: the audit sequencer takes entries in a moment after they are queued."""
    deadline = time.monotonic() + timeout
    row = side.sql(
        "SELECT seq, source_id, kind, content, signed_action FROM exchange_outbox WHERE seq = %s",
        seq,
    )[0]
    with db.connect(side.settings) as conn:
        conn.autocommit = True
        while True:
            try:
                return sender.make(conn, side.settings, row)
            except evidence.Pending:
                assert time.monotonic() < deadline, f"message {seq} never became provable"
                time.sleep(0.2)


def _record(world: World, description: str) -> str:
    d = world.district
    created = d.signed(
        "d-operator", "/cases/record", "case.record", "cases",
        {"source": "phone", "kind": "event", "major": "01", "minor": "02",
         "description": description, "place": {"grid": world.grid}},
    )  # fmt: skip
    assert created.status == 201, created.json()
    number = str(created.json()["number"])
    assert d.act("d-operator", number, "accept").status == 200
    assert d.act("d-leader", number, "file").status == 200
    return number


def _forward(world: World, number: str) -> dict[str, Any]:
    reply = world.district.signed(
        "d-dispatcher", f"/exchange/cases/{number}/forward", "case.dispatch", f"case {number}",
        {"from": "filed", "bureau": "city-platform", "note": "涉及市管道路，请市级平台处置"},
    )  # fmt: skip
    assert reply.status == 200, reply.json()
    return dict(reply.json()["exchange"])


def test_a_case_to_the_city_and_its_result_back(world: World) -> None:
    d, c = world.district, world.city
    number = _record(world, "市管道路路面塌陷")
    said = _forward(world, number)
    assert d.sql("SELECT state, bureau FROM city_case WHERE number = %s", number) == [
        ("dispatched", "city-platform")
    ]
    _ready(d, said["seq"])
    # The city is out of reach: the message stays, the attempt is recorded and audited.
    down = d.send(exchange_peer_url=f"https://127.0.0.1:{free_port()}")
    assert [s.outcome for s in down] == ["unreachable"], down
    assert d.sql(
        "SELECT attempts, acked_at FROM exchange_outbox WHERE source_id = %s", said["source_id"]
    ) == [(1, None)]
    # `citygrid exchange send`, as the timer runs it.
    sent = subprocess.run(
        [sys.executable, "-m", "mapserver.cli", "exchange", "send"],
        env={**os.environ, **d.env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert f"{said['source_id']} seq {said['seq']}: acknowledged" in sent.stdout
    assert d.sql(
        "SELECT attempts, acked_at IS NOT NULL FROM exchange_outbox WHERE source_id = %s",
        said["source_id"],
    ) == [(2, True)]
    outcomes = d.sql(
        "SELECT outcome, detail ->> 'outcome' FROM audit_entry WHERE action = 'exchange.send'"
        " AND resource = %s ORDER BY leaf_index", f"exchange {said['source_id']}",
    )  # fmt: skip
    assert outcomes == [("refused", "unreachable"), ("ok", "acknowledged")]

    # The city sees the forwarded case, with every signed act of its history verified.
    got = c.ask("c-dispatcher", "GET", "/exchange/messages").json()["received"]
    forwarded = next(m for m in got if m["source_id"] == said["source_id"])
    assert forwarded["kind"] == "case.forward" and forwarded["content"]["case"]["number"] == number
    assert (
        forwarded["content"]["case"]["grid"] == world.grid and forwarded["signer"] == "d-dispatcher"
    )
    signers = [
        json.loads(base64.b64decode(a["payload"]))["action"]
        for a in c.sql("SELECT bundle FROM exchange_inbox WHERE source_id = %s", said["source_id"])[
            0
        ][0]["actions"]
    ]
    assert signers == ["case.record", "case.accept", "case.file", "case.dispatch"]
    received = c.sql(
        "SELECT account, status, detail -> 'exchange_received' ->> 'received' FROM audit_entry"
        " WHERE resource = %s AND status = 200", f"exchange {said['source_id']}",
    )  # fmt: skip
    assert received == [("district-peer", 200, said["source_id"])]

    # The city answers; its sender brings the result back.
    answered = c.signed(
        "c-dispatcher", f"/exchange/messages/{said['source_id']}/result", "exchange.result",
        f"exchange {said['source_id']}", {"result": "市路政已修复塌陷路面", "outcome": "handled"},
    )  # fmt: skip
    assert answered.status == 200, answered.json()
    again = c.signed(
        "c-dispatcher", f"/exchange/messages/{said['source_id']}/result", "exchange.result",
        f"exchange {said['source_id']}", {"result": "再次答复"},
    )  # fmt: skip
    assert again.status == 409
    _ready(c, answered.json()["exchange"]["seq"])
    assert [s.outcome for s in c.send()] == ["acknowledged"]
    result = d.ask("d-dispatcher", "GET", f"/exchange/messages?case={number}").json()["received"]
    assert [(m["kind"], m["content"]["result"]) for m in result] == [
        ("case.result", "市路政已修复塌陷路面")
    ]

    # The district closes the case: its liaison to the city platform records the result.
    steps = [
        ("d-liaison", "receive", {}),
        ("d-liaison", "handle", {"result": result[0]["content"]["result"]}),
        ("d-dispatcher", "forward", {}),
        ("d-operator", "request_check", {}),
        ("d-inspector", "check_pass", {"note": "现场已修复"}),
    ]
    for who, name, params in steps:
        reply = d.act(who, number, name, **params)
        assert reply.status == 200, (name, reply.json())
    assert d.sql("SELECT state FROM city_case WHERE number = %s", number) == [("closed",)]


def test_the_city_forwards_a_case_and_components_reach_the_city(world: World) -> None:
    d, c = world.district, world.city
    reply = c.signed(
        "c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
        {"kind": "event", "major": "01", "minor": "02", "description": "市民热线：道路积水",
         "grid": world.grid},
    )  # fmt: skip
    assert reply.status == 201, reply.json()
    source_id = reply.json()["exchange"]["source_id"]
    _ready(c, reply.json()["exchange"]["seq"])
    assert [s.outcome for s in c.send()] == ["acknowledged"]
    number, state, source, reporter = d.sql(
        "SELECT c.number, c.state, c.source, c.reporter FROM exchange_inbox i"
        " JOIN city_case c ON c.number = i.case_number WHERE i.source_id = %s", source_id,
    )[0]  # fmt: skip
    assert (state, source, reporter) == ("reported", "city_platform", "city-peer")

    component = d.ask("d-bureau", "GET", "/components").json()["components"][0]
    edited = d.signed(
        "d-bureau", f"/components/{component['code']}/edit", "component.edit",
        f"component {component['code']}",
        {"version": component["version"], "set": {"state": "damaged"}},
    )  # fmt: skip
    assert edited.status == 200, edited.json()
    _ready(d, d.sql("SELECT max(seq) FROM exchange_outbox")[0][0])
    assert [s.outcome for s in d.send()] == ["acknowledged"]
    copied = c.sql(
        "SELECT version, content FROM exchange_component WHERE code = %s", component["code"]
    )
    assert copied[0][0] == component["version"] + 1 and copied[0][1]["state"] == "damaged"
    assert not {"x", "y", "geom", "point"} & set(copied[0][1])

    # A bulk file from the command line reaches the city the same way.
    from click.testing import CliRunner

    from mapserver.cli import main

    other = d.ask("d-bureau", "GET", "/components").json()["components"][1]
    csv = d.out / "bulk.csv"
    csv.write_text(f"op,code,state\nedit,{other['code']},occupied\n", "utf-8")
    args = ["components", "import", "--as", "d-bureau", str(csv)]
    args += ["--key", str(d.out / "d-bureau.signing.key")]
    args += ["--cert", str(d.out / "d-bureau.signing.crt")]
    imported = CliRunner().invoke(main, args, env=d.env)
    assert imported.exit_code == 0, imported.output
    _ready(d, d.sql("SELECT max(seq) FROM exchange_outbox")[0][0])
    assert [s.outcome for s in d.send()] == ["acknowledged"]
    assert c.sql(
        "SELECT content ->> 'state' FROM exchange_component WHERE code = %s", other["code"]
    ) == [("occupied",)]


def _bundle(world: World, description: str) -> dict[str, Any]:
    """A fresh forwarded case's bundle, made but not sent."""
    return _ready(world.district, _forward(world, _record(world, description))["seq"])


def _deliver(world: World, doc: dict[str, Any]) -> Reply:
    return world.city.ask("district-peer", "POST", "/exchange/receive", doc, out=world.city.out)


def test_tampered_replayed_and_reordered_bundles_are_refused(world: World) -> None:
    c = world.city
    first, second = _bundle(world, "第一件"), _bundle(world, "第二件")
    assert second["seq"] == first["seq"] + 1
    before = c.sql("SELECT last_seq FROM exchange_peer_state")[0][0]
    assert before == first["seq"] - 1

    def refused(doc: dict[str, Any], status: int, error: str, reason: str) -> None:
        reply = _deliver(world, doc)
        assert reply.status == status, reply.json()
        assert reply.json()["error"] == error and reason in reply.json()["message"], reply.json()
        assert c.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == before

    content = copy.deepcopy(first)
    content["content"]["case"]["description"] = "改过的描述"
    refused(content, 400, "bundle_refused", "not what the peer's log recorded")
    seq = copy.deepcopy(first)
    seq["seq"] += 5
    refused(seq, 400, "bundle_refused", "not what the peer's log recorded")
    entry = copy.deepcopy(first)
    entry["actions"][-1]["log"]["entry"]["account"] = "someone-else"
    refused(entry, 400, "bundle_refused", "not in the peer's checkpointed log")
    payload = copy.deepcopy(first)
    signed = json.loads(base64.b64decode(payload["actions"][-1]["payload"]))
    signed["parameters"]["bureau"] = "bureau-01"
    payload["actions"][-1]["payload"] = base64.b64encode(json.dumps(signed).encode()).decode()
    refused(payload, 400, "bundle_refused", "action 4:")
    checkpoint = copy.deepcopy(first)
    theirs = c.sql("SELECT note FROM audit_checkpoint ORDER BY size DESC LIMIT 1")[0][0]
    checkpoint["actions"][0]["log"]["checkpoint"] = theirs  # the city's own log, not the peer's
    refused(checkpoint, 400, "bundle_refused", "not signed by the peer's log key")
    elsewhere = copy.deepcopy(first)
    elsewhere["to"] = "district"
    refused(elsewhere, 400, "bundle_refused", "addressed to 'district'")

    for junk, error in ((b"{", "invalid"), (b'{"format": "other"}', "bundle_refused")):
        assert c.server is not None
        reply = request(
            c.server.port, "/exchange/receive", c.store.cert_path, c.out / "district-peer.crt",
            c.out / "district-peer.key", method="POST", body=junk,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert reply.status == 400 and reply.json()["error"] == error, reply.json()
    # Anyone else, even a person of the city holding a valid certificate, may not deliver.
    assert c.ask("c-dispatcher", "POST", "/exchange/receive", first).status == 403
    refused(second, 409, "out_of_order", f"expected seq {first['seq']}")
    assert _deliver(world, first).status == 200
    before = first["seq"]
    refused(first, 409, "replayed", "not applied again")
    assert _deliver(world, second).status == 200
    assert c.sql(
        "SELECT count(*) FROM exchange_inbox WHERE source_id IN (%s, %s)",
        first["source_id"],
        second["source_id"],
    ) == [(2,)]
    # The district's sender meets both as replays: acknowledged, never applied twice.
    assert [s.outcome for s in world.district.send()] == ["replayed", "replayed"]
    # Each refusal is in the city's log with its status (the sequencer takes them in a moment).
    deadline = time.monotonic() + 30
    while True:
        refusals = c.sql(
            "SELECT status, count(*) FROM audit_entry WHERE resource = %s GROUP BY status"
            " ORDER BY status",
            f"exchange {first['source_id']}",
        )
        if refusals == [(200, 1), (400, 6), (409, 2)] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert refusals == [(200, 1), (400, 6), (409, 2)]


def test_the_command_centres_walk_the_exchange_page(world: World, tmp_path: Path) -> None:
    """In Chromium: the district's dispatcher forwards a filed case from the exchange page,
    the city's dispatcher answers it on the city's page, and the district's page shows the
    result; each act signed with a WebCrypto key enrolled with a one-time code."""
    from playwright.sync_api import sync_playwright

    from .test_browser import _browser, _context, _enrol_code, _needs_chromium, wait_until

    _needs_chromium()
    d, c = world.district, world.city
    assert d.server is not None and c.server is not None
    number = _record(world, "浏览器转送的案件")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = _browser(p)

        def desk(side: Side, who: str) -> Any:
            assert side.server is not None
            origin = f"https://127.0.0.1:{side.server.port}"
            page = _context(browser, origin, side.out, who).new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(origin + "/exchange")
            wait_until(page, "document.body.dataset.ready === '1'")
            page.fill("#enrol-code", _enrol_code(side.settings, side.server, who))
            page.click("#enrol")
            wait_until(
                page, "document.getElementById('signer-status').textContent.includes('已登记')"
            )
            return page

        district = desk(d, "d-dispatcher")
        assert "区级平台" in district.inner_text("#side")
        district.fill('#forward-form input[name="number"]', number)
        district.click('#forward-form button[type="submit"]')
        wait_until(
            district, "document.getElementById('forward-result').textContent.includes('已转送')"
        )
        seq = d.sql("SELECT max(seq) FROM exchange_outbox")[0][0]
        _ready(d, seq)
        assert [s.outcome for s in d.send()] == ["acknowledged"]
        source_id = d.sql("SELECT source_id FROM exchange_outbox WHERE seq = %s", seq)[0][0]

        city = desk(c, "c-dispatcher")
        row = f'#received tr[data-source="{source_id}"]'
        assert number in city.inner_text(row)
        # Its signer, checked on the page against the district's CA and log key.
        assert city.inner_text(f"{row} td.sig") == "✓ d-dispatcher"
        city.fill(f'{row} input[name="result"]', "市级平台已处置完毕")
        repaired = tmp_path / "修复后.png"
        repaired.write_bytes(screenshot_png())
        city.set_input_files(f'{row} input[name="photos"]', str(repaired))
        city.click(f'{row} button[type="submit"]')
        wait_until(city, f"document.querySelector('{row}').textContent.includes('已答复')")
        city.screenshot(path=str(tmp_path / "exchange-city.png"))
        _ready(c, c.sql("SELECT max(seq) FROM exchange_outbox")[0][0])
        assert [s.outcome for s in c.send()] == ["acknowledged"]

        # A message not yet acknowledged is withdrawn from the page, with its reason.
        queued = _city_forward(world, "浏览器撤回的案件")
        city.reload()
        wait_until(city, "document.body.dataset.ready === '1'")
        mine = f'#sent tr[data-source="{queued["source_id"]}"]'
        assert "撤回" in city.inner_text("#sent thead")
        city.fill(f'{mine} input[name="reason"]', "重复转送")
        city.click(f'{mine} button[type="submit"]')
        wait_until(city, f"document.querySelector('{mine}').textContent.includes('已撤回')")
        assert "重复转送" in city.inner_text(mine)
        assert city.locator(f'{mine} input[name="reason"]').count() == 0
        _ready(c, queued["seq"])
        assert [s.outcome for s in c.send()] == ["acknowledged"]

        district.reload()
        wait_until(district, "document.body.dataset.ready === '1'")
        assert "市级平台已处置完毕" in district.inner_text("#received")
        marks = district.locator("#received td.sig").all_inner_texts()
        assert len(marks) >= 2 and set(marks) == {"✓ c-dispatcher"}, marks
        # The result's photo, shown once its bytes hash to what the city's log vouched for.
        result_row = district.locator("#received tr", has_text="市级平台已处置完毕")
        wait_until(district, "document.querySelector('#received img.photo') !== null")
        assert result_row.locator("img.photo").count() == 1
        assert result_row.locator(".photo-bad").count() == 0
        # The case's own page shows its messages with the city: the forwarding, acknowledged,
        # and the result with its signer and photo, checked as on the exchange page.
        district.goto(f"https://127.0.0.1:{d.server.port}/inbox/{number}")
        wait_until(district, "document.body.dataset.exchange !== undefined")
        assert district.is_visible("#exchange-box")
        rows = district.locator("#exchange tbody tr")
        assert rows.count() == 2
        assert "对端已确认" in rows.nth(0).inner_text()
        assert "市级平台已处置完毕" in rows.nth(1).inner_text()
        assert rows.nth(1).locator("td.sig").inner_text() == "✓ c-dispatcher"
        assert rows.nth(1).locator("img.photo").count() == 1
        district.goto(f"https://127.0.0.1:{d.server.port}/exchange")
        wait_until(district, "document.body.dataset.ready === '1'")

        # A message altered on its way to the page: its content, or its act's log entry.
        def tampered(route: Any) -> None:
            response = route.fetch()
            doc = response.json()
            doc["received"][0]["content"]["reason"] = "另一个原因"
            doc["received"][1]["made_by"]["log"]["entry"]["account"] = "c-someone"
            route.fulfill(response=response, body=json.dumps(doc))

        district.route("**/exchange/messages", tampered)
        district.reload()
        wait_until(district, "document.body.dataset.ready === '1'")
        district.unroute("**/exchange/messages")
        marks = district.locator("#received td.sig").all_inner_texts()
        assert marks[:2] == ["✗ 消息与对端日志的记录不符", "✗ 对端日志中查无此签名行为"], marks

        # A page of one message a list: "older" brings the rest, each checked as the first.
        def one_each(route: Any) -> None:
            route.continue_(url=route.request.url + "?limit=1")

        district.route("**/exchange/messages", one_each)
        district.reload()
        wait_until(district, "document.body.dataset.ready === '1'")
        district.unroute("**/exchange/messages")
        assert district.locator("#received tbody tr").count() == 1
        district.click("#received-older")
        wait_until(
            district,
            "document.getElementById('received-older').hidden && Array.from("
            "document.querySelectorAll('#received td.sig')).every(t => t.className !== 'sig')",
        )
        marks = district.locator("#received td.sig").all_inner_texts()
        assert len(marks) >= 2 and set(marks) == {"✓ c-dispatcher"}, marks
        district.reload()
        wait_until(district, "document.body.dataset.ready === '1'")
        assert "对端已确认" in district.inner_text(f'#sent tr[data-source="{source_id}"]')
        # The forwarded case links to its page (where a withdrawn forwarding's case is recalled).
        link = district.locator(f'#sent tr[data-source="{source_id}"] a')
        assert (link.inner_text(), link.get_attribute("href")) == (number, f"/inbox/{number}")
        district.screenshot(path=str(tmp_path / "exchange-district.png"))

        # A case the city forwarded: its first step shows the city's signer, checked in the
        # browser against the city's CA (the district's exchange_peer_ca).
        photo = _upload(c, "c-dispatcher", screenshot_png(), "image/png")
        reply = c.signed(
            "c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
            {"kind": "event", "major": "01", "minor": "02", "grid": world.grid,
             "description": "浏览器查看的市级转办案件", "attachments": [photo]},
        )  # fmt: skip
        assert reply.status == 201, reply.json()
        came = reply.json()["exchange"]
        _ready(c, came["seq"])
        assert [s.outcome for s in c.send()] == ["acknowledged"]
        found = "SELECT case_number FROM exchange_inbox WHERE source_id = %s"
        forwarded = d.sql(found, came["source_id"])[0][0]

        def shown(alter: Any = None) -> tuple[list[str], str]:
            if alter is not None:

                def altered(route: Any) -> None:
                    response = route.fetch()
                    doc = response.json()
                    alter(doc["events"][0]["exchange"]["bundle"])
                    route.fulfill(response=response, body=json.dumps(doc))

                district.route("**/bundle", altered)
            district.goto(f"https://127.0.0.1:{d.server.port}/inbox/{forwarded}")
            wait_until(district, "document.getElementById('chain-status').className !== 'status'")
            district.unroute("**/bundle")
            marks = district.locator("#history td.sig").all_inner_texts()
            return marks, district.inner_text("#chain-status")

        marks, status = shown()
        assert marks == ["✓ 市级平台签名：c-dispatcher"], marks
        assert status.startswith("✓ 全部 1 个签名均已验证"), status
        # Its photo, shown as the one the city's dispatcher signed for.
        wait_until(district, "document.querySelector('#history img.photo') !== null")
        assert district.locator("#history .photo-bad").count() == 0
        district.screenshot(path=str(tmp_path / "forwarded-case.png"))

        def other_text(sent: dict[str, Any]) -> None:
            sent["content"]["case"]["description"] = "另一件事"

        def forged(sent: dict[str, Any]) -> None:
            signature = bytearray(base64.b64decode(sent["actions"][-1]["signature"]))
            signature[-1] ^= 1
            sent["actions"][-1]["signature"] = base64.b64encode(bytes(signature)).decode()

        for alter, words in ((other_text, "✗ 市级平台的消息与本案不符"), (forged, "✗ 签名无效")):
            marks, status = shown(alter)
            assert marks == [words], marks
            assert status.startswith("✗ 1 个步骤"), status
        browser.close()
    assert not errors, errors
    assert d.sql("SELECT state, bureau FROM city_case WHERE number = %s", number) == [
        ("dispatched", "city-platform")
    ]


def _vouched(side: Side, doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`doc` changed, its last act's audit entry rewritten to record the changed message and
    put under a checkpoint signed by `side`'s log key: what a faulty peer could send."""
    forged = {**copy.deepcopy(doc), **changes}
    log = forged["actions"][-1]["log"]
    log["entry"]["detail"]["exchange"] = bundle.note(
        forged["source_id"], forged["seq"], forged["kind"], forged["to"], forged["content"]
    )
    leaf = merkle.leaf_hash(rfc8785.dumps(log["entry"]))
    note = checkpoint.sign(
        checkpoint.Checkpoint(checkpoint.ORIGIN, 1, leaf), signer(side.settings.pki_dir)
    )
    log.update(leaf_index=0, tree_size=1, proof=[], checkpoint=note)
    return forged


def test_bundles_nothing_can_store_or_prove_are_refused(world: World) -> None:
    """Numbers beyond JSON's range, NUL characters and lone surrogates, fields no check
    covers, another sender, and (vouched for by the peer's own log) results naming no
    source id, component updates out of their columns' range, a forwarded case that is no
    object or component updates sent to a district: each 400, nothing taken in."""
    c = world.city
    good = _bundle(world, "无法保存的数据包")
    last = c.sql("SELECT last_seq FROM exchange_peer_state")[0][0]
    assert good["seq"] == last + 1
    taken = c.sql("SELECT count(*) FROM exchange_inbox")

    def refused(doc: dict[str, Any], reason: str) -> None:
        reply = _deliver(world, doc)
        assert reply.status == 400, reply.body
        assert reply.json()["error"] == "bundle_refused", reply.json()
        assert reason in reply.json()["message"], reply.json()
        assert c.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == last
        assert c.sql("SELECT count(*) FROM exchange_inbox") == taken

    for value in (2**60, float("nan"), float("inf")):
        doc = copy.deepcopy(good)
        doc["content"]["case"]["description"] = value
        refused(doc, "no canonical (RFC 8785) form")
        doc = copy.deepcopy(good)
        doc["actions"][-1]["log"]["entry"]["status"] = value
        refused(doc, "action 4: the audit entry has no canonical form")
    for text in ("\x00", "\ud800"):
        refused({**good, "from": text}, "NUL character or a lone surrogate")
        doc = copy.deepcopy(good)
        doc["actions"][0]["log"]["checkpoint"] += text + "\n"
        refused(doc, "NUL character or a lone surrogate")
    refused({**good, "note": "x"}, "unknown bundle fields: note")
    doc = copy.deepcopy(good)
    doc["actions"][0]["note"] = "x"
    refused(doc, "action 1: unknown signed action fields")
    refused({**good, "from": "district-2"}, "not from 'district'")

    d = world.district
    for kind, content, reason in (
        ("case.result", {"in_reply_to": 7, "result": "x"}, "names the source id it answers"),
        ("case.result", {"in_reply_to": {"a": 1}, "result": "x"}, "names the source id"),
        ("component.update", {"components": [{"code": "1" * 40, "version": 1}]}, "its code"),
        ("component.update", {"components": [{"code": "1" * 16, "version": 2**40}]}, "version"),
        ("case.forward", {"case": "x"}, "a forwarded case holds `case`"),
        # Fields no install writes are not kept to be shown on a case's page (a point, say).
        (
            "case.result",
            {"in_reply_to": "x", "result": "x", "point": [116.3, 39.9]},
            "the content holds fields no CityGrid install writes: point",
        ),
        (
            "case.forward",
            {"case": {"description": "x", "lon": 116.3, "lat": 39.9}},
            "the forwarded case holds fields no CityGrid install writes: lat, lon",
        ),
        (
            "component.update",
            {"components": [{"code": "1" * 16, "version": 1, "x": 1.5}]},
            "a component update holds fields no CityGrid install writes: x",
        ),
        (
            "exchange.withdrawn",
            {
                "withdrawn": "case.forward",
                "reason": "x",
                "content_sha256": "0" * 64,
                "attachments": [],
            },
            "holds fields no CityGrid install writes: attachments",
        ),
    ):
        refused(_vouched(d, good, kind=kind, content=content, source_id="faulty"), reason)
    assert _deliver(world, good).status == 200
    assert [s.outcome for s in d.send()] == ["replayed"]  # the district counts it as taken in

    # To a district, component updates are no message at all.
    city_bundle = _ready(world.city, 1)  # the city's first message, taken in long ago
    district_last = d.sql("SELECT last_seq FROM exchange_peer_state")[0][0]
    faulty = _vouched(
        world.city, city_bundle, kind="component.update", seq=district_last + 1,
        source_id="faulty", content={"components": [{"code": "1" * 16, "version": 1}]},
    )  # fmt: skip
    reply = d.ask("city-peer", "POST", "/exchange/receive", faulty, out=d.out)
    assert reply.status == 400 and "to the city platform only" in reply.json()["message"]
    assert d.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == district_last


def test_the_city_forwards_only_cases_a_district_can_record(world: World) -> None:
    """A forwarded case the district cannot record would be refused there for ever and hold
    back every later message: its codes are checked before it is queued."""
    c = world.city
    queued = c.sql("SELECT count(*) FROM exchange_outbox")
    event = {"kind": "event", "major": "01", "minor": "02", "description": "积水"}
    for params, reason in (
        ({**event, "grid": world.grid, "major": 1}, "major must be two digits"),
        ({**event, "grid": world.grid, "minor": None}, "minor must be two or three digits"),
        ({**event, "grid": world.grid, "major": "0" * 5000}, "major must be two digits"),
        ({**event, "grid": {"grid": world.grid}}, "grid must be a unit grid code"),
        (event, "grid must be a unit grid code"),
        ({"kind": "component", "description": "井盖缺失"}, "component must be a component code"),
        ({"kind": "component", "description": "x", "component": ["1" * 16]}, "component code"),
    ):
        reply = c.signed("c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
                         params)  # fmt: skip
        assert reply.status == 400 and reason in reply.json()["message"], (params, reply.json())
    assert c.sql("SELECT count(*) FROM exchange_outbox") == queued


def test_whatever_the_peer_answers_is_recorded(world: World) -> None:
    """The sender keeps the peer's answer (ack, error) as storable JSON: a NUL, a lone
    surrogate or a non-finite number in it never stops the sender with a traceback."""
    d = world.district
    _forward(world, _record(world, "对端的怪答复"))
    seq = d.sql("SELECT max(seq) FROM exchange_outbox")[0][0]
    _ready(d, seq)
    answers = iter([(400, {"error": "x", "message": "a\x00b\ud800"}), (200, {"at": float("nan")})])
    sent = sender.send_pending(d.settings, transport=lambda settings, doc: next(answers))
    assert [(s.outcome, s.reason) for s in sent] == [("refused", "a\\x00b\\ud800")]
    assert d.sql("SELECT last_error FROM exchange_outbox WHERE seq = %s", seq) == [
        ("refused: a\\x00b\\ud800",)
    ]
    # Left unacknowledged, it is an operator's finding (GET /health, config check) once late.
    with db.connect(d.settings) as conn:
        figures, found = pipeline_health.report(conn, d.settings, dt.timedelta(minutes=20))
    assert figures["exchange"]["unacknowledged"] >= 1
    late = [f for f in found if f.what == "exchange"]
    assert late and late[0].level == "warning" and "the last attempt: refused" in late[0].message
    sent = sender.send_pending(d.settings, transport=lambda settings, doc: next(answers))
    assert [s.outcome for s in sent] == ["acknowledged"]
    assert d.sql("SELECT ack FROM exchange_outbox WHERE seq = %s", seq) == [({"at": "nan"},)]
    # The city never had it: deliver it, so that the two stay in step for the tests after.
    assert _deliver(world, _ready(d, seq)).status == 200


def _city_forward(world: World, description: str, grid: str | None = None) -> dict[str, Any]:
    """The city forwards a new case to the district (queued, not sent)."""
    reply = world.city.signed(
        "c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
        {"kind": "event", "major": "01", "minor": "02", "description": description,
         "grid": grid or world.grid},
    )  # fmt: skip
    assert reply.status == 201, reply.json()
    return dict(reply.json()["exchange"])


def _withdraw(world: World, source_id: str, params: dict[str, Any]) -> Reply:
    return world.city.signed(
        "c-dispatcher", f"/exchange/messages/{source_id}/withdraw", "exchange.withdraw",
        f"exchange {source_id}", params,
    )  # fmt: skip


def _outbox(side: Side, source_id: str) -> list[tuple[Any, ...]]:
    return list(
        side.sql(
            "SELECT seq, kind, content, signed_action, acked_at IS NOT NULL, withdrawn_at"
            " IS NOT NULL FROM exchange_outbox WHERE source_id = %s",
            source_id,
        )
    )


def test_a_refused_message_is_withdrawn_and_the_next_goes_through(world: World) -> None:
    """A case the district cannot record (a well-formed grid code it does not have) is
    refused there for ever and holds back the next message; its signed withdrawal takes its
    place under its number, reaches the district, and the next message follows."""
    c, d = world.city, world.district
    stuck = _city_forward(world, "不存在的网格", grid="99999999999999")
    later = _city_forward(world, "排在后面的案件")
    assert later["seq"] == stuck["seq"] + 1
    _ready(c, later["seq"])
    for _ in range(2):  # every round: refused again, the later one never sent
        sent = c.send()
        assert [(s.source_id, s.outcome) for s in sent] == [(stuck["source_id"], "refused")]
    assert "cannot be recorded" in sent[0].reason
    original = _outbox(c, stuck["source_id"])[0]
    last = d.sql("SELECT last_seq FROM exchange_peer_state")[0][0]
    assert last == stuck["seq"] - 1

    reply = _withdraw(world, stuck["source_id"], {"reason": "  区级平台无此网格，改由电话通知  "})
    assert reply.status == 200, reply.json()
    said = reply.json()["exchange"]
    content = {
        "withdrawn": "case.forward",
        "reason": "区级平台无此网格，改由电话通知",
        "content_sha256": bundle.content_sha256(original[2]),
    }
    assert said == bundle.note(stuck["source_id"], stuck["seq"], "exchange.withdrawn", "district",
                               content)  # fmt: skip
    row = _outbox(c, stuck["source_id"])[0]
    assert row[:3] == (stuck["seq"], "exchange.withdrawn", content)
    assert row[3] != original[3] and row[4:] == (False, True)
    # The withdrawn act and its audit entry are as they were; the withdrawal's entry names it.
    assert c.sql("SELECT count(*) FROM signed_action WHERE id = %s", original[3]) == [(1,)]
    assert c.sql(
        "SELECT detail -> 'exchange' ->> 'kind' FROM audit_entry WHERE resource = 'exchange cases'"
        " AND detail -> 'exchange' ->> 'source_id' = %s", stuck["source_id"],
    ) == [("case.forward",)]  # fmt: skip
    assert c.sql(
        "SELECT action, account, detail -> 'exchange' FROM audit_entry WHERE resource = %s"
        " AND status = 200", f"exchange {stuck['source_id']}",
    ) == [("exchange.withdraw", "c-dispatcher", said)]  # fmt: skip

    # Its bundle is the withdrawing act alone, and proves itself offline like any other.
    doc = _ready(c, stuck["seq"])
    assert [json.loads(base64.b64decode(a["payload"]))["action"] for a in doc["actions"]] == [
        "exchange.withdraw"
    ]
    message = bundle.verify(doc, inbox.trust(d.settings), "district", "city")
    assert (message.kind, message.content) == ("exchange.withdrawn", content)

    sent = c.send()
    assert [(s.source_id, s.outcome) for s in sent] == [
        (stuck["source_id"], "acknowledged"),
        (later["source_id"], "acknowledged"),
    ]
    assert d.sql(
        "SELECT seq, kind, content, case_number FROM exchange_inbox WHERE source_id = %s",
        stuck["source_id"],
    ) == [(stuck["seq"], "exchange.withdrawn", content, None)]
    assert d.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == later["seq"]
    assert d.sql(
        "SELECT c.state, c.description FROM exchange_inbox i JOIN city_case c"
        " ON c.number = i.case_number WHERE i.source_id = %s", later["source_id"],
    ) == [("reported", "排在后面的案件")]  # fmt: skip
    shown = c.ask("c-dispatcher", "GET", "/exchange/messages").json()["sent"]
    mine = next(m for m in shown if m["source_id"] == stuck["source_id"])
    assert mine["withdrawn_at"] and mine["acked_at"] and not mine["too_late"]
    assert mine["kind"] == "exchange.withdrawn" and mine["content"] == content
    received = d.ask("d-dispatcher", "GET", "/exchange/messages").json()["received"]
    assert any(m["source_id"] == stuck["source_id"] for m in received)


def test_withdrawals_that_cannot_be_are_refused(world: World) -> None:
    """An unknown source id, a bad reason, an acknowledged message, a second withdrawal:
    each a JSON 4xx, nothing changed; a withdrawal the district cannot read is refused."""
    c, d = world.city, world.district
    queued = _city_forward(world, "撤回的各种拒绝")
    before = _outbox(c, queued["source_id"])
    for params in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "x" * 2001}, {"reason": 5},
                   {"reason": ["x"]}):  # fmt: skip
        reply = _withdraw(world, queued["source_id"], params)
        assert reply.status == 400 and reply.json()["error"] == "invalid", (params, reply.json())
    assert _withdraw(world, queued["source_id"], {"reason": "x" * 2000}).status == 200
    again = _withdraw(world, queued["source_id"], {"reason": "再撤一次"})
    assert again.status == 409 and "withdrawn already" in again.json()["message"], again.json()
    withdrawn = _outbox(c, queued["source_id"])
    assert withdrawn[0][1] == "exchange.withdrawn" and withdrawn[0][3] != before[0][3]
    unknown = _withdraw(world, "city-000000-999999", {"reason": "没有这条"})
    assert unknown.status == 404 and unknown.json()["error"] == "not_found", unknown.json()
    _ready(c, queued["seq"])
    assert [s.outcome for s in c.send()] == ["acknowledged"]
    withdrawn = _outbox(c, queued["source_id"])
    assert withdrawn[0][4:] == (True, True)
    acked = c.sql("SELECT source_id FROM exchange_outbox WHERE kind = 'case.forward'"
                  " AND acked_at IS NOT NULL ORDER BY seq LIMIT 1")[0][0]  # fmt: skip
    kept = _outbox(c, acked)
    reply = _withdraw(world, acked, {"reason": "已确认的"})
    assert reply.status == 409 and "acknowledged" in reply.json()["message"], reply.json()
    assert _outbox(c, acked) == kept and _outbox(c, queued["source_id"]) == withdrawn
    # The district's own outbox: the city's messages are not the district's to withdraw.
    assert _withdraw(world, d.sql("SELECT source_id FROM exchange_outbox LIMIT 1")[0][0],
                     {"reason": "x"}).status == 404  # fmt: skip

    # A withdrawal whose content the district cannot read (vouched for by the city's log).
    doc = _ready(c, queued["seq"])
    last = d.sql("SELECT last_seq FROM exchange_peer_state")[0][0]
    good = {"withdrawn": "case.forward", "reason": "x", "content_sha256": "0" * 64}
    for content, reason in (
        ({**good, "reason": ""}, "its reason"),
        ({**good, "reason": "x" * 2001}, "its reason"),
        ({**good, "content_sha256": "XYZ"}, "64 hex"),
        ({**good, "withdrawn": 3}, "names the kind"),
        ({"withdrawn": "case.forward", "reason": "x"}, "holds withdrawn, reason"),
    ):
        forged = _vouched(c, doc, seq=last + 1, source_id="faulty", content=content)
        reply = d.ask("city-peer", "POST", "/exchange/receive", forged, out=d.out)
        assert reply.status == 400 and reason in reply.json()["message"], reply.json()
    assert d.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == last


def test_a_withdrawal_after_the_original_was_taken_in_is_a_replay(world: World) -> None:
    """The district took the original in but its acknowledgement was lost: the withdrawal is
    answered 409 replayed, the sender counts it as acknowledged, the page says so, and the
    district keeps the case it recorded."""
    c, d = world.city, world.district
    queued = _city_forward(world, "确认丢失的案件")
    doc = _ready(c, queued["seq"])
    taken = d.ask("city-peer", "POST", "/exchange/receive", doc, out=d.out)
    assert taken.status == 200, taken.json()
    reply = _withdraw(world, queued["source_id"], {"reason": "以为对端没收到"})
    assert reply.status == 200, reply.json()
    _ready(c, queued["seq"])
    sent = c.send()
    assert [(s.source_id, s.status, s.outcome) for s in sent] == [
        (queued["source_id"], 409, "replayed")
    ]
    assert _outbox(c, queued["source_id"])[0][4:] == (True, True)
    assert d.sql(
        "SELECT kind, case_number IS NOT NULL FROM exchange_inbox WHERE source_id = %s",
        queued["source_id"],
    ) == [("case.forward", True)]
    assert d.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == queued["seq"]
    shown = c.ask("c-dispatcher", "GET", "/exchange/messages").json()["sent"]
    mine = next(m for m in shown if m["source_id"] == queued["source_id"])
    assert mine["too_late"] is True and mine["acked_at"]


def test_a_withdrawal_during_a_send_leaves_the_withdrawal_to_send(world: World) -> None:
    """The original is on its way (the district takes it in) when the withdrawal commits: the
    sender does not mark the withdrawal acknowledged for the original's answer; the next round
    sends the withdrawal, which the district answers replayed."""
    c, d = world.city, world.district
    queued = _city_forward(world, "发送途中撤回的案件")
    _ready(c, queued["seq"])

    def meanwhile(settings: Settings, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = sender.post(settings, doc)
        assert _withdraw(world, queued["source_id"], {"reason": "发送途中撤回"}).status == 200
        return answer

    sent = sender.send_pending(c.settings, transport=meanwhile)
    assert [(s.source_id, s.outcome) for s in sent] == [(queued["source_id"], "acknowledged")]
    assert _outbox(c, queued["source_id"])[0][1:2] + _outbox(c, queued["source_id"])[0][4:] == (
        "exchange.withdrawn", False, True,
    )  # fmt: skip
    _ready(c, queued["seq"])
    assert [s.outcome for s in c.send()] == ["replayed"]
    assert _outbox(c, queued["source_id"])[0][4:] == (True, True)
    assert d.sql("SELECT kind FROM exchange_inbox WHERE source_id = %s", queued["source_id"]) == [
        ("case.forward",)
    ]


def test_a_withdrawn_forward_brings_the_case_back_to_the_district(world: World) -> None:
    """A case forwarded to the city by mistake: the district withdraws the message, and the
    command centre recalls the case once the city has acknowledged the withdrawal, then
    dispatches it to its own bureau. While the city may hold the case (the message still
    queued, the withdrawal not yet acknowledged, the original taken in first), the recall is
    refused and nothing changes."""
    d, c = world.district, world.city
    bureau = d.sql(
        "SELECT code FROM organisation WHERE kind = 'bureau' AND code <> 'city-platform'"
        " ORDER BY code LIMIT 1"
    )[0][0]

    def withdraw(source_id: str, reason: str) -> Reply:
        return d.signed(
            "d-dispatcher", f"/exchange/messages/{source_id}/withdraw", "exchange.withdraw",
            f"exchange {source_id}", {"reason": reason},
        )  # fmt: skip

    def recall(number: str) -> Reply:
        return d.act("d-dispatcher", number, "recall", reason="区属道路，由区里处置")

    def refused(number: str, words: str) -> None:
        before = d.sql("SELECT state, version FROM city_case WHERE number = %s", number)
        reply = recall(number)
        assert reply.status == 409 and words in reply.json()["message"], reply.json()
        assert d.sql("SELECT state, version FROM city_case WHERE number = %s", number) == before

    number = _record(world, "误转市级平台的案件")
    said = _forward(world, number)
    refused(number, "withdraw that message first")
    assert withdraw(said["source_id"], "本区道路，误转").status == 200
    refused(number, "not yet acknowledged the withdrawal")
    _ready(d, said["seq"])
    sent = d.send()
    assert _outbox(d, said["source_id"])[0][1:2] + _outbox(d, said["source_id"])[0][4:] == (
        "exchange.withdrawn", True, True,
    ), sent  # fmt: skip
    assert c.sql("SELECT kind FROM exchange_inbox WHERE source_id = %s", said["source_id"]) == [
        ("exchange.withdrawn",)
    ]
    back = recall(number)
    assert back.status == 200, back.json()
    assert d.sql("SELECT state FROM city_case WHERE number = %s", number) == [("filed",)]
    again = d.act("d-dispatcher", number, "dispatch", bureau=bureau)
    assert again.status == 200, again.json()

    # The city took the original in, its acknowledgement lost: the withdrawal comes too late.
    late = _record(world, "对端已收下的案件")
    sent = _forward(world, late)
    doc = _ready(d, sent["seq"])
    assert c.ask("district-peer", "POST", "/exchange/receive", doc, out=c.out).status == 200
    assert withdraw(sent["source_id"], "以为市级未收到").status == 200
    _ready(d, sent["seq"])
    d.send()
    assert _outbox(d, sent["source_id"])[0][4:] == (True, True)
    refused(late, "before its withdrawal came")

    # Forwarded and acknowledged: the city answers it.
    kept = _record(world, "市级处置中的案件")
    taken = _forward(world, kept)
    _ready(d, taken["seq"])
    d.send()
    assert _outbox(d, taken["source_id"])[0][4:] == (True, False)
    refused(kept, "it answers it by the exchange")
    # The city's liaison gives it back; dispatched anew to a bureau of the district, it is
    # recalled like any other dispatch: the forwarding no longer holds it.
    assert d.act("d-liaison", kept, "return", reason="市级平台退回").status == 200
    assert d.act("d-dispatcher", kept, "dispatch", bureau=bureau).status == 200
    assert recall(kept).status == 200
    assert d.sql("SELECT state, bureau FROM city_case WHERE number = %s", kept) == [("filed", None)]


def test_a_case_the_city_forwarded_verifies_offline_back_to_the_citys_signer(
    world: World, tmp_path: Path
) -> None:
    """The district's case bundle starts with the city's bundle as received: the city
    dispatcher's signed act in the city's log, checked against the city's CA and log key
    (pinned by the verifier, by default from the district's exchange settings); every later
    act is the district's, and the chain verifies offline."""
    from click.testing import CliRunner

    from mapserver.cli import main

    from .evidence import checkpoint as logged

    d, c = world.district, world.city
    said = _city_forward(world, "市民热线：井盖缺失")
    _ready(c, said["seq"])
    assert [s.outcome for s in c.send()] == ["acknowledged"]
    found = "SELECT case_number FROM exchange_inbox WHERE source_id = %s"
    number = d.sql(found, said["source_id"])[0][0]
    assert d.act("d-operator", number, "accept").status == 200
    assert d.act("d-leader", number, "file").status == 200
    logged(d.settings)
    served = d.ask("d-leader", "GET", f"/cases/{number}/bundle").json()
    assert served["events"][0]["exchange"]["source_id"] == said["source_id"]
    assert served["events"][0]["bundle"] is None

    def run(*args: str, env: dict[str, str | None] = d.env) -> Any:  # type: ignore[assignment]
        return CliRunner().invoke(main, list(args), env=env)

    out = tmp_path / "case.json"
    assert run("case", "export", number, "--bundle", str(out)).exit_code == 0
    valid = run("verify-action", str(out))
    assert valid.exit_code == 0, valid.output
    assert valid.output.startswith(f"valid: case {number}, 2 signed actions from case.accept")
    assert (
        f"forwarded by the city as message {said['source_id']} (exchange.forward by "
        "c-dispatcher, logged " in valid.output
    ), valid.output

    # On a machine with no install: the district's CA and log key, and the city's, named.
    pins = ["--ca", str(d.store.cert_path), "--log-key", str(d.settings.pki_dir / PUBLIC_FILE)]
    peer = ["--peer-ca", str(c.store.cert_path)]
    bare = {k: None for k in d.env if k.startswith("CITYGRID_EXCHANGE_")}
    named = run("verify-action", str(out), *pins, *peer, "--peer-log-key",
                str(c.settings.pki_dir / PUBLIC_FILE), env={**d.env, **bare})  # fmt: skip
    assert named.exit_code == 0 and named.output == valid.output, named.output
    unpinned = run("verify-action", str(out), *pins, env={**d.env, **bare})
    assert unpinned.exit_code == 1, unpinned.output
    assert "forwarded by the exchange peer: pin the peer's CA" in unpinned.output
    wrong_key = run("verify-action", str(out), *pins, *peer, "--peer-log-key",
                    str(d.settings.pki_dir / PUBLIC_FILE), env={**d.env, **bare})  # fmt: skip
    assert wrong_key.exit_code == 1 and "not signed by the peer's log key" in wrong_key.output

    doc = json.loads(out.read_text("utf-8"))
    tampered = {
        "the case's text": ("content", "case", "description"),
        "the message's number": ("source_id",),
    }
    for what, path in tampered.items():
        forged = copy.deepcopy(doc)
        inside = forged["events"][0]["exchange"]["bundle"]
        for key in path[:-1]:
            inside = inside[key]
        inside[path[-1]] = "改过的" + str(inside[path[-1]])
        out.write_text(json.dumps(forged, ensure_ascii=False), "utf-8")
        refused = run("verify-action", str(out))
        assert refused.exit_code == 1, (what, refused.output)
        assert "INVALID: event 1: the peer's bundle: the message" in refused.output, what
    forged = copy.deepcopy(doc)
    forged["events"][0]["exchange"]["source_id"] = "city-0"
    out.write_text(json.dumps(forged), "utf-8")
    other = run("verify-action", str(out))
    assert other.exit_code == 1 and "the peer's bundle is of another message" in other.output
    forged = copy.deepcopy(doc)
    del forged["events"][0]["exchange"]
    out.write_text(json.dumps(forged), "utf-8")
    unsigned = run("verify-action", str(out))
    assert unsigned.exit_code == 1 and "event 1: no signed action" in unsigned.output

    # The message itself, as the district received it: exported and checked on its own.
    message = tmp_path / "message.json"
    exported = run("exchange", "export", said["source_id"], "--bundle", str(message))
    assert exported.exit_code == 0, exported.output
    checked = run("verify-action", str(message))
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith(
        f"valid: message {said['source_id']} (seq {said['seq']}, case.forward) from the city to "
        "the district: exchange.forward by c-dispatcher, logged "
    ), checked.output
    assert checked.output.rstrip().endswith("in the peer's log; 1 signed action")
    sent = json.loads(message.read_text("utf-8"))
    for forged, words in (
        ({**sent, "to": "city", "from": "district"}, "addressee or content"),
        ({**sent, "to": "district", "from": "district"}, "from the city to a district or back"),
        ({**sent, "seq": sent["seq"] + 1}, "is not what the peer's log recorded"),
    ):
        message.write_text(json.dumps(forged, ensure_ascii=False), "utf-8")
        refused = run("verify-action", str(message))
        assert refused.exit_code == 1 and words in refused.output, (words, refused.output)
    message.write_text(json.dumps(sent), "utf-8")
    unpinned = run("verify-action", str(message), *pins, env={**d.env, **bare})
    assert unpinned.exit_code == 1 and "pin the peer's CA" in unpinned.output
    unknown = run("exchange", "export", "city-no-such", "--bundle", str(message))
    assert unknown.exit_code == 1 and unknown.output.startswith("citygrid: error: no message")


# What a case bundle carries beside its evidence, for reading only: the time the event was
# stored here and the row number of its signed action (the log's time and the signature
# itself are what verify), and the local account that took a forwarded case in (the city's
# signer is what verifies). Nothing else may change and still verify. Dropped, besides: the
# first event's null `from` and `bundle` (absent reads as null), and the last event (a bundle
# proves each event it holds, not that none came after: later acts are in the log).
UNBOUND = re.compile(r"^events/(\d+/(at|signed_action)|0/actor)$")
DROPPABLE = re.compile(r"^(events/0/(from|bundle)|head)$")


def test_an_altered_case_or_message_bundle_never_verifies(world: World, tmp_path: Path) -> None:
    """Every field of a forwarded case's bundle, and of the city's message inside it, dropped,
    given another type or edited: `verify-action` answers one line, refuses, and never takes
    the altered bundle as valid, except for the fields it carries only to be read."""
    from click.testing import CliRunner

    from mapserver.cli import main

    from .evidence import checkpoint as logged

    d, c = world.district, world.city
    said = _city_forward(world, "市民热线：路灯不亮")
    _ready(c, said["seq"])
    assert [s.outcome for s in c.send()] == ["acknowledged"]
    number = d.sql(
        "SELECT case_number FROM exchange_inbox WHERE source_id = %s", said["source_id"]
    )[0][0]
    assert d.act("d-operator", number, "accept").status == 200
    logged(d.settings)
    out = tmp_path / "case.json"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["case", "export", number, "--bundle", str(out)], env=d.env).exit_code
        == 0
    )
    doc = json.loads(out.read_text("utf-8"))
    paths = sorted(set(leaves(doc)), key=str)
    accepted, crashed = [], []
    for path, how in itertools.product(paths, KINDS):
        out.write_text(json.dumps(mutated(doc, path, how), ensure_ascii=False), "utf-8")
        result = runner.invoke(main, ["verify-action", str(out)], env=d.env)
        lines = result.output.strip().splitlines()
        name = "/".join(map(str, path))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            crashed.append((name, how, type(result.exception).__name__))
        elif len(lines) != 1:
            crashed.append((name, how, lines[-3:]))
        elif (
            result.exit_code == 0
            and not UNBOUND.match(name)
            and (how != "drop" or not DROPPABLE.match(name))
        ):
            accepted.append((name, how))
    assert not crashed, crashed[:10]
    assert not accepted, accepted[:20]
    assert len(paths) > 100


def test_the_message_lists_page_back_to_the_first(world: World) -> None:
    """Each list pages by its sequence numbers: walked a message a page, it gives every
    message once, newest first, as one page of all does; bad paging is a JSON 400."""
    for n in (1, 2):
        queued = _city_forward(world, f"分页的案件 {n}")
        _ready(world.city, queued["seq"])
    assert {s.outcome for s in world.city.send()} == {"acknowledged"}
    for side, who in ((world.city, "c-dispatcher"), (world.district, "d-dispatcher")):
        whole = side.ask(who, "GET", "/exchange/messages").json()
        assert whole["older_sent"] is None and whole["older_received"] is None
        for name, param in (("sent", "sent_before"), ("received", "received_before")):
            walked, query = [], "limit=1"
            while True:
                page = side.ask(who, "GET", f"/exchange/messages?{query}").json()
                assert len(page[name]) <= 1
                walked += [m["source_id"] for m in page[name]]
                if page[f"older_{name}"] is None:
                    break
                query = f"limit=1&{param}={page[f'older_{name}']}"
            assert walked == [m["source_id"] for m in whole[name]], (who, name)
        mine = whole["sent"] if side is world.city else whole["received"]
        assert len(mine) >= 2, who
        for query in ("limit=0", "limit=101", "limit=x", "sent_before=-1", "received_before=1e3",
                      "sent_before=" + "9" * 100, "page=2", "case=bogus"):  # fmt: skip
            reply = side.ask(who, "GET", f"/exchange/messages?{query}")
            assert reply.status == 400 and reply.json()["error"] == "invalid", (query, reply.json())


def _upload(side: Side, who: str, data: bytes, media_type: str) -> str:
    assert side.server is not None
    reply = request(
        side.server.port, "/cases/attachments", side.store.cert_path, side.out / f"{who}.crt",
        side.out / f"{who}.key", method="POST", body=data, headers={"Content-Type": media_type},
    )  # fmt: skip
    assert reply.status == 201, reply.body
    return str(reply.json()["sha256"])


def _put_file(world: World, sha256: str, data: bytes, media_type: str) -> Reply:
    c = world.city
    assert c.server is not None
    return request(
        c.server.port, f"/exchange/files/{sha256}", c.store.cert_path,
        c.out / "district-peer.crt", c.out / "district-peer.key", method="PUT", body=data,
        headers={"Content-Type": media_type},
    )  # fmt: skip


def test_photos_and_voice_travel_with_the_messages(world: World, tmp_path: Path) -> None:
    """A forwarded case carries its steps' photos and recordings to the city, a case the city
    forwards carries the photos its dispatcher signed for, and so does a result: each file
    goes before its bundle, checked on arrival to hash to what the sender's log vouched for
    and to carry nothing but pixels or audio frames."""
    d, c = world.district, world.city
    photo = _upload(d, "d-operator", phone_photo(), "image/jpeg")
    voice = _upload(d, "d-operator", amr(), "audio/amr")
    created = d.signed(
        "d-operator", "/cases/record", "case.record", "cases",
        {"source": "phone", "kind": "event", "major": "01", "minor": "02",
         "description": "井盖破损，附照片和录音", "place": {"grid": world.grid},
         "attachments": [photo, voice]},
    )  # fmt: skip
    assert created.status == 201, created.json()
    number = str(created.json()["number"])
    assert d.act("d-operator", number, "accept").status == 200
    assert d.act("d-leader", number, "file").status == 200
    said = _forward(world, number)
    doc = _ready(d, said["seq"])
    listed = doc["content"]["attachments"]
    assert [(a["sha256"], a["kind"]) for a in listed] == [(photo, "photo"), (voice, "voice")]
    assert "attachments_left" not in doc["content"]

    # The bundle alone is refused until its files are there; nothing is taken in.
    last = c.sql("SELECT last_seq FROM exchange_peer_state")[0][0]
    early = _deliver(world, doc)
    assert early.status == 409 and early.json()["error"] == "files_missing", early.json()
    assert early.json()["missing"] == [photo, voice]
    assert c.sql("SELECT last_seq FROM exchange_peer_state")[0][0] == last
    # A file that does not hash to its name, or that still carries its place, is refused.
    raw = phone_photo()
    wrong = _put_file(world, photo, raw, "image/jpeg")
    assert wrong.status == 400 and "do not hash to its name" in wrong.json()["message"]
    exif = _put_file(world, hashlib.sha256(raw).hexdigest(), raw, "image/jpeg")
    assert (
        exif.status == 400 and "a 0xFFE1 segment, which holds no pixels" in exif.json()["message"]
    )
    broken = screenshot_png()[:-5] + b"\x00" + screenshot_png()[-4:]  # a bad CRC: not a 500
    crc = _put_file(world, hashlib.sha256(broken).hexdigest(), broken, "image/png")
    assert crc.status == 400 and "not a readable PNG" in crc.json()["message"], crc.body
    assert c.sql("SELECT count(*) FROM exchange_file WHERE sha256 = %s", photo) == [(0,)]

    assert [s.outcome for s in d.send()] == ["acknowledged"]
    got = c.ask("c-dispatcher", "GET", "/exchange/messages").json()["received"]
    forwarded = next(m for m in got if m["source_id"] == said["source_id"])
    assert forwarded["content"]["attachments"] == listed
    for item in listed:
        reply = c.ask(
            "c-dispatcher", "GET", f"/exchange/messages/{said['source_id']}/files/{item['sha256']}"
        )
        assert reply.status == 200 and reply.headers["Content-Type"] == item["media_type"]
        assert hashlib.sha256(reply.body).hexdigest() == item["sha256"]
    assert (
        b"GPS"
        not in c.ask(
            "c-dispatcher", "GET", f"/exchange/messages/{said['source_id']}/files/{photo}"
        ).body
    )
    # Only a file the message lists, to the command centre; the peer asks only whether it is held.
    other = c.ask("c-dispatcher", "GET", f"/exchange/messages/{said['source_id']}/files/{'0' * 64}")
    assert other.status == 404 and other.json()["error"] == "not_found"
    held = c.ask("district-peer", "GET", f"/exchange/files/{photo}", out=c.out)
    assert held.status == 200 and held.json()["held"] is True
    assert c.ask("c-dispatcher", "GET", f"/exchange/files/{photo}").status == 403

    # The city forwards a case with its dispatcher's photo, twice (the same photo in two
    # cases), and answers the district's case with a photo of the repair.
    city_photo = _upload(c, "c-dispatcher", screenshot_png(), "image/png")
    numbers = []
    for n in (1, 2):
        reply = c.signed(
            "c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
            {"kind": "event", "major": "01", "minor": "02", "description": f"市民热线附照片 {n}",
             "grid": world.grid, "attachments": [city_photo]},
        )  # fmt: skip
        assert reply.status == 201, reply.json()
        numbers.append(reply.json()["exchange"])
    unknown = c.signed(
        "c-dispatcher", "/exchange/forward", "exchange.forward", "exchange cases",
        {"kind": "event", "major": "01", "minor": "02", "description": "无此照片",
         "grid": world.grid, "attachments": ["1" * 64]},
    )  # fmt: skip
    assert unknown.status == 400 and "no upload" in unknown.json()["message"]
    answered = c.signed(
        "c-dispatcher", f"/exchange/messages/{said['source_id']}/result", "exchange.result",
        f"exchange {said['source_id']}",
        {"result": "已更换井盖", "outcome": "handled", "attachments": [city_photo]},
    )  # fmt: skip
    assert answered.status == 200, answered.json()
    _ready(c, answered.json()["exchange"]["seq"])
    assert {s.outcome for s in c.send()} == {"acknowledged"}
    for queued in numbers:
        case = d.sql(
            "SELECT case_number FROM exchange_inbox WHERE source_id = %s", queued["source_id"]
        )[0][0]
        shown = d.ask("d-operator", "GET", f"/cases/{case}").json()
        assert [a["sha256"] for a in shown["history"][0]["attachments"]] == [city_photo]
        body = d.ask("d-operator", "GET", f"/cases/{case}/attachments/{city_photo}").body
        assert hashlib.sha256(body).hexdigest() == city_photo
    result = d.ask("d-dispatcher", "GET", f"/exchange/messages?case={number}").json()["received"]
    assert [a["sha256"] for a in result[0]["content"]["attachments"]] == [city_photo]
    # The liaison who records the result sees it on the case, with its files; a bureau that
    # may not see the case sees neither.
    mine = d.ask("d-liaison", "GET", f"/cases/{number}/exchange").json()
    assert mine["me"] == "district"
    assert [m["kind"] for m in mine["received"]] == ["case.result"]
    assert [m["source_id"] for m in mine["sent"]] == [said["source_id"]]
    path = f"/cases/{number}/exchange/{result[0]['source_id']}/files/{city_photo}"
    assert hashlib.sha256(d.ask("d-liaison", "GET", path).body).hexdigest() == city_photo
    elsewhere = f"/cases/{number}/exchange/{said['source_id']}/files/{city_photo}"
    assert d.ask("d-liaison", "GET", elsewhere).status == 404  # not a file that message lists
    for refused in (f"/cases/{number}/exchange", path):
        reply = d.ask("d-bureau", "GET", refused)
        assert reply.status == 404 and reply.json()["error"] == "not_found", refused

    # Offline: the case the city forwarded and the message itself, exported with their files
    # and checked with them against what the city's signer and log vouched for.
    from click.testing import CliRunner

    from mapserver.cli import main

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, list(args), env=d.env)

    case = d.sql(
        "SELECT case_number FROM exchange_inbox WHERE source_id = %s", numbers[0]["source_id"]
    )[0][0]
    for what, out, exported in (
        ("case", tmp_path / "case-files",
         run("case", "export", case, "--bundle", str(tmp_path / "case.json"), "--files",
             str(tmp_path / "case-files"))),
        ("message", tmp_path / "message-files",
         run("exchange", "export", numbers[0]["source_id"], "--bundle",
             str(tmp_path / "message.json"), "--files", str(tmp_path / "message-files"))),
    ):  # fmt: skip
        assert exported.exit_code == 0, exported.output
        assert [f.name for f in out.iterdir()] == [f"{city_photo}.png"]
        bundle_file = str(tmp_path / f"{what}.json")
        valid = run("verify-action", bundle_file, "--files", str(out))
        assert valid.exit_code == 0, valid.output
        assert "1 file(s) verified against what the bundle vouches for" in valid.output
        (out / f"{city_photo}.png").write_bytes(screenshot_png())  # another encoding's bytes
        altered = run("verify-action", bundle_file, "--files", str(out))
        assert altered.exit_code == 1 and "do not hash to its name" in altered.output
        (out / f"{city_photo}.png").unlink()
        stray = phone_photo()
        (out / f"{hashlib.sha256(stray).hexdigest()}.jpg").write_bytes(stray)
        unnamed = run("verify-action", bundle_file, "--files", str(out))
        assert unnamed.exit_code == 1 and "no signed action or message" in unnamed.output
    reply = d.ask(
        "d-dispatcher", "GET",
        f"/exchange/messages/{result[0]['source_id']}/files/{city_photo}",
    )  # fmt: skip
    assert reply.status == 200 and hashlib.sha256(reply.body).hexdigest() == city_photo


def test_files_no_message_names_are_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the peer delivers wait for the bundle that names them; past a bound of waiting
    bytes (512 MiB in a week: a message's files and failed sends'), a faulty peer is refused
    rather than let fill the database. A file a message taken in names no longer counts."""
    from PIL import Image

    from mapserver.cases import media
    from mapserver.exchange import files

    def photo(shade: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (32, 32), (shade, 0, 0)).save(out, "PNG")
        return media.clean("image/png", out.getvalue()).data

    made = [photo(shade) for shade in (11, 12, 13)]
    monkeypatch.setattr(files, "MAX_WAITING_BYTES", len(made[0]) + len(made[1]))
    with psycopg.connect(world.city.settings.database_url) as conn:
        for data in made[:2]:
            assert files.take(conn, hashlib.sha256(data).hexdigest(), "image/png", data)
        with conn.transaction(), pytest.raises(files.TooManyWaiting, match="names them"):
            files.take(conn, hashlib.sha256(made[2]).hexdigest(), "image/png", made[2])
        named = [{"sha256": hashlib.sha256(made[0]).hexdigest()}]
        conn.execute(
            "INSERT INTO exchange_inbox (source_id, seq, kind, content, bundle, bundle_sha256,"
            " signer) VALUES ('bound-test', 2000000000, 'case.result', %s, '{}', %s, 'x')",
            (Jsonb({"attachments": named}), "0" * 64),
        )
        assert files.take(conn, hashlib.sha256(made[2]).hexdigest(), "image/png", made[2])
        conn.rollback()


def test_files_no_message_names_are_pruned_by_the_owner(world: World) -> None:
    """`citygrid exchange prune-files` removes what a send that never completed left (files
    the peer delivered that no message names, once a week old), never a file a message
    names, nor a young one whose message may still come; the serving role may not."""
    from click.testing import CliRunner
    from PIL import Image

    from mapserver.cases import media
    from mapserver.cli import main
    from mapserver.exchange import files

    def photo(shade: int) -> tuple[str, bytes]:
        out = io.BytesIO()
        Image.new("RGB", (16, 16), (0, shade, 0)).save(out, "PNG")
        data = media.clean("image/png", out.getvalue()).data
        return hashlib.sha256(data).hexdigest(), data

    c = world.city
    (old, old_data), (young, young_data) = photo(21), photo(22)
    with psycopg.connect(c.settings.database_url) as conn:
        assert files.take(conn, young, "image/png", young_data)
        conn.execute(
            "INSERT INTO exchange_file (sha256, kind, media_type, data, bytes, width, height,"
            " received, stored_at) VALUES (%s, 'photo', 'image/png', %s, %s, 16, 16, true,"
            " now() - interval '10 days')",
            (old, old_data, len(old_data)),
        )
        named = conn.execute(
            "SELECT count(*) FROM exchange_file f WHERE received AND EXISTS (SELECT 1 FROM"
            " exchange_inbox m WHERE m.content -> 'attachments' @> jsonb_build_array("
            "jsonb_build_object('sha256', f.sha256::text)))"
        ).fetchone()[0]  # type: ignore[index]
    assert named >= 1  # the files of the messages the other tests exchanged
    pruned = CliRunner().invoke(main, ["exchange", "prune-files"], env=c.env)
    assert pruned.exit_code == 0, pruned.output
    assert pruned.output.startswith(f"removed 1 file(s), {len(old_data)} bytes"), pruned.output
    left = {r[0] for r in c.sql("SELECT sha256 FROM exchange_file")}
    assert old not in left and young in left
    assert c.sql(
        "SELECT count(*) FROM exchange_file f WHERE received AND EXISTS (SELECT 1 FROM"
        " exchange_inbox m WHERE m.content -> 'attachments' @> jsonb_build_array("
        "jsonb_build_object('sha256', f.sha256::text)))"
    ) == [(named,)]
    assert c.sql(
        "SELECT detail ->> 'removed' FROM audit_entry WHERE action = 'exchange.prune_files'"
    ) == [("1",)]
    serving = c.settings.database_url.replace("//postgres@", "//citygrid_app@")
    refused = CliRunner().invoke(
        main, ["exchange", "prune-files"], env={**c.env, "CITYGRID_DATABASE_URL": serving}
    )
    assert refused.exit_code == 1 and "may not remove exchange files" in refused.output
