"""Open311 GeoReport v2 for partner systems, asked by a client written from the
specification's examples (georeport.org/v2), on the production app with real certificates;
and the duplicate hint operators get when they record a complaint."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from mapserver import db
from mapserver.services import services

from .app_client import Install
from .conftest import demo_database
from .sequenced import sequenced
from .test_cases import Desk

ISO_WITH_ZONE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$")
SERVICE_KEYS = {"service_code", "service_name", "description", "metadata", "type", "keywords"}
REQUEST_KEYS = {
    "service_request_id",
    "status",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "requested_datetime",
    "updated_datetime",
    "address",
}
COORDINATE_KEYS = {"lat", "long", "x", "y", "geom", "point", "coordinates", "bbox", "geometry"}


class GeoReport:
    """A GeoReport v2 client as the specification describes one: form-encoded POST, JSON
    format by extension, errors as a list of {code, description}."""

    def __init__(self, client: FlaskClient, base: str = "/open311/v2"):
        self.client = client
        self.base = base
        self.answers: list[str] = []  # every body received, for the coordinate scan

    def _get(self, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
        url = f"{self.base}/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        reply = self.client.get(url)
        return self._answer(reply)

    def _answer(self, reply: Any) -> tuple[int, Any]:
        assert reply.mimetype == "application/json", reply.mimetype
        self.answers.append(reply.get_data(as_text=True))
        body = reply.get_json()
        if reply.status_code >= 400:  # the specification's error format
            assert isinstance(body, list) and len(body) == 1, body
            assert set(body[0]) == {"code", "description"} and body[0]["code"] == reply.status_code
        return reply.status_code, body

    def services(self, **query: str) -> tuple[int, Any]:
        """GET Service List: `services.json?jurisdiction_id=…`."""
        return self._get("services.json", query)

    def service(self, code: str) -> tuple[int, Any]:
        """GET Service Definition: `services/{service_code}.json`."""
        return self._get(f"services/{code}.json")

    def create(self, fields: dict[str, str]) -> tuple[int, Any]:
        """POST Service Request: `requests.json`, application/x-www-form-urlencoded."""
        reply = self.client.post(
            f"{self.base}/requests.json",
            data=urllib.parse.urlencode(fields),
            content_type="application/x-www-form-urlencoded",
        )
        return self._answer(reply)

    def requests(self, **query: str) -> tuple[int, Any]:
        """GET Service Requests: `requests.json?start_date=…&end_date=…&status=open`."""
        return self._get("requests.json", query)

    def request(self, request_id: str) -> tuple[int, Any]:
        """GET Service Request: `requests/{service_request_id}.json`."""
        return self._get(f"requests/{request_id}.json")


class Partners:
    def __init__(self, install: Install):
        self.install = install
        self.desk = Desk(install)  # operators, a leader, … with signing keys
        install.account("o3-hotline", ["partner"])
        install.account("o3-other", ["partner"])
        self.hotline = GeoReport(install.client("o3-hotline"))
        self.other = GeoReport(install.client("o3-other"))
        self.house_id, self.house = self.sql(
            "SELECT a.id, a.full_text FROM address a WHERE a.kind = 'house'"
            " AND a.grid_code LIKE '110108001%' ORDER BY a.id LIMIT 1"
        )[0]
        # A grid of street 001 (the desk's inspector's) away from its edge, and far enough
        # inside the district that 100 m east is still inside.
        self.grid = self.sql(
            "SELECT g.code FROM unit_grid g, district d, street s,"
            " LATERAL (SELECT ST_PointOnSurface(g.geom) AS p) q"
            " WHERE s.code = '110108001' AND g.code LIKE '110108001%'"
            " AND ST_Distance(q.p, ST_Boundary(s.geom)) > 20"
            " AND ST_Distance(q.p, ST_Boundary(d.geom)) > 150"
            " ORDER BY g.code LIMIT 1"
        )[0][0]
        self.component = self.sql("SELECT code FROM component ORDER BY code LIMIT 1")[0][0]
        self.district = self.sql("SELECT code FROM district")[0][0]
        major, minor = self.sql(
            "SELECT major, minor FROM component_class WHERE (major, minor) <> (%s, %s)"
            " ORDER BY 1, 2 LIMIT 1",
            self.component[6:8],
            self.component[8:10],
        )[0]
        self.other_component_service = f"component-{major}-{minor}"

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.install.settings.database_url) as conn:
            cur = conn.execute(query, args or None)
            return cur.fetchall() if cur.description else []

    def cases(self) -> int:
        return int(self.sql("SELECT count(*) FROM city_case")[0][0])


@pytest.fixture(scope="module")
def partners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partners]:
    settings = demo_database("citygrid_open311", tmp_path_factory.mktemp("open311-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("open311-certs"), rate_limit_api="*=100000/hour"
    )
    yield Partners(install)
    install.close()
    db.drop_database(settings)


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}", k
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, value


def assert_no_coordinates(partners: Partners, bodies: list[str]) -> None:
    """No lat/long or other coordinate keys, no decimal numbers, and none of the stored
    points' coordinates, in any answer."""
    points = partners.sql("SELECT ST_X(geom), ST_Y(geom) FROM city_case")
    digits = {str(int(v)) for p in points for v in p} | {f"{v:.1f}" for p in points for v in p}
    for body in bodies:
        doc = json.loads(body)
        for where, item in _walk(doc):
            if where.endswith(f".{item}") and isinstance(item, str):
                assert item.lower() not in COORDINATE_KEYS, (where, body[:200])
            if isinstance(item, float) or (isinstance(item, int) and not isinstance(item, bool)):
                # only an error's HTTP status and an attribute's order
                assert where.endswith((".code", ".order")), (where, item)
        assert not re.search(r"\d+\.\d{3,}", body), body[:200]
        for d in digits:
            assert d not in body, (d, body[:200])


