"""The case workflow on the production app: a case from report to closing, every step a
signed action by the right role; refusals that change nothing; scope; gap-free numbers."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auth import pki, policy, signed_action
from auth.signed_action import verify_bundle
from mapserver import db
from mapserver.cases import flow
from mapserver.cases.evidence import verify_case_bundle

from .app_client import Install
from .conftest import demo_database
from .evidence import checkpoint, head_logged, trust
from .sequenced import sequenced

ROLES = {
    "operator": ("operator", None),
    "inspector": ("inspector", "street-001"),
    "inspector2": ("inspector", "street-002"),
    "leader": ("shift_leader", None),
    "dispatcher": ("dispatcher", None),
    "bureau": ("bureau_handler", "BUREAU"),
    "otherbureau": ("bureau_handler", "OTHER"),
    "supervisor": ("street_supervisor", "street-002"),
}


class Desk:
    """The people of the two centres, a bureau and the field, each with a signing key."""

    def __init__(self, install: Install):
        self.install = install
        with psycopg.connect(install.settings.database_url) as conn:
            bureaus = [
                r[0]
                for r in conn.execute(
                    "SELECT code FROM organisation WHERE kind = 'bureau' ORDER BY code"
                ).fetchall()
            ]
            self.grid = conn.execute(
                "SELECT code FROM unit_grid WHERE code LIKE '110108001%' ORDER BY code LIMIT 1"
            ).fetchone()[0]
        self.bureau, self.other_bureau = bureaus[0], bureaus[1]
        for who, (role, org) in ROLES.items():
            org = {"BUREAU": self.bureau, "OTHER": self.other_bureau}.get(org or "", org)
            install.account(f"cs-{who}", [role], org)

    def client(self, who: str):  # type: ignore[no-untyped-def]
        return self.install.client(f"cs-{who}")

    def record(  # type: ignore[no-untyped-def]
        self, who: str = "operator", contact: str | None = "13800000000", **params: Any
    ):
        """A signed creation; the caller's contact goes beside it, signed as a salted digest."""
        from mapserver.cases import contact as contact_mod

        body = {
            "source": "phone",
            "kind": "event",
            "major": "01",
            "minor": "02",
            "description": "路边暴露垃圾",
            "place": {"grid": self.grid},
            **params,
        }
        private = None
        if contact is not None:
            found, body["contact_digest"] = contact_mod.new(contact)
            private = found._asdict() | {"contact": found.text}
            private.pop("text")
        path = "/cases/record" if body["source"] != "inspector" else "/cases/report"
        action = "case.record" if body["source"] != "inspector" else "case.report"
        envelope = self.install.envelope(f"cs-{who}", action, "cases", body)
        if private is not None:
            envelope = {**envelope, "private": private}
        return self.client(who).post(path, json=envelope)

    def act(self, who: str, number: str, name: str, **params: Any):  # type: ignore[no-untyped-def]
        state = params.pop("from_", None) or self.state(number)
        body = {"from": state, **params}
        envelope = self.install.envelope(f"cs-{who}", f"case.{name}", f"case {number}", body)
        return self.client(who).post(f"/cases/{number}/{name}", json=envelope)

    def state(self, number: str) -> str:
        with psycopg.connect(self.install.settings.database_url) as conn:
            return str(
                conn.execute("SELECT state FROM city_case WHERE number = %s", (number,)).fetchone()[
                    0
                ]
            )

    def snapshot(self, number: str) -> tuple[Any, ...]:
        with psycopg.connect(self.install.settings.database_url) as conn:
            return tuple(
                conn.execute(
                    "SELECT c.state, c.version, c.bureau, (SELECT count(*) FROM case_event e"
                    " WHERE e.case_id = c.id) FROM city_case c WHERE number = %s",
                    (number,),
                ).fetchone()
            )


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """A demo district of its own: its cases hold on to its unit grids."""
    settings = demo_database("citygrid_cases", tmp_path_factory.mktemp("cases-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("cases-certs"), rate_limit_api="*=100000/hour"
    )
    yield Desk(install)
    install.close()
    db.drop_database(settings)


def test_every_transition_action_is_granted_to_a_role() -> None:
    granted = {a for rule in policy.POLICY.values() for a in rule.actions}
    assert not flow.ACTIONS - granted, flow.ACTIONS - granted
    reachable = {"reported"}
    for _ in flow.STATES:
        reachable |= {t.target for t in flow.TRANSITIONS.values() if t.sources & reachable} - {
            "resume",
            "stay",
        }
    assert reachable == set(flow.STATES)


def test_readme_diagram_is_generated_from_the_table() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    assert flow.diagram() in readme


def test_pure_state_machine_refusals() -> None:
    assert flow.fire("file", "accepted", {}) == "filed"
    with pytest.raises(flow.IllegalTransition) as illegal:
        flow.fire("file", "reported", {})
    assert illegal.value.allowed == ["accept", "verify", "reject", "cancel"]
    with pytest.raises(Exception, match="'bureau'"):
        flow.fire("dispatch", "filed", {})
    with pytest.raises(Exception, match="reason must be one of duplicate, invalid"):
        flow.fire("reject", "reported", {"reason": "boring"})
    assert flow.fire("resume", "suspended", {}, resume_to="handling") == "handling"


def test_a_case_from_complaint_to_closing_with_a_rework(desk: Desk, tmp_path: Path) -> None:
    created = desk.record()
    assert created.status_code == 201, created.get_json()
    case = created.get_json()
    number = case["number"]
    assert re.fullmatch(r"\d{4}-\d{6}", number) and case["state"] == "reported"
    assert case["grid"] == desk.grid and case["street"]["code"] == "110108001"
    assert set(case["pixel"]) == {"level", "x", "y", "col", "row"}
    assert case["contact"] == "13800000000"  # the operator sees the caller's contact
    assert case["deadline"] and case["stage"] == "accept"

    steps = [
        ("inspector", "verify", {"note": "现场属实"}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
        ("bureau", "receive", {}),
        ("bureau", "handle", {"result": "已清运"}),
        ("dispatcher", "forward", {}),
        ("operator", "request_check", {}),
        ("inspector", "check_fail", {"note": "仍有残留"}),
        ("bureau", "handle", {"result": "已彻底清理"}),
        ("dispatcher", "forward", {}),
        ("operator", "request_check", {}),
        ("inspector", "check_pass", {"note": "已清理干净"}),
    ]
    for who, name, params in steps:
        reply = desk.act(who, number, name, **params)
        assert reply.status_code == 200, (name, reply.get_json())
    shown = desk.client("leader").get(f"/cases/{number}").get_json()
    assert shown["state"] == "closed" and shown["rework_count"] == 1
    assert "contact" not in shown  # only operators see it
    assert shown["bureau"] == desk.bureau and shown["bureau_name"]  # the bureau, by name too
    history = shown["history"]
    assert [h["transition"] for h in history] == ["create"] + [s[1] for s in steps]
    assert [h["version"] for h in history] == list(range(1, len(steps) + 2))
    assert all(h["signed_action"] for h in history)
    ended = [h for h in history if h["stage"]]
    assert {h["stage"] for h in ended} >= {"accept", "file", "dispatch", "handle", "check"}
    assert all(h["on_time"] is True for h in ended)  # all done within minutes

    checkpoint(desk.install.settings)  # the acts' entries under a signed checkpoint
    first = desk.client("leader").get(f"/cases/{number}/bundle").get_json()
    assert first["head"]["version"] == len(history) and "try again" in first["head"]["pending"]
    head_logged(desk.install.settings, number)  # that request's entry states its version
    bundle = desk.client("leader").get(f"/cases/{number}/bundle").get_json()
    pinned = trust(desk.install.settings)
    head = verify_case_bundle(bundle, pinned).head
    assert head is not None and head.entry["account"] == "cs-leader"
    assert head.entry["detail"]["case_head"] == {
        "case": number,
        "version": len(history),
        "state": "closed",
    }
    signed = [verify_bundle(e["bundle"], pinned).action for e in bundle["events"]]
    assert [s.action for s in signed] == ["case.record"] + [f"case.{s[1]}" for s in steps]
    assert all(s.resource == f"case {number}" for s in signed[1:])
    assert signed[3].account == "cs-dispatcher" and signed[3].parameters["bureau"] == desk.bureau


def test_a_field_no_client_writes_is_refused(desk: Desk) -> None:
    """The signed parameters are kept in the history and shown to whoever may see the case:
    a field no client writes (a point, say) was accepted, kept and shown. Now 400, and
    nothing is stored; nor may a person claim the exchange's or Open311's origin."""
    with psycopg.connect(desk.install.settings.database_url) as conn:
        before = conn.execute("SELECT count(*) FROM city_case").fetchone()
    for extra in (
        {"location": {"lon": 116.3038917, "lat": 39.9881489}},
        {"exchange": {"source_id": "city-1", "signer": "someone"}},
        {"open311": {"service_code": "event-01-02"}},
    ):
        refused = desk.record(**extra)
        assert refused.status_code == 400, refused.get_json()
        assert refused.get_json()["message"] == f"unknown field {next(iter(extra))!r}"
    long_class = desk.record(minor="0" * 2000)
    assert long_class.status_code == 400 and len(long_class.get_json()["message"]) < 80
    component = {"kind": "component", "component": "110108" + "01" + "01" + "000001"}
    placed = desk.record(**component, place={"grid": desk.grid})
    assert placed.status_code == 400 and "not by place" in placed.get_json()["message"]
    with psycopg.connect(desk.install.settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM city_case").fetchone() == before
    number = desk.record().get_json()["number"]
    step = desk.act("operator", number, "accept", location=[443000.12, 4427000.55])
    assert step.status_code == 400 and step.get_json()["message"] == "unknown field 'location'"
    assert desk.state(number) == "reported"
    assert desk.act("operator", number, "accept", note="电话回访属实").status_code == 200


def test_refusals_change_nothing(desk: Desk) -> None:
    number = desk.record().get_json()["number"]
    before = desk.snapshot(number)
    illegal = desk.act("leader", number, "file")
    assert illegal.status_code == 409
    body = illegal.get_json()
    assert body["state"] == "reported" and "accept" in body["allowed"]
    wrong_role = desk.act("dispatcher", number, "accept")
    assert wrong_role.status_code == 403
    missing = desk.act("operator", number, "reject")
    assert missing.status_code == 400 and "'reason'" in missing.get_json()["message"]
    stale = desk.act("operator", number, "accept", from_="filed")
    assert stale.status_code == 409 and stale.get_json()["state"] == "reported"
    assert stale.get_json()["error"] == "stale"  # pages say it in their language
    # No state, or no state at all, is a bad request, not a case that moved on.
    for seen in (None, ["reported"], "teleported"):
        body = {"from": seen} if seen is not None else {}
        envelope = desk.install.envelope("cs-operator", "case.accept", f"case {number}", body)
        bad = desk.client("operator").post(f"/cases/{number}/accept", json=envelope)
        assert bad.status_code == 400, (seen, bad.get_json())
        assert "'from'" in bad.get_json()["message"]
    unknown = desk.act("operator", number, "teleport")
    assert unknown.status_code == 400
    unsigned = desk.client("operator").post(f"/cases/{number}/accept", json={"from": "reported"})
    assert unsigned.status_code == 400
    assert desk.snapshot(number) == before
    assert desk.act("operator", number, "accept").status_code == 200


def test_the_command_centre_recalls_a_dispatch_before_the_bureau_signs_for_it(desk: Desk) -> None:
    """A wrong dispatch is taken back (撤回派遣): the case is filed again, its dispatch stage
    restarts, and it goes to the right bureau; once the bureau has signed for it, only the
    bureau can return it."""
    number = desk.record().get_json()["number"]
    for who, name, params in (
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.other_bureau}),
    ):
        assert desk.act(who, number, name, **params).status_code == 200, name
    assert desk.client("otherbureau").get(f"/cases/{number}").status_code == 200
    before = desk.snapshot(number)
    assert desk.act("dispatcher", number, "recall").status_code == 400  # a reason is needed
    assert desk.act("dispatcher", number, "recall", reason=["派错"]).status_code == 400
    assert desk.act("bureau", number, "recall", reason="不是我们的").status_code == 403
    assert desk.snapshot(number) == before
    recalled = desk.act("dispatcher", number, "recall", reason="  派错单位  ")
    assert recalled.status_code == 200, recalled.get_json()
    shown = recalled.get_json()
    assert (shown["state"], shown["stage"]) == ("filed", "dispatch")
    last = shown["history"][-1]
    assert (last["transition"], last["actor"], last["from"], last["stage"]) == (
        "recall",
        "cs-dispatcher",
        "dispatched",
        "handle",
    )
    assert last["signed_action"] and last["on_time"] is True
    # The bureau it was wrongly sent to never had it: it no longer sees the case.
    assert desk.snapshot(number)[2] is None
    assert desk.client("otherbureau").get(f"/cases/{number}").status_code == 404
    for who, name, params in (
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
        ("bureau", "receive", {}),
    ):
        assert desk.act(who, number, name, **params).status_code == 200, name
    late = desk.act("dispatcher", number, "recall", reason="已签收")
    assert late.status_code == 409 and late.get_json()["state"] == "handling"
    assert "return" in late.get_json()["allowed"]
    with psycopg.connect(desk.install.settings.database_url) as conn:
        facts = conn.execute(
            "SELECT f.measure, f.subject FROM case_fact f JOIN city_case c ON c.id = f.case_id"
            " WHERE c.number = %s AND f.measure IN ('recalled', 'dispatches_recalled',"
            " 'dispatched') ORDER BY f.unit, f.measure",
            (number,),
        ).fetchall()
    assert facts == [
        ("dispatched", desk.other_bureau),
        ("dispatches_recalled", "command"),
        ("recalled", desk.other_bureau),
        ("dispatched", desk.bureau),
    ]


def test_choices_and_case_codes_that_are_no_text_are_400_and_change_nothing(desk: Desk) -> None:
    """A transition's choice (reject's reason, decide_postpone's decision) given as an object
    or a list was a 500 (looking it up among the choices needed a hashable value), and so were
    a dispatch to a bureau and a cancel as the duplicate of a case given as a number, a boolean
    or an object (PostgreSQL refused them)."""
    number = desk.record().get_json()["number"]
    before = desk.snapshot(number)
    for reason in ({}, {"a": 1}, ["invalid"], 1, True):
        reply = desk.act("operator", number, "reject", reason=reason)
        assert reply.status_code == 400, (reason, reply.status_code)
        assert reply.get_json() == {
            "error": "invalid",
            "message": "reason must be one of duplicate, invalid",
        }
    assert desk.snapshot(number) == before
    assert desk.act("operator", number, "reject", reason="invalid").status_code == 200
    filed = desk.record().get_json()["number"]
    assert desk.act("operator", filed, "accept").status_code == 200
    assert desk.act("leader", filed, "file").status_code == 200
    before = desk.snapshot(filed)
    for bureau in (1, True, 1.5, {}, {"code": desk.bureau}, [desk.bureau]):
        reply = desk.act("dispatcher", filed, "dispatch", bureau=bureau)
        assert reply.status_code == 400, (bureau, reply.status_code)
        assert reply.get_json()["error"] == "invalid", bureau
    for duplicate_of in (1, True, 1.5, {}, {"number": number}, [number]):
        reply = desk.act("leader", filed, "cancel", duplicate_of=duplicate_of)
        assert reply.status_code == 400, (duplicate_of, reply.status_code)
        assert reply.get_json()["error"] == "invalid", duplicate_of
    assert desk.snapshot(filed) == before
    assert desk.act("dispatcher", filed, "dispatch", bureau=desk.bureau).status_code == 200


def _cases(desk: Desk) -> int:
    with psycopg.connect(desk.install.settings.database_url) as conn:
        return int(conn.execute("SELECT count(*) FROM city_case").fetchone()[0])


def test_a_nul_or_a_payload_without_canonical_form_is_400_and_stores_nothing(
    desk: Desk,
) -> None:
    """A NUL anywhere in a signed action (a class code, a field nobody reads, a nested place,
    a name) was a 500 when PostgreSQL refused it; a payload whose JSON has no RFC 8785 form
    (a lone surrogate, a number past 2^53) was a 500 in the canonical check. Both are 400s
    before anything is stored."""
    before = _cases(desk)
    for params in (
        {"major": "\x00"},
        {"bureau": "a\x00b"},
        {"place": {"grid": desk.grid, "note": ["\x00"]}},
        {"place": {"grid": desk.grid}, "x\x00": 1},
    ):
        reply = desk.record(**params)
        assert reply.status_code == 400, (params, reply.get_json())
        assert reply.get_json() == {
            "error": "invalid",
            "message": "a signed action must not hold a NUL control character",
        }
    cert, key = desk.install.signing("cs-operator")
    nonce = desk.client("operator").post("/auth/nonce").get_json()["nonce"]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for parameter in ('"\\ud800"', "9007199254740993", "1e400"):
        data = (  # canonical in every other respect: keys sorted, no spaces
            f'{{"action":"case.record","nonce":{json.dumps(nonce)},'
            f'"parameters":{{"description":{parameter}}},"resource":"cases",'
            f'"signer":{json.dumps(pki.thumbprint(cert))},"time":{json.dumps(when)}}}'
        ).encode()
        envelope = {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
            "certificate": pki.pem(cert).decode(),
        }
        reply = desk.client("operator").post("/cases/record", json=envelope)
        assert reply.status_code == 400, (parameter, reply.get_json())
        assert reply.get_json()["error"] == "signature_refused", parameter
    assert _cases(desk) == before
    assert desk.record().status_code == 201


def test_a_certificate_altered_in_its_key_is_refused(desk: Desk) -> None:
    """A signing certificate whose public key is no point of the curve parses (its key is read
    lazily). Online it is not the registered certificate, and is refused as such; offline the
    check read its key and failed with a ValueError (tests/test_open311.py alters bundles)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    before = _cases(desk)
    cert, _ = desk.install.signing("cs-operator")
    der = bytearray(cert.public_bytes(Encoding.DER))
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    der[der.index(spki) + len(spki) - 1] ^= 1  # the point's last byte: off the curve
    altered = x509.load_der_x509_certificate(bytes(der))
    envelope = desk.install.envelope(
        "cs-operator", "case.record", "cases",
        {"source": "phone", "kind": "event", "major": "01", "minor": "02",
         "description": "证书被改", "place": {"grid": desk.grid}},
    )  # fmt: skip
    envelope["certificate"] = altered.public_bytes(Encoding.PEM).decode()
    reply = desk.client("operator").post("/cases/record", json=envelope)
    assert reply.status_code == 400, reply.get_json()
    assert reply.get_json() == {
        "error": "signature_refused",
        "message": "the signing certificate is not in CityGrid's register",
    }
    assert _cases(desk) == before


def test_scope_streets_and_bureaus(desk: Desk) -> None:
    number = desk.record().get_json()["number"]  # in street 001
    assert desk.client("inspector").get(f"/cases/{number}").status_code == 200
    assert desk.client("inspector2").get(f"/cases/{number}").status_code == 404
    assert desk.client("supervisor").get(f"/cases/{number}").status_code == 404
    listed = desk.client("supervisor").get("/cases").get_json()
    assert all(c["street"]["code"] == "110108002" for c in listed["cases"])
    for who, name, params in [
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
    ]:
        assert desk.act(who, number, name, **params).status_code == 200
    assert desk.client("otherbureau").get(f"/cases/{number}").status_code == 404
    assert desk.act("otherbureau", number, "receive", from_="dispatched").status_code == 404
    inbox = desk.client("bureau").get("/cases/inbox").get_json()
    assert number in [c["number"] for c in inbox["cases"]]
    assert number not in [
        c["number"] for c in desk.client("otherbureau").get("/cases/inbox").get_json()["cases"]
    ]


def test_a_street_scoped_person_places_cases_in_their_own_streets(desk: Desk) -> None:
    """One process answers as the renderer of two zones does: an inspector's report in
    another street is refused and stores nothing; in their own street it is filed."""
    with psycopg.connect(desk.install.settings.database_url) as conn:
        before = conn.execute("SELECT count(*) FROM city_case").fetchone()
    refused = desk.record("inspector2", source="inspector", contact=None)
    assert refused.status_code == 400
    assert "outside your streets" in refused.get_json()["message"]
    assert refused.get_json()["error"] == "outside_streets"
    with psycopg.connect(desk.install.settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM city_case").fetchone() == before
    own = desk.record("inspector", source="inspector", contact=None)
    assert own.status_code == 201, own.get_json()


def test_numbers_are_gap_free(desk: Desk) -> None:
    first = desk.record().get_json()["number"]
    bad = desk.record(place={"grid": "11010899999999"})  # no such grid: refused, rolled back
    assert bad.status_code == 404
    again = desk.record(description="x" * 5000)
    assert again.status_code == 400
    second = desk.record().get_json()["number"]
    year, n = first.split("-")
    assert second == f"{year}-{int(n) + 1:06d}"


def test_postponement_moves_the_deadline(desk: Desk) -> None:
    number = desk.record().get_json()["number"]
    for who, name, params in [
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
        ("bureau", "receive", {}),
    ]:
        assert desk.act(who, number, name, **params).status_code == 200
    before = dt.datetime.fromisoformat(
        desk.client("bureau").get(f"/cases/{number}").get_json()["deadline"]
    )
    asked = desk.act("bureau", number, "request_postpone", working_hours=8, reason="需更换设备")
    assert asked.status_code == 200 and asked.get_json()["postpone_pending"]
    assert (
        desk.act("bureau", number, "request_postpone", working_hours=8, reason="再延").status_code
        == 409
    )
    approved = desk.act("dispatcher", number, "decide_postpone", decision="approve")
    assert approved.status_code == 200
    after = dt.datetime.fromisoformat(approved.get_json()["deadline"])
    calendar = desk.install.app.extensions["citygrid"].calendar()
    assert calendar.working_time_between(before, after) == dt.timedelta(hours=8)


def test_twenty_concurrent_transitions_over_https(desk: Desk) -> None:
    """Twenty dispatchers' signed dispatches of one case at once: one wins, nineteen get 409
    with the current state, and the history holds exactly one dispatch."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from .app_client import SECRET
    from .tls import Server, request

    number = desk.record().get_json()["number"]
    for who, name in (("operator", "accept"), ("leader", "file")):
        assert desk.act(who, number, name).status_code == 200
    settings = desk.install.settings
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
        bodies = [
            json.dumps(
                desk.install.envelope(
                    "cs-dispatcher",
                    "case.dispatch",
                    f"case {number}",
                    {"from": "filed", "bureau": bureau},
                )
            ).encode()
            for bureau in [desk.bureau, desk.other_bureau] * 10
        ]
        cert, key = desk.install.out / "cs-dispatcher.crt", desk.install.out / "cs-dispatcher.key"

        def fire(body: bytes):  # type: ignore[no-untyped-def]
            return request(
                server.port,
                f"/cases/{number}/dispatch",
                desk.install.store.cert_path,
                cert,
                key,
                method="POST",
                body=body,
                headers={"Content-Type": "application/json"},
            )

        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(fire, bodies))
    finally:
        server.stop()
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [409] * 19, statuses
    for reply in replies:
        if reply.status == 409:
            assert reply.json()["state"] == "dispatched"
    sequenced(settings.database_url)
    with psycopg.connect(settings.database_url) as conn:
        events = conn.execute(
            "SELECT e.transition, e.version FROM case_event e JOIN city_case c ON c.id = e.case_id"
            " WHERE c.number = %s ORDER BY e.id",
            (number,),
        ).fetchall()
        audited = conn.execute(
            "SELECT count(*) FROM audit_entry WHERE action = 'case.dispatch'"
            " AND resource = %s AND status = 200",
            (f"case {number}",),
        ).fetchone()[0]
    assert [t for t, _ in events] == ["create", "accept", "file", "dispatch"]
    assert [v for _, v in events] == [1, 2, 3, 4]
    assert audited == 1


