"""Application maintenance on the production app, as administrators drive it: the
organisation tree, class tables and time limits (a case keeps the limits of its filing),
work calendar overrides, accounts (search, disable/enable, roles, enrolment codes,
certificate revocation) over HTTP, and the same changes from the command line; every
change a signed action, versioned, refused without one."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from mapserver import db
from mapserver.cases.calendar import WorkCalendar
from mapserver.maintenance import calendar_overrides
from mapserver.services import services

from .app_client import SECRET, Install
from .conftest import demo_database
from .test_cases import Desk
from .tls import Signer


class Admin(Desk):
    """The case desk plus an administrator who signs maintenance changes."""

    def __init__(self, install: Install):
        super().__init__(install)
        install.account("mt-admin", ["admin"], None)

    def change(self, path: str, action: str, resource: str, who: str = "mt-admin", **params: Any):  # type: ignore[no-untyped-def]
        envelope = self.install.envelope(who, action, resource, params)
        return self.install.client(who).post(path, json=envelope)

    def get(self, path: str, who: str = "mt-admin") -> Any:
        reply = self.install.client(who).get(path)
        assert reply.status_code == 200, (path, reply.get_json())
        return reply.get_json()

    def sql(self, query: str, *args: Any) -> Any:
        with psycopg.connect(self.install.settings.database_url) as conn:
            return conn.execute(query, args).fetchall()


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    settings = demo_database("citygrid_maint", tmp_path_factory.mktemp("maint-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("maint-certs"), rate_limit_api="*=100000/hour"
    )
    yield Admin(install)
    install.close()
    db.drop_database(settings)


def _to(admin: Admin, number: str, last: str) -> None:
    for who, name, params in [
        ("operator", "accept", {}),
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": admin.bureau}),
    ]:
        reply = admin.act(who, number, name, **params)
        assert reply.status_code == 200, reply.get_json()
        if name == last:
            return


def test_a_case_keeps_the_limits_in_force_when_it_was_filed(admin: Admin) -> None:
    (old_amount, old_unit), = admin.sql(
        "SELECT time_limit, time_unit FROM event_class WHERE major = '01' AND minor = '02'"
    )  # fmt: skip
    before = admin.get("/maintenance/limits")["version"]
    filed_before = admin.record().get_json()["number"]
    _to(admin, filed_before, "file")

    new_unit = "working_hours" if old_unit == "working_days" else "working_days"
    changed = admin.change(
        "/maintenance/classes/event/01/02", "class.update", "class event/01/02",
        time_limit=2.5, time_unit=new_unit, filing_condition="影响通行或市容",
    )  # fmt: skip
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["limits_version"] == before + 1
    filed_after = admin.record().get_json()["number"]
    _to(admin, filed_after, "file")

    calendar = services(admin.install.app).calendar()
    for number, (amount, unit) in [(filed_before, (old_amount, old_unit)),
                                   (filed_after, (2.5, new_unit))]:  # fmt: skip
        reply = admin.act("dispatcher", number, "dispatch", bureau=admin.bureau)
        assert reply.status_code == 200, reply.get_json()
        case = reply.get_json()
        dispatched = [h for h in case["history"] if h["transition"] == "dispatch"][-1]
        at = dt.datetime.fromisoformat(dispatched["at"])
        expected = calendar.add(at, float(amount), unit)  # 2.5 of a unit, not rounded up to 3
        assert dt.datetime.fromisoformat(case["deadline"]) == expected, (number, unit)
    pinned = dict(admin.sql(
        "SELECT number, limits_version FROM city_case WHERE number IN (%s, %s)",
        filed_before, filed_after,
    ))  # fmt: skip
    assert pinned == {filed_before: before, filed_after: before + 1}
    versions = admin.get("/maintenance/limits")["versions"]
    assert versions[-1]["version"] == before + 1 and versions[-1]["account"] == "mt-admin"
    assert versions[-1]["subject"] == "event/01/02" and versions[-1]["signed_action"]
    table = admin.get("/maintenance/classes/event")["classes"]
    row = next(c for c in table if (c["major"], c["minor"]) == ("01", "02"))
    assert row["filing_condition"] == "影响通行或市容" and row["time_unit"] == new_unit

    # A stage default and a class override, each a new version; removing the override too.
    reply = admin.change("/maintenance/limits/order_reply", "limit.set", "limit order_reply",
                         amount=2, unit="working_hours")  # fmt: skip
    assert reply.status_code == 200 and reply.get_json()["limits_version"] == before + 2
    override = {"kind": "event", "major": "01", "minor": "02", "amount": 1, "unit": "working_days"}
    assert admin.change("/maintenance/limits/check", "limit.set", "limit check",
                        **override).status_code == 200  # fmt: skip
    assert admin.change("/maintenance/limits/check", "limit.set", "limit check", kind="event",
                        major="01", minor="02", remove=True).status_code == 200  # fmt: skip
    assert admin.get("/maintenance/limits")["version"] == before + 4


def test_changes_are_refused_without_a_proper_signature(admin: Admin) -> None:
    before = admin.sql("SELECT count(*) FROM maintenance_change")[0][0]
    unsigned = admin.install.client("mt-admin").post(
        "/maintenance/organisations/x1", json={"name": "x", "kind": "other"}
    )
    assert unsigned.status_code == 400 and unsigned.is_json
    wrong = admin.change("/maintenance/organisations/x1", "org.save", "organisation x2",
                         name="x", kind="other")  # fmt: skip
    assert wrong.status_code == 400
    as_leader = admin.change("/maintenance/limits/handle", "limit.set", "limit handle",
                             who="cs-leader", amount=1, unit="working_days")  # fmt: skip
    assert as_leader.status_code == 403
    days = {"unit": "working_days"}
    for path, action, resource, params in [
        ("/maintenance/limits/nowhere", "limit.set", "limit nowhere", {"amount": 1, **days}),
        ("/maintenance/limits/handle", "limit.set", "limit handle", {"amount": -1, **days}),
        ("/maintenance/classes/event/99/99", "class.update", "class event/99/99", {"name": "x"}),
        ("/maintenance/calendar/2026-02-30", "calendar.set", "calendar 2026-02-30",
         {"kind": "holiday"}),
        ("/maintenance/organisations/bad code", "org.save", "organisation bad code",
         {"name": "x", "kind": "other"}),
    ]:  # fmt: skip
        reply = admin.change(path, action, resource, **params)
        assert reply.status_code in (400, 404) and reply.is_json, (path, reply.status_code)
    # A kind that is an object or a list, not a name, was a 500 (a lookup in a dict of kinds).
    class_override = {"major": "01", "minor": "02", "amount": 1, **days}
    for kind in ([], {}, ["event"], {"event": 1}):
        for path, action, resource, params in [
            ("/maintenance/organisations/x1", "org.save", "organisation x1",
             {"name": "x", "kind": kind}),
            ("/maintenance/limits/check", "limit.set", "limit check",
             {"kind": kind, **class_override}),
        ]:  # fmt: skip
            reply = admin.change(path, action, resource, **params)
            assert reply.status_code == 400, (path, kind, reply.status_code)
            assert reply.get_json()["message"].startswith("kind must be "), path
    assert admin.sql("SELECT count(*) FROM maintenance_change")[0][0] == before

    # The database itself refuses an organisation change without a matching signed action
    # of an administrator (what a compromised serving process would try).
    (case_action,) = admin.sql("SELECT max(id) FROM signed_action WHERE action LIKE 'case.%%'")[0]
    url = admin.install.settings.database_url
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "SELECT organisation_save(%s, 'evil', 'x', 'other', NULL, NULL, true)",
            (case_action,),
        )


def test_organisation_tree(admin: Admin) -> None:
    saved = admin.change(
        f"/maintenance/organisations/{admin.bureau}.roads", "org.save",
        f"organisation {admin.bureau}.roads", name="道路养护科", kind="department",
        parent=admin.bureau,
    )  # fmt: skip
    assert saved.status_code == 200, saved.get_json()
    version = saved.get_json()["version"]
    tree = admin.get("/maintenance/organisations")["tree"]
    district = next(n for n in tree if n["kind"] == "district")
    bureau = next(n for n in district["children"] if n["code"] == admin.bureau)
    assert [c["code"] for c in bureau["children"]] == [f"{admin.bureau}.roads"]
    renamed = admin.change(
        f"/maintenance/organisations/{admin.bureau}.roads", "org.save",
        f"organisation {admin.bureau}.roads", name="道路科", kind="department",
        parent=admin.bureau, active=False,
    )  # fmt: skip
    assert renamed.get_json()["version"] > version
    history = admin.get("/maintenance/history?area=organisation")["changes"]
    assert history[0]["change"]["before"]["name"] == "道路养护科"
    assert history[0]["change"]["after"] == {"name": "道路科", "kind": "department",
        "street": None, "parent": admin.bureau, "active": False}  # fmt: skip
    # Refused: a department under a street office, a cycle, a community without its street.
    for code, params in [
        ("d2", {"name": "x", "kind": "department", "parent": "street-001"}),
        ("district", {"name": "区", "kind": "district", "parent": admin.bureau}),
        ("c9", {"name": "x", "kind": "community", "parent": "street-001"}),
    ]:
        reply = admin.change(f"/maintenance/organisations/{code}", "org.save",
                             f"organisation {code}", **params)  # fmt: skip
        assert reply.status_code == 400, (code, reply.get_json())
    # The change register (hash chain) names the signer of the organisation change.
    (actor,) = admin.sql(
        "SELECT body ->> 'actor' FROM register_change WHERE body ->> 'table' = 'organisation'"
        " ORDER BY id DESC LIMIT 1"
    )[0]
    assert actor == "mt-admin"


def test_calendar_override_moves_deadlines(admin: Admin) -> None:
    app = admin.install.app
    base = WorkCalendar.from_settings(admin.install.settings)
    day = dt.date.today() + dt.timedelta(days=30)
    while not base.is_working_day(day):
        day += dt.timedelta(days=1)
    assert services(app).calendar().is_working_day(day)
    reply = admin.change(f"/maintenance/calendar/{day}", "calendar.set", f"calendar {day}",
                         kind="holiday", note="区级临时假日")  # fmt: skip
    assert reply.status_code == 200, reply.get_json()
    assert not services(app).calendar().is_working_day(day)
    with psycopg.connect(admin.install.settings.database_url) as conn:  # what the CLI counts on
        assert not calendar_overrides.for_settings(conn, admin.install.settings).is_working_day(day)
    start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(17, 0), tzinfo=base.tz)
    while not base.is_working_moment(start):
        start -= dt.timedelta(days=1)
    assert services(app).calendar().add(start, 2, "working_hours").date() > day
    shown = admin.get("/maintenance/calendar")
    assert {"day": day.isoformat(), "kind": "holiday", "note": "区级临时假日"} in shown["overrides"]
    assert admin.change(f"/maintenance/calendar/{day}", "calendar.set", f"calendar {day}",
                        kind="none").status_code == 200  # fmt: skip
    assert services(app).calendar().is_working_day(day)
    # A day is YYYY-MM-DD only: Python also reads these, and they were stored and signed so.
    for other in (day.strftime("%Y%m%d"), "{}-W{:02d}-{}".format(*day.isocalendar())):
        odd = admin.change(f"/maintenance/calendar/{other}", "calendar.set",
                           f"calendar {other}", kind="holiday")  # fmt: skip
        assert odd.status_code == 400, odd.get_json()
        assert odd.get_json()["message"] == "the day must be a date YYYY-MM-DD"
    assert admin.sql("SELECT count(*) FROM calendar_override WHERE day = %s", day) == [(0,)]


def test_accounts_in_the_browser_api(admin: Admin) -> None:
    found = admin.get("/maintenance/accounts?q=cs-&role=bureau_handler")["accounts"]
    assert {a["name"] for a in found} == {"cs-bureau", "cs-otherbureau"}
    assert all(a["valid_certificates"] >= 1 for a in found)
    assert (
        admin.install.client("mt-admin").get("/maintenance/accounts?role=pope").status_code == 400
    )
    assert admin.install.client("cs-leader").get("/maintenance/accounts").status_code == 403

    name = admin.install.account("mt-person", ["viewer"], "street-001")
    disable = admin.change(f"/admin/accounts/{name}/disable", "account.disable", f"account {name}")
    assert disable.status_code == 200 and disable.get_json()["active"] is False
    acts = admin.sql("SELECT count(*) FROM signed_action")[0][0]
    again = admin.change(f"/admin/accounts/{name}/disable", "account.disable", f"account {name}")
    assert again.status_code == 409 and "already disabled" in again.get_json()["message"]
    assert admin.sql("SELECT count(*) FROM signed_action")[0][0] == acts  # no act of nothing
    assert admin.install.client(name).get("/auth/whoami").status_code in (401, 403)
    enable = admin.change(f"/maintenance/accounts/{name}/enable", "account.enable",
                          f"account {name}")  # fmt: skip
    assert enable.status_code == 200, enable.get_json()
    assert enable.get_json()["active"] is True
    again = admin.change(f"/maintenance/accounts/{name}/enable", "account.enable",
                         f"account {name}")  # fmt: skip
    assert again.status_code == 409 and "already active" in again.get_json()["message"]
    # The serving process drops its cached identities when the change's NOTIFY arrives.
    deadline = time.monotonic() + 10
    while admin.install.client(name).get("/auth/whoami").status_code != 200:
        assert time.monotonic() < deadline, "the enabled account is still refused"
        time.sleep(0.05)
    granted = admin.change(f"/maintenance/accounts/{name}/grant", "account.grant",
                           f"account {name}", role="inspector")  # fmt: skip
    assert granted.get_json()["roles"] == ["inspector", "viewer"]
    taken = admin.change(f"/maintenance/accounts/{name}/revoke-role", "account.revoke_role",
                         f"account {name}", role="viewer")  # fmt: skip
    assert taken.get_json()["roles"] == ["inspector"]
    clash = admin.change("/maintenance/accounts/cs-bureau/grant", "account.grant",
                         "account cs-bureau", role="dispatcher")  # fmt: skip
    assert clash.status_code == 409 and clash.get_json()["error"] == "separation_of_duties"
    # A signature for one account's change cannot be spent on another's.
    other = admin.change("/maintenance/accounts/cs-operator/grant", "account.grant",
                         f"account {name}", role="viewer")  # fmt: skip
    assert other.status_code == 400

    code = admin.change(f"/maintenance/accounts/{name}/enrol-code", "pki.enrol_code",
                        f"account {name}", hours=2)  # fmt: skip
    assert code.status_code == 200 and code.headers["Cache-Control"] == "no-store"
    assert len(code.get_json()["code"]) == 29
    (waiting,) = admin.sql(
        "SELECT count(*) FROM enrolment_code e JOIN account a ON a.id = e.account_id"
        " WHERE a.name = %s AND e.used_at IS NULL", name,
    )[0]  # fmt: skip
    assert waiting == 1

    detail = admin.get(f"/maintenance/accounts/{name}")
    person = next(c for c in detail["certificates"] if c["kind"] == "person")
    revoked = admin.change(f"/admin/certificates/{person['serial']}/revoke", "pki.revoke",
                           f"certificate {person['serial']}", reason="key_compromise")  # fmt: skip
    assert revoked.status_code in (200, 503), revoked.get_json()  # 503: CRL published later
    detail = admin.get(f"/maintenance/accounts/{name}")
    again = next(c for c in detail["certificates"] if c["serial"] == person["serial"])
    assert again["revoked_at"] and again["revocation_reason"] == "key_compromise"


def test_the_last_administrator_keeps_the_role(admin: Admin) -> None:
    """An install's only administrator cannot revoke its own role nor disable itself (before,
    both were 200 and every administrative act was refused from then on); another
    administrator's role may go."""
    assert admin.sql(
        "SELECT a.name FROM account a JOIN account_role r ON r.account_id = a.id"
        " WHERE r.role = 'admin' AND a.active"
    ) == [("mt-admin",)]
    revoked = admin.change("/maintenance/accounts/mt-admin/revoke-role", "account.revoke_role",
                           "account mt-admin", role="admin")  # fmt: skip
    assert revoked.status_code == 409, revoked.get_json()
    assert revoked.get_json()["error"] == "last_administrator"
    disabled = admin.change("/admin/accounts/mt-admin/disable", "account.disable",
                            "account mt-admin")  # fmt: skip
    assert disabled.status_code == 409 and disabled.get_json()["error"] == "last_administrator"
    assert admin.get("/auth/whoami")["roles"] == ["admin"]
    # Nor from the command line (the database refuses it, whoever asks).
    from auth import accounts

    with psycopg.connect(admin.install.settings.database_url) as conn:
        with pytest.raises(accounts.LastAdministrator):
            accounts.revoke_role(conn, "mt-admin", "admin")
        with pytest.raises(accounts.LastAdministrator):
            accounts.set_active(conn, "mt-admin", False)
        # A disabled account's role can go: it administers nothing.
        spare = admin.install.account("mt-spare-admin", ["admin", "viewer"], None)
        accounts.set_active(conn, spare, False)
        assert accounts.revoke_role(conn, spare, "admin").roles == ("viewer",)
        conn.rollback()

    second = admin.install.account("mt-admin2", ["admin"], None)
    handed = admin.change("/maintenance/accounts/mt-admin2/revoke-role", "account.revoke_role",
                          "account mt-admin2", role="admin")  # fmt: skip
    assert handed.status_code == 200, handed.get_json()
    assert admin.change(f"/admin/accounts/{second}/disable", "account.disable",
                        f"account {second}").status_code == 200  # fmt: skip