def test_services_are_the_event_and_component_classes(partners: Partners) -> None:
    status, listed = partners.hotline.services(jurisdiction_id=partners.district)
    assert status == 200 and isinstance(listed, list)
    classes = partners.sql(
        "SELECT 'event', major, minor FROM event_class"
        " UNION ALL SELECT 'component', major, minor FROM component_class"
    )
    assert {s["service_code"] for s in listed} == {f"{k}-{a}-{b}" for k, a, b in classes}
    for service in listed:
        assert set(service) >= SERVICE_KEYS and service["type"] == "realtime"
        assert service["metadata"] is True and service["group"]
    status, definition = partners.hotline.service("event-01-02")
    assert status == 200 and definition["service_code"] == "event-01-02"
    assert [a["code"] for a in definition["attributes"]] == ["grid"]
    component = f"component-{partners.component[6:8]}-{partners.component[8:10]}"
    assert partners.hotline.service(component)[1]["attributes"][0]["required"]
    assert partners.hotline.service("event-99-99")[0] == 404
    assert partners.hotline.service("sinkhole")[0] == 400
    assert partners.hotline.services(jurisdiction_id="city.gov")[0] == 400
    assert_no_coordinates(partners, partners.hotline.answers)


def test_requests_by_address_grid_and_address_id_then_read_back(partners: Partners) -> None:
    client = partners.hotline
    # The specification's example, without the lat/long, media_url and unknown attributes
    # CityGrid refuses, and with a place CityGrid knows.
    example = {
        "api_key": "xyz",
        "jurisdiction_id": partners.district,
        "service_code": "event-01-02",
        "address_string": partners.house,
        "email": "smit333@sfgov.edu",
        "device_id": "tt222111",
        "account_id": "123456",
        "first_name": "john",
        "last_name": "smith",
        "phone": "111111111",
        "description": "A large sinkhole is destroying the street\nnear the corner",
    }
    status, created = client.create(example)
    assert status == 201, created
    assert set(created[0]) == {"service_request_id", "service_notice"}
    by_address = created[0]["service_request_id"]
    assert re.fullmatch(r"\d{4}-\d{6}", by_address)
    assert by_address in created[0]["service_notice"]

    status, created = client.create(
        {"service_code": "event-05-05", "attribute[grid]": partners.grid, "description": "乱停车"}
    )
    assert status == 201, created
    by_grid = created[0]["service_request_id"]
    status, created = client.create(
        {"service_code": "event-01-02", "address_id": partners.house_id}
    )
    assert status == 201, created
    by_id = created[0]["service_request_id"]
    major, minor = partners.component[6:8], partners.component[8:10]
    status, created = client.create(
        {
            "service_code": f"component-{major}-{minor}",
            "attribute[component]": partners.component,
            "address_string": "井盖旁",
            "description": "井盖破损",
        }
    )
    assert status == 201, created
    by_component = created[0]["service_request_id"]

    status, found = client.request(by_address)
    assert status == 200 and len(found) == 1
    one = found[0]
    assert set(one) >= REQUEST_KEYS
    assert one["service_request_id"] == by_address and one["status"] == "open"
    assert one["service_code"] == "event-01-02" and one["address"] == partners.house
    assert one["description"] == "A large sinkhole is destroying the street near the corner"
    assert ISO_WITH_ZONE.match(one["requested_datetime"]), one["requested_datetime"]
    assert ISO_WITH_ZONE.match(one["updated_datetime"])
    assert "reported" in one["status_notes"] and one["agency_responsible"]
    assert "smith" not in json.dumps(found) and "111111111" not in json.dumps(found)
    assert client.request(by_id)[1][0]["address"] == partners.house  # the address's own text
    assert client.request(by_grid)[1][0]["service_code"] == "event-05-05"
    assert client.request(by_component)[1][0]["address"] == "井盖旁"

    rows = partners.sql(
        "SELECT c.source, c.reporter, c.grid_code, e.signed_action, e.parameters"
        " FROM city_case c JOIN case_event e ON e.case_id = c.id WHERE c.number = %s",
        by_grid,
    )
    source, reporter, grid, signed, params = rows[0]
    assert (source, reporter, grid, signed) == ("city_platform", "o3-hotline", partners.grid, None)
    assert re.fullmatch(r"[0-9a-f]{64}", params["open311"]["request_sha256"])
    sequenced(partners.install.settings.database_url)
    audited = partners.sql(
        "SELECT count(*) FROM audit_entry WHERE action = 'open311.submit' AND status = 201"
        " AND resource = %s AND detail ->> 'request_sha256' = %s",
        f"case {by_grid}",
        params["open311"]["request_sha256"],
    )
    assert audited[0][0] == 1

    # Another partner neither reads nor lists them: the same 404 as for none at all.
    assert partners.other.request(by_address)[0] == 404
    assert partners.other.request("2026-999999")[0] == 404
    assert partners.other.requests()[1] == []
    status, listed = client.requests(service_request_id=f"{by_address},{by_grid}")
    assert status == 200 and {r["service_request_id"] for r in listed} == {by_address, by_grid}
    assert_no_coordinates(partners, client.answers + partners.other.answers)