def test_cli_create_act_show_export_and_verify(desk: Desk, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    settings = desk.install.settings
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
    }

    def signer(who: str) -> list[str]:
        desk.install.signing(f"cs-{who}")
        out = desk.install.out
        return [
            "--as",
            f"cs-{who}",
            "--key",
            str(out / f"cs-{who}.signing.key"),
            "--cert",
            str(out / f"cs-{who}.signing.crt"),
        ]

    def run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, list(args), env=env)

    created = run(
        "case", "create", *signer("operator"), "--source", "sms", "--event", "05/05",
        "--grid", desk.grid, "--description", "机动车乱停放",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    number = created.output.strip()
    for who, name, fields in [
        ("operator", "accept", []),
        ("leader", "file", []),
        ("dispatcher", "dispatch", ["--field", f"bureau={desk.bureau}"]),
    ]:
        acted = run("case", "act", number, name, *signer(who), *fields)
        assert acted.exit_code == 0 and acted.output.strip().endswith(")"), acted.output
    from tiles.service import TileService

    cache = TileService.for_cache(settings).cache
    pixel = desk.client("operator").get(f"/cases/{number}").get_json()["pixel"]
    at = (pixel["level"], pixel["x"], pixel["y"])
    cache.put("cases", at[0], {at[1:]: b"stale picture"})
    assert cache.has("cases", *at)
    assert (
        run("case", "act", number, "suspend", *signer("leader"), "--field", "reason=x").exit_code
        == 0
    )
    assert not cache.has("cases", *at)  # the overlay there is redrawn after the change
    assert run("case", "act", number, "resume", *signer("leader")).exit_code == 0
    refused = run("case", "act", number, "file", *signer("leader"))
    assert refused.exit_code == 1 and refused.output.startswith("citygrid: error: cannot file")
    wrong = run("case", "act", number, "receive", *signer("operator"))
    assert wrong.exit_code == 1 and "not allowed" in wrong.output
    shown = json.loads(run("case", "show", number).output)
    assert shown["state"] == "dispatched" and len(shown["history"]) == 6
    assert number in run("case", "list", "--state", "dispatched").output
    again = run(
        "case", "create", *signer("operator"), "--source", "sms", "--event", "05/05",
        "--grid", desk.grid, "--description", "机动车乱停放",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    one = run("case", "list", "--limit", "1")  # there are more: it says so, apart from the list
    assert one.exit_code == 0 and len(one.stdout.splitlines()) == 1
    assert one.stderr == "(more cases match than the 1 shown: see --limit)\n"
    assert run("case", "list", "--limit", "10000").stderr == ""
    bundle = tmp_path / "case.json"
    checkpoint(desk.install.settings)
    # An export states in the log the version it read; until that entry is under a signed
    # checkpoint there is no head that shows the bundle complete, and none is written.
    early = run("case", "export", number, "--bundle", str(bundle), "--wait", "0")
    assert early.exit_code == 1 and "try again shortly" in early.output, early.output
    assert "--without-head" in early.output and not bundle.exists()
    headless = run(
        "case", "export", number, "--bundle", str(bundle), "--wait", "0", "--without-head"
    )
    assert headless.exit_code == 0 and "without a head" in headless.output, headless.output
    ca = str(desk.install.store.cert_path)
    unproven = run("verify-action", str(bundle), "--ca", ca)
    assert unproven.exit_code == 0 and "; not shown complete: " in unproven.output
    head_logged(desk.install.settings, number)  # the refused export's own entry
    exported = run("case", "export", number, "--bundle", str(bundle))
    assert exported.exit_code == 0, exported.output
    assert "complete as the log recorded version 6 (dispatched)" in exported.output
    valid = run("verify-action", str(bundle), "--ca", ca)
    assert valid.exit_code == 0 and valid.output.startswith(f"valid: case {number}, 6 signed")
    assert "; complete: the log recorded its export at version 6 (dispatched) at " in valid.output
    doc = json.loads(bundle.read_text())
    # The last event left out: the head names one more (without the head, the bundle
    # verifies but says it does not show that nothing came after).
    bundle.write_text(json.dumps({**doc, "events": doc["events"][:-1]}))
    cut = run("verify-action", str(bundle), "--ca", ca)
    assert cut.exit_code == 1, cut.output
    assert "head: the log's entry is not an export of case" in cut.output
    bundle.write_text(json.dumps({k: v for k, v in doc.items() if k != "head"}))
    headless = run("verify-action", str(bundle), "--ca", ca)
    assert headless.exit_code == 0 and "; not shown complete: " in headless.output
    doc["events"][2], doc["events"][3] = doc["events"][3], doc["events"][2]  # reordered
    bundle.write_text(json.dumps(doc))
    broken = run("verify-action", str(bundle), "--ca", ca)
    assert broken.exit_code == 1 and "INVALID" in broken.output
    for args in (
        ["case", "show", "2026-999999"],
        ["case", "create", *signer("operator"), "--source", "sms", "--description", "x"],
        ["case", "act", number, "teleport", *signer("operator")],
        ["case", "list", "--state", "dispatched,dispached"],  # listed nothing, exit 0
        ["case", "list", "--street", "110108999"],  # also
        ["case", "list", "--street", "x" * 300],
    ):
        bad = run(*args)
        assert bad.exit_code != 0 and bad.output.startswith("citygrid: error: "), (args, bad.output)
    # The caller's contact given on the command line skipped the limits of one sent beside a
    # request: 5,000 characters, or a control character, were stored with the case.
    before = _cases(desk)
    for contact in ("1" * 201, "138\x0000"):
        refused = run(
            "case", "create", *signer("operator"), "--source", "phone", "--event", "05/05",
            "--grid", desk.grid, "--description", "x", "--contact", contact,
        )  # fmt: skip
        assert refused.exit_code == 1, refused.output
        assert refused.output.startswith("citygrid: error: contact "), refused.output
    assert _cases(desk) == before


def test_demo_rebuild_refuses_while_cases_hold_grids(desk: Desk) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    desk.record()
    settings = desk.install.settings
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
    }
    refused = CliRunner().invoke(main, ["demo", "--area-km2", "1", "--seed", "1"], env=env)
    assert refused.exit_code == 1, refused.output
    assert refused.output.startswith("citygrid: error: the district has ")


def test_the_callers_contact_never_leaves_for_others(desk: Desk) -> None:
    """Operators see the contact; the signed evidence that every case reader may export holds
    only a salted digest of it, which the operator can check."""
    from mapserver.cases import contact as contact_mod

    number = desk.record(contact="13912345678").get_json()["number"]
    seen = desk.client("operator").get(f"/cases/{number}").get_json()
    assert seen["contact"] == "13912345678"
    for who in ("leader", "inspector", "dispatcher"):
        for path in (f"/cases/{number}", f"/cases/{number}/bundle"):
            reply = desk.client(who).get(path)
            assert reply.status_code == 200 and "13912345678" not in reply.get_data(as_text=True)
    checkpoint(desk.install.settings)
    bundle = desk.client("leader").get(f"/cases/{number}/bundle").get_json()
    pinned = trust(desk.install.settings)
    signed = verify_bundle(bundle["events"][0]["bundle"], pinned).action.parameters
    assert "contact" not in signed
    assert signed["contact_digest"] == contact_mod.digest(seen["contact"], seen["contact_salt"])

    before = desk.snapshot(number)
    base = {"source": "phone", "kind": "event", "major": "01", "minor": "02",
            "description": "x", "place": {"grid": desk.grid}}  # fmt: skip
    in_clear = desk.install.envelope(
        "cs-operator", "case.record", "cases", {**base, "contact": "x"}
    )
    assert desk.client("operator").post("/cases/record", json=in_clear).status_code == 400
    envelope = desk.install.envelope(
        "cs-operator", "case.record", "cases", {**base, "contact_digest": "0" * 64}
    )
    forged = {**envelope, "private": {"contact": "13900000000", "salt": "ab" * 16}}
    assert desk.client("operator").post("/cases/record", json=forged).status_code == 400
    assert desk.snapshot(number) == before


def test_acts_the_log_took_in_another_order_still_verify(desk: Desk, tmp_path: Path) -> None:
    """Each serving process ships its audit entries on its own, so the log can take two acts
    of a case in another order than they were done: a valid case's bundle was refused with
    `event 3: logged before the event it follows` (seen in CI, two acts on two workers within
    the shipping interval). Here the server's sequencer is held back while the next act, from
    the command line, goes into the log first (an act's entry is queued with the act itself,
    never shipped later). The bundle verifies: each act is placed by the version its entry
    names. Two events swapped are still refused."""
    import threading
    from unittest import mock

    from click.testing import CliRunner

    from audit import sequencer
    from mapserver.cli import main

    settings = desk.install.settings
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
    }
    desk.install.signing("cs-leader")
    out = desk.install.out
    leader = ["--as", "cs-leader", "--key", str(out / "cs-leader.signing.key")]
    leader += ["--cert", str(out / "cs-leader.signing.crt")]
    number = desk.record().get_json()["number"]
    released = threading.Event()
    integrate = sequencer.integrate

    def held(*args: Any, **kwargs: Any) -> sequencer.Round:
        released.wait(30)
        return integrate(*args, **kwargs)

    with mock.patch.object(sequencer, "integrate", held):
        try:
            assert desk.act("operator", number, "accept").status_code == 200  # version 2
            filed = CliRunner().invoke(main, ["case", "act", number, "file", *leader], env=env)
            assert filed.exit_code == 0, filed.output  # version 3, in the log at once
        finally:
            released.set()
    checkpoint(settings)
    with psycopg.connect(settings.database_url) as conn:
        leaves = dict(
            conn.execute(
                "SELECT (e.detail ->> 'case_version')::int, e.leaf_index FROM audit_entry e"
                " WHERE e.resource = %s AND e.detail ? 'case_version'",
                (f"case {number}",),
            ).fetchall()
        )
    assert leaves[3] < leaves[2], leaves  # the log took the filing first
    bundle = tmp_path / "case.json"
    run = CliRunner().invoke
    assert run(main, ["case", "export", number, "--bundle", str(bundle)], env=env).exit_code == 0
    ca = ["--ca", str(desk.install.store.cert_path)]
    valid = run(main, ["verify-action", str(bundle), *ca], env=env)
    assert valid.exit_code == 0, valid.output
    assert valid.output.startswith(f"valid: case {number}, 3 signed actions")
    doc = json.loads(bundle.read_text("utf-8"))
    events = doc["events"]
    swapped = {
        **doc,
        "events": [events[0], {**events[2], "version": 2}, {**events[1], "version": 3}],
    }
    bundle.write_text(json.dumps(swapped), "utf-8")
    refused = run(main, ["verify-action", str(bundle), *ca], env=env)
    assert refused.exit_code == 1 and "INVALID: event 2: " in refused.output, refused.output