def test_cli_changes_are_signed_and_versioned(admin: Admin, tmp_path: Path) -> None:
    from mapserver.cli import main

    settings = admin.install.settings
    admin.install.signing("mt-admin")
    out = admin.install.out
    env = {
        "CITYGRID_DATABASE_URL": settings.database_url,
        "CITYGRID_DATA_DIR": str(settings.data_dir),
        "CITYGRID_ADMIN_KEY": str(out / "mt-admin.signing.key"),
        "CITYGRID_ADMIN_CERT": str(out / "mt-admin.signing.crt"),
    }

    def run(*args: str, **extra: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, list(args), env={**env, **extra})

    saved = run("maint", "org", "save", "cmd-centre-2", "--name", "第二指挥中心",
                "--kind", "command_centre", "--parent", "district")  # fmt: skip
    assert saved.exit_code == 0, saved.output
    assert "cmd-centre-2" in run("maint", "org", "list").output
    limited = run("maint", "limit", "set", "forward", "--amount", "2", "--unit", "working_hours")
    assert limited.exit_code == 0, limited.output
    changed = run("maint", "class", "set", "event", "01/02", "--field", "department=环卫局")
    assert changed.exit_code == 0, changed.output
    day = "2031-01-06"
    assert run("maint", "calendar", "set", day, "holiday", "--note", "测试").exit_code == 0
    assert day in run("maint", "calendar", "list").output
    history = json.loads(run("maint", "history").output)
    assert [h["subject"] for h in history[:4]] == [day, "event/01/02", "stage forward",
                                                  "cmd-centre-2"]  # fmt: skip
    assert all(h["account"] == "mt-admin" and h["signed_action"] for h in history[:4])
    audited = admin.sql(
        "SELECT count(*) FROM audit_entry WHERE method = 'CLI' AND account = 'mt-admin'"
        " AND detail ->> 'signature_sha256' IS NOT NULL AND action IN"
        " ('org.save', 'limit.set', 'class.update', 'calendar.set')"
    )[0][0]
    assert audited == 4
    # Without a signing key: one line, non-zero; a non-administrator's key: refused.
    bare = CliRunner().invoke(main, ["maint", "limit", "set", "check", "--amount", "1",
                              "--unit", "working_days"], env={k: v for k, v in env.items()
                              if not k.startswith("CITYGRID_ADMIN")})  # fmt: skip
    assert bare.exit_code != 0 and "signed" in bare.output and "Traceback" not in bare.output
    admin.install.signing("cs-leader")
    refused = run("maint", "calendar", "set", day, "none",
                  CITYGRID_ADMIN_KEY=str(out / "cs-leader.signing.key"),
                  CITYGRID_ADMIN_CERT=str(out / "cs-leader.signing.crt"))  # fmt: skip
    assert refused.exit_code != 0 and "not allowed" in refused.output
    # A limit JSON cannot carry (nan, inf) or JCS cannot sign (1e300) was a traceback of the
    # signing; it is refused as any limit out of range, and nothing changes.
    changes = admin.sql("SELECT count(*) FROM maintenance_change")[0][0]
    for amount in ("nan", "inf", "1e300", "-1", "1e-300"):
        for args in (
            ["maint", "limit", "set", "forward", "--amount", amount, "--unit", "working_hours"],
            ["maint", "class", "set", "event", "01/02", "--time-limit", amount],
        ):
            bad = run(*args)
            if amount in ("nan", "inf"):  # click's one-line refusal, before anything is read
                assert bad.exit_code == 2 and "is not a finite number" in bad.output, bad.output
                continue
            assert bad.exit_code == 1, (args, bad.output)
            assert bad.output == (
                "citygrid: error: the time limit must be a number from 0.1 to 1000\n"
            ), (args, bad.output)
    assert admin.sql("SELECT count(*) FROM maintenance_change")[0][0] == changes