def test_the_callers_contact_is_for_operators_only(partners: Partners) -> None:
    status, created = partners.hotline.create(
        {
            "service_code": "event-01-02",
            "attribute[grid]": partners.grid,
            "first_name": "张",
            "last_name": "三",
            "phone": "13900000000",
            "email": "zs@example.cn",
        }
    )
    assert status == 201
    number = created[0]["service_request_id"]
    seen = partners.desk.client("operator").get(f"/cases/{number}").get_json()
    assert seen["contact"] == "三; 张; 13900000000; zs@example.cn"
    assert seen["source"] == "city_platform" and seen["reporter"] == "o3-hotline"
    for who in ("leader", "inspector", "dispatcher"):
        reply = partners.desk.client(who).get(f"/cases/{number}")
        assert reply.status_code == 200, who
        assert "13900000000" not in reply.get_data(as_text=True), who
    assert "13900000000" not in partners.hotline.request(number)[1][0].values()
    history = partners.sql(
        "SELECT e.parameters::text FROM case_event e JOIN city_case c ON c.id = e.case_id"
        " WHERE c.number = %s",
        number,
    )
    assert "13900000000" not in history[0][0]


def test_refusals_create_nothing(partners: Partners) -> None:
    client = partners.hotline
    before = partners.cases()
    spec_example = {
        "api_key": "xyz",
        "service_code": "event-01-02",
        "lat": "37.76524078",
        "long": "-122.4212043",
        "address_string": partners.house,
        "description": "A large sinkhole is destroying the street",
    }
    status, body = client.create(spec_example)
    assert status == 400 and "lat is not accepted" in body[0]["description"]
    assert "coordinates" in body[0]["description"]
    only_long = {k: v for k, v in spec_example.items() if k != "lat"}
    assert client.create(only_long)[1][0]["description"].startswith("long is not accepted")
    base = {"service_code": "event-01-02", "attribute[grid]": partners.grid}
    component = f"component-{partners.component[6:8]}-{partners.component[8:10]}"
    refusals = {
        "description is longer than 4000": {**base, "description": "x" * 4001},
        "media_url is not accepted": {**base, "media_url": "http://www.sfgov.org/sinkhole.jpg"},
        "exactly one of": {"service_code": "event-01-02"},
        "exactly one of ": {**base, "address_string": partners.house},
        "service_code is required": {"attribute[grid]": partners.grid},
        "service_code must look like": {**base, "service_code": "001"},
        "service_code must look like ": {**base, "service_code": "event-01-02\n"},
        "unknown parameter 'attribute[WHISPAWN]'": {**base, "attribute[WHISPAWN]": "123456"},
        "control characters": {**base, "description": "a\x00b"},
        "jurisdiction_id": {**base, "jurisdiction_id": "city.gov"},
        "address_id must be a number": {"service_code": "event-01-02", "address_id": "1 OR 1"},
        "address_id: no address": {"service_code": "event-01-02", "address_id": "999999999"},
        "attribute[grid]: no unit grid": {**base, "attribute[grid]": "11010899999999"},
        "attribute[grid] must be": {**base, "attribute[grid]": "110108001001'; --"},
        "like 'zzqqxx'": {"service_code": "event-01-02", "address_string": "zzqqxx"},
        "names its component": {"service_code": component},
        "is not a component of": {
            "service_code": partners.other_component_service,
            "attribute[component]": partners.component,
        },
        "last_name is longer": {**base, "last_name": "x" * 51},
    }
    for expected, fields in refusals.items():
        status, body = client.create(fields)
        assert status == 400, (expected, status, body)
        assert expected.strip() in body[0]["description"], (expected, body)
    assert client.create({**base, "service_code": "event-99-99"})[0] == 404
    as_json = client.client.post("/open311/v2/requests.json", json=base)
    assert as_json.status_code == 400 and "form-encoded" in as_json.get_json()[0]["description"]
    twice = client.client.post(
        "/open311/v2/requests.json",
        data="service_code=event-01-02&service_code=event-01-03&attribute%5Bgrid%5D="
        + partners.grid,
        content_type="application/x-www-form-urlencoded",
    )
    assert twice.status_code == 400 and "2 times" in twice.get_json()[0]["description"]
    # A byte that is no UTF-8 was stored as its percent-escape, text in another charset too.
    for body, kind in (
        ("description=%FF%FE&attribute%5Bgrid%5D=", "application/x-www-form-urlencoded"),
        ("description=caf%E9&attribute%5Bgrid%5D=", "application/x-www-form-urlencoded"),
        ("description=caf%E9&attribute%5Bgrid%5D=",
         "application/x-www-form-urlencoded; charset=latin-1"),
    ):  # fmt: skip
        odd = client.client.post(
            "/open311/v2/requests.json",
            data=f"service_code=event-01-02&{body}{partners.grid}",
            content_type=kind,
        )
        assert odd.status_code == 400, odd.get_json()
        assert "utf-8" in odd.get_json()[0]["description"].lower()
    assert partners.cases() == before
    status, created = client.create({**base, "description": "x" * 4000})
    assert status == 201 and partners.cases() == before + 1
    # Nobody but a partner posts: the gateway's refusal, before anything is parsed.
    operator = partners.desk.client("operator")
    assert operator.post("/open311/v2/requests.json", data=base).status_code == 403
    assert_no_coordinates(partners, client.answers)


