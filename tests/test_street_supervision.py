"""Street supervision on the production app: a street office sees its street's cases only,
sends reminders and orders (signed) to the bureau handling a case, the bureau answers
(signed), an order left unanswered past its due time on the work calendar is escalated to
the command centre; per-street statistics as JSON, CSV and XLSX."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from openpyxl import load_workbook

from auth import actions, pki
from auth.identity import Identity
from mapserver import db
from mapserver.cases import store, street_stats
from mapserver.cases.calendar import WorkCalendar

from .app_client import Install
from .conftest import demo_database
from .test_cases import ROLES, Desk


class StreetDesk(Desk):
    """The case desk, with street 001's office and a reader for statistics."""

    def __init__(self, install: Install):
        super().__init__(install)
        install.account("cs-street1", ["street_supervisor"], "street-001")
        install.account("cs-lead", ["leader"], None)

    def to_handling(self, number: str) -> None:
        for who, name, params in [
            ("operator", "accept", {}),
            ("leader", "file", {}),
            ("dispatcher", "dispatch", {"bureau": self.bureau}),
            ("bureau", "receive", {}),
        ]:
            reply = self.act(who, number, name, **params)
            assert reply.status_code == 200, reply.get_json()

    def case(self, who: str, number: str) -> dict[str, Any]:
        reply = self.client(who).get(f"/cases/{number}")
        assert reply.status_code == 200, reply.get_json()
        return reply.get_json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreetDesk]:
    settings = demo_database("citygrid_street", tmp_path_factory.mktemp("street-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("street-certs"), rate_limit_api="*=100000/hour"
    )
    yield StreetDesk(install)
    install.close()
    db.drop_database(settings)


def test_street_office_sees_its_street_only(desk: StreetDesk) -> None:
    number = desk.record(description="井盖破损 street one").get_json()["number"]
    assert ROLES["supervisor"] == ("street_supervisor", "street-002")
    inbox = desk.client("street1").get("/cases/inbox").get_json()
    assert number in [c["number"] for c in inbox["cases"]]
    assert desk.client("supervisor").get(f"/cases/{number}").status_code == 404
    other = desk.client("supervisor").get("/cases").get_json()["cases"]
    assert all(c["street"]["code"] == "110108002" for c in other)
    mine = desk.client("street1").get("/cases?per_page=200").get_json()["cases"]
    assert mine and all(c["street"]["code"] == "110108001" for c in mine)
    # The same map as the centres: the cases overlay of its street.
    page = desk.client("street1").get("/inbox")
    assert page.status_code == 200


def test_reminder_order_answer_signed_on_the_history(desk: StreetDesk) -> None:
    number = desk.record().get_json()["number"]
    assert (
        desk.act("street1", number, "remind", message="请尽快处置").status_code == 409
    )  # reported
    desk.to_handling(number)
    before = desk.snapshot(number)
    assert desk.act("street1", number, "remind", message="").status_code == 400
    assert desk.act("supervisor", number, "remind", message="x").status_code == 404  # street 002
    assert desk.act("bureau", number, "order", message="x").status_code == 403  # not a street
    assert desk.act("street1", number, "answer", reply="x").status_code == 403
    assert desk.snapshot(number) == before

    assert "answer" not in desk.case("bureau", number)["allowed"]  # no order to answer yet
    reminded = desk.act("street1", number, "remind", message="群众反映强烈，请尽快处置")
    assert reminded.status_code == 200, reminded.get_json()
    assert reminded.get_json()["state"] == "handling"
    ordered = desk.act("street1", number, "order", message="请于时限内处置并回复")
    assert ordered.status_code == 200, ordered.get_json()
    shown = ordered.get_json()
    reminder, order = shown["supervision"]
    assert reminder["kind"] == "reminder" and reminder["standing"] == "sent"
    assert order["kind"] == "order" and order["standing"] == "waiting"
    assert order["bureau"] == desk.bureau and order["actor"] == "cs-street1"
    # Due 4 working hours (the default answer limit) after the order, on the work calendar.
    at = dt.datetime.fromisoformat(order["at"])
    due = WorkCalendar.from_settings(desk.install.settings).add(at, 4, "working_hours")
    assert dt.datetime.fromisoformat(order["due_at"]) == due
    assert not order["escalated"]
    # The bureau sees the order waiting; another bureau cannot answer it.
    assert "answer" in desk.case("bureau", number)["allowed"]
    waiting = desk.client("bureau").get("/cases/inbox").get_json()["cases"]
    assert number in [c["number"] for c in waiting]
    assert desk.act("otherbureau", number, "answer", reply="x").status_code == 404
    answered = desk.act("bureau", number, "answer", reply="已安排人员，今日处置完毕")
    assert answered.status_code == 200, answered.get_json()
    order = answered.get_json()["supervision"][1]
    assert order["standing"] == "answered" and order["answer"] == "已安排人员，今日处置完毕"
    assert desk.act("bureau", number, "answer", reply="again").status_code == 409

    history = desk.case("leader", number)["history"]
    assert [h["transition"] for h in history][-3:] == ["remind", "order", "answer"]
    assert all(h["from"] == h["to"] == "handling" for h in history[-3:])
    signed = signed_steps(desk, [h["signed_action"] for h in history[-3:]])
    assert [s["action"] for s in signed] == ["case.remind", "case.order", "case.answer"]
    assert [s["account"] for s in signed] == ["cs-street1", "cs-street1", "cs-bureau"]
    assert all(s["resource"] == f"case {number}" for s in signed)
    assert signed[1]["parameters"]["message"] == "请于时限内处置并回复"
    # The workflow goes on: supervision left the case where it was.
    assert desk.act("bureau", number, "handle", result="已更换").status_code == 200


def test_one_answer_answers_every_order_waiting(desk: StreetDesk) -> None:
    """A street office that orders twice before the bureau answers: the bureau's one reply
    answers both (before, the second order made every answer a 500 and both escalated)."""
    number = desk.record().get_json()["number"]
    desk.to_handling(number)
    assert "answer" not in _listed(desk, number)["allowed"]  # nothing to answer: no form
    for message in ("请于时限内处置并回复", "再次督办：今日内回复"):
        ordered = desk.act("street1", number, "order", message=message)
        assert ordered.status_code == 200, ordered.get_json()
    assert "answer" in _listed(desk, number)["allowed"]
    answered = desk.act("bureau", number, "answer", reply="已处置")
    assert answered.status_code == 200, answered.get_json()
    assert "answer" not in _listed(desk, number)["allowed"]
    orders = answered.get_json()["supervision"]
    assert [o["standing"] for o in orders] == ["answered", "answered"]
    assert orders[0]["answer_version"] == orders[1]["answer_version"]
    assert all(o["answer"] == "已处置" for o in orders)
    assert desk.act("bureau", number, "answer", reply="again").status_code == 409
    # A later order waits for a later answer.
    assert desk.act("street1", number, "order", message="第三次").status_code == 200
    again = desk.act("bureau", number, "answer", reply="已复查")
    assert again.status_code == 200, again.get_json()
    assert [o["standing"] for o in again.get_json()["supervision"]] == ["answered"] * 3


def _listed(desk: StreetDesk, number: str) -> dict[str, Any]:
    """The case as the bureau's list shows it (the forms it offers come from `allowed`)."""
    cases = desk.client("bureau").get("/cases?state=handling&per_page=200").get_json()["cases"]
    return next(c for c in cases if c["number"] == number)


def signed_steps(desk: StreetDesk, ids: list[int]) -> list[dict[str, Any]]:
    """The stored signed actions, each checked: the signature over the payload by the
    certificate's key, the certificate issued by CityGrid's CA to the account that acted."""
    ca = x509.load_pem_x509_certificate(desk.install.store.cert_path.read_bytes())
    out = []
    with psycopg.connect(desk.install.settings.database_url) as conn:
        for action_id in ids:
            account, data, signature, pem = conn.execute(
                "SELECT account, payload, signature, certificate FROM signed_action WHERE id = %s",
                (action_id,),
            ).fetchone()
            cert = x509.load_pem_x509_certificate(pem.encode())
            ca.public_key().verify(  # type: ignore[call-arg, union-attr]
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
            cert.public_key().verify(bytes(signature), bytes(data), ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, union-attr]
            payload = json.loads(bytes(data))
            assert payload["signer"] == pki.thumbprint(cert)
            out.append({**payload, "account": account})
    return out


def _order_at(desk: StreetDesk, number: str, when: dt.datetime, state: str = "handling") -> None:
    """An order signed now but recorded as given at `when` (store.act's clock, the one the
    view uses): its answer falls due in the past, as if that much time had gone by."""
    settings = desk.install.settings
    env = desk.install.envelope(
        "cs-street1", "case.order", f"case {number}", {"from": state, "message": "逾期测试"}
    )
    who = Identity("cs-street1", ("street_supervisor",), ("110108001",), "", "", "person")
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        _, action_id = actions.accept(
            conn, who, env, "case.order", f"case {number}", desk.install.store.certificate()
        )
        store.act(
            conn,
            WorkCalendar.from_settings(settings),
            number=number,
            name="order",
            params={"from": state, "message": "逾期测试"},
            account="cs-street1",
            signed_action=action_id,
            now=when,
        )


def test_unanswered_order_is_escalated_to_the_command_centre(desk: StreetDesk) -> None:
    number = desk.record().get_json()["number"]
    desk.to_handling(number)
    centre = desk.client("dispatcher").get("/cases/inbox?per_page=200").get_json()["cases"]
    assert number not in [c["number"] for c in centre]
    _order_at(desk, number, dt.datetime.now(dt.UTC) - dt.timedelta(days=10))

    order = desk.case("street1", number)["supervision"][-1]
    assert order["standing"] == "escalated" and order["escalated"]
    assert order["escalated_at"] == order["due_at"]
    assert dt.datetime.fromisoformat(order["due_at"]) < dt.datetime.now(dt.UTC)
    centre = desk.client("dispatcher").get("/cases/inbox?per_page=200").get_json()["cases"]
    flagged = [c for c in centre if c["number"] == number]
    assert flagged and flagged[0]["escalated"] is True
    listed = desk.client("leader").get("/cases?escalated=1&per_page=200").get_json()["cases"]
    assert number in [c["number"] for c in listed]

    assert desk.act("bureau", number, "answer", reply="迟复：已处置").status_code == 200
    order = desk.case("street1", number)["supervision"][-1]
    assert order["standing"] == "answered_late" and order["escalated"]
    centre = desk.client("dispatcher").get("/cases/inbox?per_page=200").get_json()["cases"]
    assert number not in [c["number"] for c in centre]  # answered: no longer waiting there


def test_an_order_ends_when_its_case_leaves_the_bureau(desk: StreetDesk) -> None:
    """The bureau returns the case, the command centre recalls its dispatch or feeds its
    handling back: the orders to that bureau end with that step. They stayed open for ever
    (escalated once due), and the next bureau's answer answered an order not its own."""
    number = desk.record().get_json()["number"]
    desk.to_handling(number)
    assert desk.act("street1", number, "order", message="请今日回复").status_code == 200
    returned = desk.act("bureau", number, "return", reason="不属本单位")
    assert returned.status_code == 200, returned.get_json()
    order = returned.get_json()["supervision"][-1]
    assert (order["standing"], order["ended_by"], order["escalated"]) == ("ended", "return", False)
    assert order["ended_at"] == returned.get_json()["history"][-1]["at"]
    waiting = desk.client("bureau").get("/cases/inbox?per_page=200").get_json()["cases"]
    assert number not in [c["number"] for c in waiting]  # nothing left for the bureau to answer
    for who, name, params in (
        ("dispatcher", "dispatch", {"bureau": desk.other_bureau}),
        ("otherbureau", "receive", {}),
    ):
        assert desk.act(who, number, name, **params).status_code == 200, name
    assert "answer" not in desk.case("otherbureau", number)["allowed"]
    mine = desk.act("otherbureau", number, "answer", reply="不是给我们的督办")
    assert mine.status_code == 409, mine.get_json()
    assert desk.case("street1", number)["supervision"][-1]["standing"] == "ended"

    # Handled and fed back before the bureau answered: the bureau can answer no more.
    fed = desk.record().get_json()["number"]
    desk.to_handling(fed)
    assert desk.act("street1", fed, "order", message="请回复").status_code == 200
    assert desk.act("bureau", fed, "handle", result="已处置").status_code == 200
    assert "answer" in desk.case("bureau", fed)["allowed"]  # still, while handled
    forwarded = desk.act("dispatcher", fed, "forward")
    assert forwarded.status_code == 200, forwarded.get_json()
    order = forwarded.get_json()["supervision"][-1]
    assert (order["standing"], order["ended_by"]) == ("ended", "forward")
    waiting = desk.client("bureau").get("/cases/inbox?per_page=200").get_json()["cases"]
    assert fed not in [c["number"] for c in waiting]

    # An order already past its due time when the dispatch is recalled stays escalated, but
    # no longer waits for the command centre as unanswered.
    late = desk.record().get_json()["number"]
    for who, name, params in (
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
    ):
        assert desk.act(who, late, name, **params).status_code == 200, name
    _order_at(desk, late, dt.datetime.now(dt.UTC) - dt.timedelta(days=10), state="dispatched")
    listed = desk.client("leader").get("/cases?escalated=1&per_page=200").get_json()["cases"]
    assert late in [c["number"] for c in listed]
    recalled = desk.act("dispatcher", late, "recall", reason="派错单位")
    assert recalled.status_code == 200, recalled.get_json()
    order = recalled.get_json()["supervision"][-1]
    assert (order["standing"], order["ended_by"], order["escalated"]) == (
        "ended_late",
        "recall",
        True,
    )
    listed = desk.client("leader").get("/cases?escalated=1&per_page=200").get_json()["cases"]
    assert late not in [c["number"] for c in listed]
    with (
        psycopg.connect(desk.install.settings.database_url) as conn,
        pytest.raises(psycopg.errors.CheckViolation, match="answered or ended once"),
    ):
        conn.execute("UPDATE case_order SET answered_at = now() WHERE ended_event IS NOT NULL")


def _expected(desk: StreetDesk, street: str, day: dt.date) -> dict[str, int]:
    """The counts for `street` on `day`, straight from the tables."""
    with psycopg.connect(desk.install.settings.database_url) as conn:
        conn.execute("SET TIME ZONE 'Asia/Shanghai'")
        one = conn.execute(
            """SELECT count(*) FILTER (WHERE created_at::date = %(d)s),
                      count(*) FILTER (WHERE EXISTS (SELECT 1 FROM case_event e
                          WHERE e.case_id = c.id AND e.transition = 'file'
                          AND e.at::date = %(d)s)),
                      count(*) FILTER (WHERE closed_at::date = %(d)s)
               FROM city_case c WHERE street_code = %(s)s""",
            {"d": day, "s": street},
        ).fetchone()
        orders = conn.execute(
            "SELECT count(*) FILTER (WHERE kind = 'reminder'), count(*) FILTER (WHERE kind ="
            " 'order') FROM case_order WHERE street_code = %s AND at::date = %s",
            (street, day),
        ).fetchone()
    return {
        "reported": one[0],
        "filed": one[1],
        "closed": one[2],
        "reminders": orders[0],
        "orders": orders[1],
    }


def test_statistics_json_csv_xlsx(desk: StreetDesk) -> None:
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    for _ in range(2):
        desk.record(major="01", minor="02")
    q = f"/street/stats?from={today}&to={today}"
    mine = desk.client("street1").get(q)
    assert mine.status_code == 200, mine.get_json()
    report = mine.get_json()
    assert [s["street"]["code"] for s in report["streets"]] == ["110108001"]
    total = report["streets"][0]["total"]
    expected = _expected(desk, "110108001", today)
    assert {k: total[k] for k in expected} == expected
    assert total["reported"] >= 2
    by_class = {(r["major"], r["minor"]): r for r in report["streets"][0]["by_class"]}
    assert by_class[("01", "02")]["reported"] >= 2
    assert sum(r["reported"] for r in report["streets"][0]["by_community"]) == total["reported"]
    assert sum(r["reported"] for r in report["streets"][0]["by_class"]) == total["reported"]
    assert total["on_time"] <= total["closed"]

    # Street 002's office is refused street 001, before any work; the leader sees both.
    assert desk.client("supervisor").get(q + "&street=110108001").status_code == 403
    both = desk.client("lead").get(q + "&street=110108001,110108002").get_json()
    assert [s["street"]["code"] for s in both["streets"]] == ["110108001", "110108002"]
    assert both["streets"][0]["total"] == total
    for bad in ("?from=2026-13-01&to=2026-01-02", "?from=2026-01-02&to=2026-01-01",
                "?from=2024-01-01&to=2026-01-01", f"?from={today}&to={today}&format=pdf",
                f"?from={today}&to={today}&street=abc",
                f"?from={today}&to={today}&street=" + "%C2%B2" * 9):  # fmt: skip
        reply = desk.client("lead").get("/street/stats" + bad)
        assert reply.status_code == 400 and reply.is_json, bad
    assert desk.client("bureau").get(q).status_code == 403
    # A street the district does not have: not found, as the command line says, not empty.
    nowhere = desk.client("lead").get(q + "&street=110108001,110108999")
    assert nowhere.status_code == 404 and "no street 110108999" in nowhere.get_json()["message"]

    text = desk.client("street1").get(q + "&format=csv")
    assert text.status_code == 200 and text.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(text.get_data().decode("utf-8-sig"))))
    head = rows[0]
    first = dict(zip(head, rows[1], strict=True))
    assert first["breakdown"] == "total" and int(first["reported"]) == total["reported"]
    assert int(first["orders"]) == total["orders"]

    book = desk.client("street1").get(q + "&format=xlsx")
    assert book.status_code == 200 and "spreadsheetml" in book.mimetype
    wb = load_workbook(io.BytesIO(book.get_data()))
    assert wb.sheetnames == ["统计", "汇总", "按类别", "按社区"]
    summary = list(wb["汇总"].iter_rows(values_only=True))
    assert summary[0][:3] == ("街道代码", "街道", "上报")
    assert summary[1][0] == "110108001" and summary[1][2] == total["reported"]
    classes = list(wb["按类别"].iter_rows(values_only=True))[1:]
    assert len(classes) == len(report["streets"][0]["by_class"])