@pytest.fixture(scope="module")
def signer(admin: Admin) -> Iterator[Signer]:
    """The CA's signing service beside the in-process app (it alone holds the CA key)."""
    settings = admin.install.settings
    running = Signer(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
        }
    )
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _csr(key: Any, name: str = "mt-holder") -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_a_person_certificate_issued_from_a_csr(admin: Admin, signer: Signer) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from auth import person_issue
    from auth import signer as signer_client

    name = admin.install.account("mt-holder", ["viewer"], "street-001")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _csr(key)
    digest = person_issue.csr_sha256(x509.load_pem_x509_csr(pem.encode()))
    path = f"/maintenance/accounts/{name}/certificates"

    def issue(who: str = "mt-admin", csr: str = pem, **params: Any):  # type: ignore[no-untyped-def]
        envelope = admin.install.envelope(who, "pki.issue", f"account {name}", params)
        return admin.install.client(who).post(path, json={**envelope, "csr": csr})

    before = admin.sql("SELECT count(*) FROM certificate WHERE kind = 'person'")[0][0]
    assert issue(csr_sha256="0" * 64, kind="person").status_code == 400  # another CSR
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert issue(csr=_csr(other), csr_sha256=digest, kind="person").status_code == 400
    assert issue(csr="not a csr", csr_sha256=digest, kind="person").status_code == 400
    assert issue(who="cs-leader", csr_sha256=digest, kind="person").status_code == 403
    assert admin.sql("SELECT count(*) FROM certificate WHERE kind = 'person'")[0][0] == before

    reply = issue(csr_sha256=digest, kind="person", days=30)
    assert reply.status_code == 201, reply.get_json()
    chain = x509.load_pem_x509_certificates(reply.get_json()["certificate"].encode())
    cert, ca = chain
    assert ca == admin.install.store.certificate()
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31
    (kind, holder), = admin.sql(
        "SELECT c.kind, a.name FROM certificate c JOIN account a ON a.id = c.account_id"
        " WHERE c.serial = %s", reply.get_json()["serial"],
    )  # fmt: skip
    assert (kind, holder) == ("person", name)
    # The holder gets in with it (their key never left their machine).
    admin.install.der["mt-holder-new"] = cert.public_bytes(serialization.Encoding.DER)
    whoami = admin.install.client("mt-holder-new").get("/auth/whoami")
    assert whoami.status_code == 200 and whoami.get_json()["account"] == name

    # The signer decides for itself: the same signed action again, or another act's, is
    # refused, whatever the web process asks.
    action_id = reply.get_json()["signed_action"]
    with pytest.raises(signer_client.SignerRefused):
        signer_client.issue_person(admin.install.settings, name, pem, action_id)
    (grant_id,) = admin.sql(
        "SELECT max(id) FROM signed_action WHERE action = 'account.grant'"
    )[0]  # fmt: skip
    with pytest.raises(signer_client.SignerRefused):
        signer_client.issue_person(admin.install.settings, name, pem, grant_id)
    issued = admin.sql("SELECT count(*) FROM certificate WHERE kind = 'person'")[0][0]
    assert issued == before + 1