def test_requests_filtered_by_status_and_dates(partners: Partners) -> None:
    client = partners.hotline
    base = {"service_code": "event-03-01", "attribute[grid]": partners.grid}
    old = client.create({**base, "description": "四十天前的工地扬尘"})[1][0]["service_request_id"]
    new = client.create({**base, "description": "今天的工地扬尘"})[1][0]["service_request_id"]
    partners.sql(
        "UPDATE city_case SET created_at = created_at - interval '40 days' WHERE number = %s", old
    )
    # An operator rejects the new one (a signed act): it is closed for the partner.
    assert partners.desk.act("operator", new, "reject", reason="invalid").status_code == 200

    now = dt.datetime.now(dt.UTC)

    def w3c(moment: dt.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # as in the specification's example

    status, listed = client.requests(service_code="event-03-01")  # the last 90 days
    assert status == 200 and {old, new} <= {r["service_request_id"] for r in listed}
    status, listed = client.requests(
        start_date=w3c(now - dt.timedelta(days=50)),
        end_date=w3c(now - dt.timedelta(days=30)),
        status="open",
    )
    assert status == 200 and [r["service_request_id"] for r in listed] == [old]
    status, listed = client.requests(start_date=w3c(now - dt.timedelta(days=1)), status="closed")
    assert status == 200 and [r["service_request_id"] for r in listed] == [new]
    closed = listed[0]
    assert closed["status"] == "closed" and "rejected" in closed["status_notes"]
    assert closed["updated_datetime"] >= closed["requested_datetime"]
    status, listed = client.requests(start_date=w3c(now - dt.timedelta(days=1)), status="open")
    assert not {new, old} & {r["service_request_id"] for r in listed}
    local_day = (now - dt.timedelta(days=40)).date().isoformat()
    status, listed = client.requests(start_date=local_day, service_code="event-03-01")
    assert status == 200 and old in {r["service_request_id"] for r in listed}

    refusals = {
        "at most 90 days": {
            "start_date": w3c(now - dt.timedelta(days=100)),
            "end_date": w3c(now),
        },
        "before start_date": {"start_date": w3c(now), "end_date": w3c(now - dt.timedelta(days=1))},
        "needs a time zone": {"start_date": "2026-04-14T06:37:38"},
        "out of range": {"start_date": "9999-12-31T00:00:00Z"},
        "W3C date-time": {"end_date": "yesterday"},
        "status must be": {"status": "pending"},
        "unknown parameter 'lat'": {"lat": "37.7"},
        "service_request_id must look like": {"service_request_id": "293944"},
    }
    for expected, query in refusals.items():
        status, body = client.requests(**query)
        assert status == 400 and expected in body[0]["description"], (expected, body)
    assert_no_coordinates(partners, client.answers)


def _pixel_east(partners: Partners, pixel: dict[str, int], metres: float) -> dict[str, int]:
    """The pixel `metres` east of `pixel` in the finest level's pictures."""
    grid = services(partners.install.app).tiles().grid
    step = round(metres / grid.level(pixel["level"]).resolution)
    total = pixel["x"] * 256 + pixel["col"] + step
    return {**pixel, "x": total // 256, "col": total % 256}


def test_duplicate_hint_same_class_within_50_m_and_24_h(partners: Partners) -> None:
    desk = partners.desk
    major, minor = partners.sql(
        "SELECT major, minor FROM event_class WHERE (major, minor) NOT IN"
        " (('01', '02'), ('05', '05'), ('03', '01')) ORDER BY 1, 2 LIMIT 1"
    )[0]
    cls = {"major": major, "minor": minor}  # a class no other test of this module uses

    def record(who: str = "operator", **params: Any) -> Any:
        return desk.record(who, **{**cls, **params})

    # The hotline's complaints of 01-02 at this grid (earlier tests) are hinted to operators.
    hinted = desk.record(place={"grid": partners.grid}).get_json()["possible_duplicates"]
    assert any(partners.hotline.request(d["number"])[0] == 200 for d in hinted), hinted

    first = record(place={"grid": partners.grid})
    assert first.status_code == 201, first.get_json()
    a = first.get_json()
    assert a["possible_duplicates"] == []  # nothing like it yet
    near = record(place={"pixel": _pixel_east(partners, a["pixel"], 10)})
    b = near.get_json()
    assert near.status_code == 201, b
    assert {"number": a["number"], "state": "reported"} in b["possible_duplicates"]
    assert all(set(d) == {"number", "state"} for d in b["possible_duplicates"])
    metres = partners.sql(
        "SELECT ST_Distance(a.geom, b.geom) FROM city_case a, city_case b"
        " WHERE a.number = %s AND b.number = %s",
        a["number"],
        b["number"],
    )[0][0]
    assert 9 <= metres <= 11, metres
    # The first case's detail shows the second too (within 24 h either way).
    again = desk.client("leader").get(f"/cases/{a['number']}").get_json()
    assert b["number"] in {d["number"] for d in again["possible_duplicates"]}

    far = record(place={"pixel": _pixel_east(partners, a["pixel"], 100)}).get_json()
    assert far["possible_duplicates"] == [], far["possible_duplicates"]
    other_class = record(place={"grid": partners.grid}, major="05", minor="05").get_json()
    assert a["number"] not in {d["number"] for d in other_class["possible_duplicates"]}

    later = record(place={"grid": partners.grid}).get_json()
    assert a["number"] in {d["number"] for d in later["possible_duplicates"]}
    partners.sql(
        "UPDATE city_case SET created_at = created_at + interval '25 hours' WHERE number = %s",
        later["number"],
    )
    shown = desk.client("operator").get(f"/cases/{later['number']}").get_json()
    assert shown["possible_duplicates"] == []

    # An inspector's report gets the hint too; a cancelled duplicate is no longer offered.
    reported = record(
        "inspector", source="inspector", place={"pixel": _pixel_east(partners, a["pixel"], 5)}
    )
    assert reported.status_code == 201, reported.get_json()
    assert a["number"] in {d["number"] for d in reported.get_json()["possible_duplicates"]}
    cancelled = desk.act("leader", b["number"], "cancel", duplicate_of=a["number"])
    assert cancelled.status_code == 200, cancelled.get_json()
    again = desk.client("operator").get(f"/cases/{a['number']}").get_json()
    assert b["number"] not in {d["number"] for d in again["possible_duplicates"]}
    # Street scope holds on the hint: an inspector of another street sees none of them.
    assert desk.client("inspector2").get(f"/cases/{a['number']}").status_code == 404


def test_a_partner_case_bundle_verifies_offline(partners: Partners) -> None:
    """The partner's request is the one unsigned event (its hash stands in the history and
    the audit); every later act is a person's signed action, and the chain verifies."""
    from auth.signed_action import SignatureRefused
    from mapserver.cases.evidence import verify_case_bundle

    from .evidence import checkpoint, head_logged, trust

    status, created = partners.hotline.create(
        {"service_code": "event-01-02", "attribute[grid]": partners.grid, "description": "垃圾"}
    )
    assert status == 201
    number = created[0]["service_request_id"]
    assert partners.desk.act("operator", number, "accept").status_code == 200
    checkpoint(partners.install.settings)
    partners.desk.client("leader").get(f"/cases/{number}/bundle")  # its entry: the head
    head_logged(partners.install.settings, number)
    doc = partners.desk.client("leader").get(f"/cases/{number}/bundle").get_json()
    assert doc["head"]["log"] is not None
    assert doc["events"][0]["bundle"] is None and doc["events"][0]["open311"]["request_sha256"]
    pinned = trust(partners.install.settings)
    chain = verify_case_bundle(doc, pinned).actions
    assert [v.action.action for v in chain] == ["case.accept"]
    forged = {**doc, "events": [doc["events"][0], {**doc["events"][1], "bundle": None}]}
    with pytest.raises(SignatureRefused, match="event 2: no signed action"):
        verify_case_bundle(forged, pinned)

    # The partner's request stands in the log: its entry names the partner, the case and the
    # request's hash. Every field of the bundle dropped, retyped or edited: none verifies,
    # but for the two kept only to be read (the time stored, the signed action's row) and
    # the head dropped (the bundle then shows each event, not that none came after).
    from .mutations import KINDS, leaves, mutated

    with_entry = verify_case_bundle(doc, pinned).submitted
    assert with_entry is not None and with_entry.entry["account"] == "o3-hotline"
    accepted = []
    for path, how in itertools.product(sorted(set(leaves(doc)), key=str), KINDS):
        name = "/".join(map(str, path))
        try:
            verify_case_bundle(mutated(doc, path, how), pinned)
        except SignatureRefused:
            continue
        if not re.match(r"^events/\d+/(at|signed_action)$", name) and (name, how) not in {
            ("head", "drop"),
            ("events/0/from", "drop"),
            ("events/0/bundle", "drop"),
        }:
            accepted.append((name, how))
    assert not accepted, accepted[:20]