def _to_handling(desk: Desk, number: str) -> None:
    for who, name, params in [
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
        ("bureau", "receive", {}),
    ]:
        assert desk.act(who, number, name, **params).status_code == 200, name


POSTPONEMENT = {"request_postpone", "decide_postpone"}


def test_postponement_forms_are_offered_only_where_they_can_succeed(desk: Desk) -> None:
    """`allowed` (what the browser makes forms of) offered the dispatcher `decide_postpone` on
    every case in handling, with no request to decide (409 "has no postponement request"),
    and the bureau `request_postpone` while its request was pending (409 "already has")."""
    number = desk.record().get_json()["number"]
    _to_handling(desk, number)

    def offered(who: str) -> set[str]:
        shown = desk.client(who).get(f"/cases/{number}").get_json()
        listed = desk.client(who).get("/cases?state=handling&per_page=200").get_json()["cases"]
        in_list = next(c for c in listed if c["number"] == number)  # lists offer the same
        assert set(in_list["allowed"]) & POSTPONEMENT == set(shown["allowed"]) & POSTPONEMENT
        return set(shown["allowed"]) & POSTPONEMENT

    assert (offered("dispatcher"), offered("bureau")) == (set(), {"request_postpone"})
    asked = desk.act("bureau", number, "request_postpone", working_hours=8, reason="需更换设备")
    assert asked.status_code == 200, asked.get_json()
    assert (offered("dispatcher"), offered("bureau")) == ({"decide_postpone"}, set())
    refused = desk.act("dispatcher", number, "decide_postpone", decision="refuse")
    assert refused.status_code == 200, refused.get_json()
    assert (offered("dispatcher"), offered("bureau")) == (set(), {"request_postpone"})
    # What is not offered is what is refused: as a case that moved on (a second decider's,
    # or a second request's), with its state and version, so that the page says reload.
    late = desk.act("dispatcher", number, "decide_postpone", decision="approve")
    assert late.status_code == 409 and late.get_json()["error"] == "stale", late.get_json()
    assert late.get_json()["state"] == "handling" and late.get_json()["version"] > 0

    # A request left pending ends with the handling it asked time for: after a failed check
    # the rework is not offered for a decision on it, and the bureau may ask anew.
    again = desk.act("bureau", number, "request_postpone", working_hours=4, reason="等材料")
    assert again.status_code == 200, again.get_json()
    twice = desk.act("bureau", number, "request_postpone", working_hours=4, reason="等材料")
    assert twice.status_code == 409 and twice.get_json()["error"] == "stale", twice.get_json()
    for who, name, params in [
        ("bureau", "handle", {"result": "已处置"}),
        ("dispatcher", "forward", {}),
        ("operator", "request_check", {}),
        ("inspector", "check_fail", {"note": "未处置到位"}),
    ]:
        assert desk.act(who, number, name, **params).status_code == 200, name
    shown = desk.client("dispatcher").get(f"/cases/{number}").get_json()
    assert shown["state"] == "handling" and shown["postpone_pending"] is False
    assert (offered("dispatcher"), offered("bureau")) == (set(), {"request_postpone"})