def test_statistics_page_is_served(desk: StreetDesk) -> None:
    page = desk.client("street1").get("/street")
    assert page.status_code == 200 and b"street.js" in page.data
    assert desk.client("bureau").get("/street").status_code == 403


def test_exports_hold_names_as_text_never_formulas() -> None:
    counts = dict.fromkeys(street_stats.COUNTS + street_stats.SUPERVISION, 0)
    shown = {
        "from": "2026-01-01",
        "to": "2026-01-02",
        "streets": [
            {
                "street": {"code": "110108001", "name": '=HYPERLINK("http://x")'},
                "total": counts,
                "by_class": [],
                "by_community": [{"code": "110108001001", "name": "=1+1", **counts}],
            }
        ],
    }
    rows = list(csv.reader(io.StringIO(street_stats.as_csv(shown).decode("utf-8-sig"))))
    assert rows[1][1] == """'=HYPERLINK("http://x")""" and rows[1][3] == ""  # empty stays empty
    assert rows[2][4] == "'=1+1"
    book = load_workbook(io.BytesIO(street_stats.as_xlsx(shown)))
    cells = [c for ws in book.worksheets for row in ws.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert book["按社区"]["C2"].value == "=1+1"


def test_order_from_the_command_line(desk: StreetDesk) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    number = desk.record().get_json()["number"]
    desk.to_handling(number)
    settings, out = desk.install.settings, desk.install.out
    desk.install.signing("cs-street1")
    env = {"CITYGRID_DATABASE_URL": settings.database_url,
           "CITYGRID_DATA_DIR": str(settings.data_dir)}  # fmt: skip
    signer = ["--as", "cs-street1", "--key", str(out / "cs-street1.signing.key"),
              "--cert", str(out / "cs-street1.signing.crt")]  # fmt: skip
    done = CliRunner().invoke(
        main, ["case", "act", number, "order", *signer, "--field", "message=请今日回复"], env=env
    )
    assert done.exit_code == 0 and done.output.strip().endswith("handling (version 6)"), done.output
    order = desk.case("street1", number)["supervision"][-1]
    assert order["kind"] == "order" and order["message"] == "请今日回复"
    assert order["standing"] == "waiting" and order["actor"] == "cs-street1"
    missing = CliRunner().invoke(main, ["case", "act", number, "order", *signer], env=env)
    assert missing.exit_code != 0 and "message" in missing.output


def test_statistics_from_the_command_line(desk: StreetDesk, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mapserver.cli import main

    settings = desk.install.settings
    env = {"CITYGRID_DATABASE_URL": settings.database_url,
           "CITYGRID_DATA_DIR": str(settings.data_dir)}  # fmt: skip
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    desk.record()
    q = f"/street/stats?from={today}&to={today}&street=110108001"
    served = desk.client("lead").get(q).get_json()["streets"][0]["total"]

    def run(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, ["street", "stats", "--from", today, "--to", today,
                                         *args], env=env)  # fmt: skip

    shown = run("--street", "110108001", "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["streets"][0]["total"] == served
    table = run("--street", "110108001")
    assert table.exit_code == 0 and table.output.splitlines()[1].split()[1] == str(
        served["reported"]
    )
    book = tmp_path / "stats.xlsx"
    assert run("--format", "xlsx", "--out", str(book)).exit_code == 0
    assert load_workbook(book).sheetnames == ["统计", "汇总", "按类别", "按社区"]
    for bad in (["--street", "999999999"], ["--format", "xlsx"]):
        refused = run(*bad)
        assert refused.exit_code != 0 and "Traceback" not in refused.output, refused.output
    wrong = CliRunner().invoke(main, ["street", "stats", "--from", "2026-02-30", "--to", today],
                               env=env)  # fmt: skip
    assert wrong.exit_code != 0 and "from must be a date" in wrong.output