def test_no_certificate_for_a_disabled_account(admin: Admin, signer: Signer) -> None:
    """Refused before the administrator's signed act is kept: a kept act the signer then
    refuses would stand in the register as an issue that never happened."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from auth import person_issue

    name = admin.install.account("mt-gone", ["viewer"], "street-001")
    off = admin.change(f"/admin/accounts/{name}/disable", "account.disable", f"account {name}")
    assert off.status_code == 200, off.get_json()
    pem = _csr(ec.generate_private_key(ec.SECP256R1()))
    digest = person_issue.csr_sha256(x509.load_pem_x509_csr(pem.encode()))
    acts = "SELECT count(*) FROM signed_action WHERE action = 'pki.issue'"
    kept = admin.sql(acts)[0][0]
    envelope = admin.install.envelope(
        "mt-admin", "pki.issue", f"account {name}", {"csr_sha256": digest, "kind": "person"}
    )
    reply = admin.install.client("mt-admin").post(
        f"/maintenance/accounts/{name}/certificates", json={**envelope, "csr": pem}
    )
    assert reply.status_code == 400
    assert reply.get_json()["message"] == f"account {name!r} is disabled"
    assert admin.sql(acts)[0][0] == kept
    certificates = "SELECT count(*) FROM certificate c JOIN account a ON a.id = c.account_id"
    assert admin.sql(certificates + " WHERE a.name = %s AND c.kind = 'person'", name)[0][0] == 1


def test_the_change_log_pages_back_to_the_first(admin: Admin) -> None:
    """The change log lists its newest 200: older ones a page at a time, by version."""
    for day in ("2032-01-05", "2032-01-06", "2032-01-07"):  # three changes at least
        reply = admin.change(f"/maintenance/calendar/{day}", "calendar.set", f"calendar {day}",
                             kind="holiday", note="分页")  # fmt: skip
        assert reply.status_code == 200, reply.get_json()
    everything = admin.get("/maintenance/history")
    assert everything["older"] is None
    walked, before = [], None
    while True:
        page = admin.get("/maintenance/history?limit=1" + (f"&before={before}" if before else ""))
        walked += [c["version"] for c in page["changes"]]
        if page["older"] is None:
            break
        before = page["older"]
    assert walked == [c["version"] for c in everything["changes"]] and len(walked) >= 3
    client = admin.install.client("mt-admin")
    for bad in ("limit=0", "limit=201", "before=x", "before=²", "page=2", "limit=" + "9" * 30):
        refused = client.get(f"/maintenance/history?{bad}")
        assert refused.status_code == 400 and refused.is_json, bad


def _stored(admin: Admin) -> Any:
    """What a refused change must leave as it was."""
    return admin.sql(
        "SELECT (SELECT max(id) FROM signed_action), (SELECT max(id) FROM maintenance_change),"
        " (SELECT max(version) FROM limit_version),"
        " (SELECT array_agg(row(code, kind, parent_code, active) ORDER BY code) FROM organisation),"
        " (SELECT array_agg(row(day, kind) ORDER BY day) FROM calendar_override)"
    )


def test_a_new_kind_keeps_the_tree_in_order(admin: Admin) -> None:
    """A bureau with a department under it made `other` left the department under an
    organisation a department may not hang under; a street office made a bureau, its
    communities. Refused, naming what hangs under it; a kind its children allow is kept."""
    code = f"{admin.other_bureau}.dept"
    saved = admin.change(f"/maintenance/organisations/{code}", "org.save", f"organisation {code}",
                         name="管线科", kind="department", parent=admin.other_bureau)  # fmt: skip
    assert saved.status_code == 200, saved.get_json()
    community = "street-001.c1"
    saved = admin.change(f"/maintenance/organisations/{community}", "org.save",
                         f"organisation {community}", name="社区", kind="community",
                         parent="street-001", street="110108001")  # fmt: skip
    assert saved.status_code == 200, saved.get_json()
    before = _stored(admin)
    for org, params, child in [
        (admin.other_bureau, {"name": "人防办", "kind": "other", "parent": "district"}, code),
        ("street-001", {"name": "街道", "kind": "bureau", "parent": "district"}, community),
        ("street-001", {"name": "街道", "kind": "other", "parent": "district",
                        "street": "110108001"}, community),
    ]:  # fmt: skip
        reply = admin.change(f"/maintenance/organisations/{org}", "org.save",
                             f"organisation {org}", **params)  # fmt: skip
        assert reply.status_code == 400, (org, reply.get_json())
        assert child in reply.get_json()["message"], reply.get_json()
    assert _stored(admin)[1:] == before[1:]
    ((kind,),) = admin.sql("SELECT kind FROM organisation WHERE code = %s", admin.other_bureau)
    assert kind == "bureau"


def test_a_bureau_with_open_cases_is_not_retired(admin: Admin) -> None:
    """Retired with a case still with it, a bureau left the case with no one to dispatch it
    on; it is recalled first. And a change that does not say `active` keeps it as it stands:
    a rename revived a retired bureau."""
    ((parent,),) = admin.sql("SELECT parent_code FROM organisation WHERE code = %s", admin.bureau)
    code = "bureau-retiring"
    path, resource = f"/maintenance/organisations/{code}", f"organisation {code}"
    same = {"name": "撤并局", "kind": "bureau", "parent": parent}
    assert admin.change(path, "org.save", resource, **same).status_code == 200
    number = admin.record().get_json()["number"]
    for who, name, params in (("operator", "accept", {}), ("leader", "file", {}),
                              ("dispatcher", "dispatch", {"bureau": code})):  # fmt: skip
        assert admin.act(who, number, name, **params).status_code == 200, name
    refused = admin.change(path, "org.save", resource, **same, active=False)
    assert refused.status_code == 409 and number in refused.get_json()["message"]
    assert admin.sql("SELECT active FROM organisation WHERE code = %s", code) == [(True,)]
    assert admin.act("dispatcher", number, "recall", reason="派错").status_code == 200
    assert admin.change(path, "org.save", resource, **same, active=False).status_code == 200
    renamed = admin.change(path, "org.save", resource, **{**same, "name": "撤并局（旧）"})
    assert renamed.status_code == 200 and renamed.get_json()["active"] is False


@pytest.mark.parametrize(
    ("path", "action", "resource", "params"),
    [
        ("/maintenance/organisations/street-002", "org.save", "organisation street-002",
         {"name": "街道", "kind": "street_office", "parent": "district", "street": "110108002",
          "budget": "9"}),
        ("/maintenance/limits/check", "limit.set", "limit check",
         {"amount": 2, "unit": "working_days", "reason": "x"}),
        ("/maintenance/calendar/2033-05-02", "calendar.set", "calendar 2033-05-02",
         {"kind": "holiday", "note": "x", "by": "x"}),
    ],
)  # fmt: skip
def test_a_field_nothing_stores_is_refused(
    admin: Admin, path: str, action: str, resource: str, params: dict[str, Any]
) -> None:
    """What is signed is kept and shown: an unknown field was signed, stored and ignored."""
    before = _stored(admin)
    reply = admin.change(path, action, resource, **params)
    assert reply.status_code == 400 and "unknown field" in reply.get_json()["message"], (
        reply.get_json()
    )
    assert _stored(admin) == before