def test_a_case_names_every_bureau_its_steps_name_a_retired_one_too(desk: Desk) -> None:
    """A dispatch to a bureau since retired: the forms no longer offer it, so the case page
    had only its code; the case names every bureau it and its steps name, for any reader."""
    number = desk.record().get_json()["number"]
    _to_handling(desk, number)
    assert desk.act("bureau", number, "return", reason="不属本单位").status_code == 200
    with psycopg.connect(desk.install.settings.database_url, autocommit=True) as conn:
        (name,) = conn.execute(
            "SELECT name FROM organisation WHERE code = %s", (desk.bureau,)
        ).fetchone()  # type: ignore[misc]
        conn.execute("UPDATE organisation SET active = false WHERE code = %s", (desk.bureau,))
    try:
        for reader in ("leader", "dispatcher", "operator"):
            shown = desk.client(reader).get(f"/cases/{number}").get_json()
            assert shown["bureau"] is None
            assert shown["bureau_names"] == {desk.bureau: name}, reader
    finally:
        with psycopg.connect(desk.install.settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE organisation SET active = true WHERE code = %s", (desk.bureau,))


def test_a_returned_case_is_no_longer_the_bureaus(desk: Desk) -> None:
    """A bureau's return (wrongly dispatched to it) left the case filed with that bureau: every
    page named it as the handling department, and the bureau still saw the case. As after a
    recall, the bureau no longer sees it; the history keeps its signed return, and the
    evaluation still counts the return against the bureau's dispatch."""
    number = desk.record().get_json()["number"]
    _to_handling(desk, number)
    asked = desk.act("bureau", number, "request_postpone", working_hours=8, reason="需协调")
    assert asked.status_code == 200, asked.get_json()
    returned = desk.act("bureau", number, "return", reason="不属本单位")
    assert returned.status_code == 200, returned.get_json()
    answer = returned.get_json()  # the bureau's own step: its answer, the last it sees
    assert (answer["state"], answer["bureau"], answer["allowed"]) == ("filed", None, [])
    assert answer["history"][-1]["transition"] == "return"

    assert desk.snapshot(number)[2] is None
    bureau = desk.client("bureau")
    assert bureau.get(f"/cases/{number}").status_code == 404
    for path in ("/cases?state=filed&", "/cases?", "/cases/inbox?"):
        listed = bureau.get(f"{path}per_page=200").get_json()["cases"]
        assert number not in [c["number"] for c in listed], path
    assert bureau.get(f"/cases/{number}/bundle").status_code == 404
    assert desk.act("bureau", number, "return", reason="再退").status_code == 404

    shown = desk.client("dispatcher").get(f"/cases/{number}").get_json()
    assert (shown["bureau"], shown["bureau_name"], shown["postpone_pending"]) == (None, None, False)
    assert "dispatch" in shown["allowed"] and "decide_postpone" not in shown["allowed"]
    last = shown["history"][-1]
    assert (last["transition"], last["actor"], last["from"], last["to"]) == (
        "return",
        "cs-bureau",
        "handling",
        "filed",
    )
    assert last["signed_action"]
    # Dispatched anew (the other bureau): only that one sees it; before it receives it, it
    # may return it as well.
    assert desk.act("dispatcher", number, "dispatch", bureau=desk.other_bureau).status_code == 200
    assert desk.client("otherbureau").get(f"/cases/{number}").status_code == 200
    early = desk.act("otherbureau", number, "return", reason="也不属本单位")
    assert early.status_code == 200, early.get_json()
    assert desk.snapshot(number)[2] is None
    assert desk.client("otherbureau").get(f"/cases/{number}").status_code == 404
    with psycopg.connect(desk.install.settings.database_url) as conn:
        facts = conn.execute(
            "SELECT f.measure, f.subject FROM case_fact f JOIN city_case c ON c.id = f.case_id"
            " WHERE c.number = %s AND f.measure IN ('returned', 'dispatches_returned',"
            " 'dispatched') ORDER BY f.unit, f.measure",
            (number,),
        ).fetchall()
    assert facts == [
        ("dispatched", desk.bureau),
        ("dispatches_returned", "command"),
        ("returned", desk.bureau),
        ("dispatched", desk.other_bureau),
        ("dispatches_returned", "command"),
        ("returned", desk.other_bureau),
    ]
