"""Inspectors' devices on the production app: a device certificate with a bound token on
every call, tasks with ETag and gzip, reports placed by a GPS fix converted inside, signed
verify/check results, Idempotency-Key replays, and tus uploads that resume, verify their
checksums, expire and end up as cleaned case attachments. Then over real TLS: a device
works with its certificate and token, an upload cut at 70 % resumes at 70 %, and a revoked
device certificate stops the next request, token and all."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import http.client
import json
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flask.testing import FlaskClient

from auth import certs, enrol, pki, signed_action
from mapserver import db
from mapserver.cli import main
from mapserver.device import fix as fix_mod
from mapserver.device import idempotency, tus
from mapserver.device_client import compose, config
from mapserver.device_client.queue import Queue
from mapserver.errors import InvalidInput

from .app_client import SECRET, Install, PeerSocket
from .conftest import demo_database
from .test_case_attachments import jpeg_segments, phone_photo
from .test_cases import Desk
from .tls import REFUSED, Server, request

STREET_1 = "110108001"


class Device:
    """An inspector's handheld: a device certificate of an inspector account, its token,
    and the account's signing key for signed actions."""

    def __init__(self, install: Install, name: str, out: Path, street: str | None = "street-001"):
        """A new inspector account `name` of `street` (None: the account exists already)."""
        self.install = install
        self.name = name
        if street is not None:
            install.account(name, ["inspector"], street)  # a person certificate too
        out.mkdir(parents=True, exist_ok=True)
        with db.transaction(install.settings) as conn:
            self.issued = certs.issue(conn, install.store, SECRET, name, pki.Kind.DEVICE, out)
        self.crt, self.key = out / f"{name}.crt", out / f"{name}.key"
        cert = x509.load_pem_x509_certificate(self.crt.read_bytes())
        self.der = cert.public_bytes(serialization.Encoding.DER)
        self.client = self.bare()
        self.token = self.client.post("/auth/token").get_json()["access_token"]
        self.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"

    @classmethod
    def of(cls, install: Install, name: str, out: Path) -> Device:
        """A device of an existing inspector account."""
        return cls(install, name, out, None)

    def bare(self) -> FlaskClient:
        client = self.install.app.test_client()
        client.environ_base.update(
            {"REMOTE_ADDR": "127.0.0.1", "gunicorn.socket": PeerSocket(self.der)}
        )
        return client

    def envelope(self, action: str, resource: str, params: dict[str, Any]) -> dict[str, Any]:
        cert, key = self.install.signing(self.name)
        nonce = self.client.post("/auth/nonce").get_json()["nonce"]
        data = signed_action.payload(
            action, resource, params, nonce, pki.now(), pki.thumbprint(cert)
        )
        return {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
            "certificate": pki.pem(cert).decode(),
        }

    def post(self, path: str, body: Any, key: str | None = None):  # type: ignore[no-untyped-def]
        headers = {"Idempotency-Key": key or secrets.token_hex(8)}
        return self.client.post(path, json=body, headers=headers)

    # -- tus

    def create_upload(self, size: int, filetype: str = "image/jpeg") -> str:
        meta = "filetype " + base64.b64encode(filetype.encode()).decode()
        reply = self.client.post(
            "/device/v1/uploads",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(size),
                "Upload-Metadata": meta,
                "Idempotency-Key": secrets.token_hex(8),
            },
        )
        assert reply.status_code == 201, reply.get_json()
        return str(reply.headers["Location"])

    def patch(self, location: str, offset: int, chunk: bytes, digest: bytes | None = None):  # type: ignore[no-untyped-def]
        digest = digest if digest is not None else hashlib.sha256(chunk).digest()
        return self.client.patch(
            location,
            data=chunk,
            headers={
                "Tus-Resumable": "1.0.0",
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
                "Upload-Checksum": "sha256 " + base64.b64encode(digest).decode(),
            },
        )

    def head(self, location: str):  # type: ignore[no-untyped-def]
        return self.client.head(location, headers={"Tus-Resumable": "1.0.0"})

    def upload(self, data: bytes, filetype: str = "image/jpeg", chunk: int = 4096) -> str:
        """The whole file in checksummed chunks; the stored attachment's sha256."""
        location = self.create_upload(len(data), filetype)
        reply = None
        for at in range(0, len(data), chunk):
            reply = self.patch(location, at, data[at : at + chunk])
            assert reply.status_code == 204, reply.get_json()
        assert reply is not None
        return str(reply.headers["CityGrid-Attachment"])


class Field:
    def __init__(self, install: Install, out: Path):
        self.install = install
        self.desk = Desk(install)
        self.device = Device(install, "dv-one", out / "one")
        self.other = Device(install, "dv-two", out / "two", "street-002")
        with psycopg.connect(install.settings.database_url) as conn:
            # A point well inside a unit grid of street 001, in WGS84 (PostGIS, independently).
            self.grid, self.x, self.y, self.lon, self.lat = conn.execute(
                """SELECT code, ST_X(p), ST_Y(p), ST_X(ST_Transform(p, 4326)),
                          ST_Y(ST_Transform(p, 4326))
                   FROM (SELECT code, ST_PointOnSurface(geom) AS p FROM unit_grid
                         WHERE code LIKE '110108001%%' ORDER BY code LIMIT 1) g"""
            ).fetchone()

    def report_body(self, description: str, **extra: Any) -> tuple[dict[str, Any], str]:
        salt = secrets.token_hex(16)
        params = {
            "source": "inspector",
            "kind": "event",
            "major": "01",
            "minor": "02",
            "description": description,
            "place": {"gps": fix_mod.digest(self.lon, self.lat, salt)},
            "client_time": dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).isoformat(),
            **extra,
        }
        body = self.device.envelope("case.report", "cases", params)
        body["fix"] = {"lon": self.lon, "lat": self.lat, "salt": salt}
        return body, salt

    def audited(self, reply: Any) -> tuple[str, str, int]:
        with psycopg.connect(self.install.settings.database_url) as conn:
            for _ in range(50):
                row = conn.execute(
                    "SELECT action, outcome, status FROM audit_entry WHERE request_id = %s",
                    (reply.headers["X-Request-Id"],),
                ).fetchone()
                if row is not None:
                    return tuple(row)  # type: ignore[return-value]
                time.sleep(0.05)
        raise AssertionError("no audit entry")


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    settings = demo_database("citygrid_device", tmp_path_factory.mktemp("device-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("device-certs"), rate_limit_api="*=100000/hour"
    )
    yield Field(install, tmp_path_factory.mktemp("device-devices"))
    install.close()
    db.drop_database(settings)


def test_device_certificate_and_bound_token_on_every_call(field: Field) -> None:
    device = field.device
    assert device.client.get("/device/v1/tasks").status_code == 200
    # The same inspector's person certificate: not a device.
    person = field.install.client(device.name)
    person_token = person.post("/auth/token").get_json()["access_token"]
    refused = person.get("/device/v1/tasks", headers={"Authorization": f"Bearer {person_token}"})
    assert refused.status_code == 403 and refused.get_json()["error"] == "forbidden"
    # The device certificate without a token, and with a token bound to another certificate.
    bare = device.bare().get("/device/v1/tasks")
    assert bare.status_code == 401 and bare.get_json()["error"] == "token_required"
    assert field.audited(bare)[1:] == ("refused", 401)
    stolen = device.bare().get(
        "/device/v1/tasks", headers={"Authorization": f"Bearer {person_token}"}
    )
    assert stolen.status_code == 401 and stolen.get_json()["error"] == "unauthenticated"
    # An operator is refused by the policy first.
    assert field.desk.client("operator").get("/device/v1/tasks").status_code == 403


def test_report_by_gps_fix_with_photo_and_idempotent_retry(field: Field) -> None:
    device = field.device
    photo = phone_photo()
    sha = device.upload(photo, chunk=700)
    body, _ = field.report_body("井盖缺失（设备上报）", attachments=[sha])
    reply = device.post("/device/v1/reports", body, key="report-1")
    assert reply.status_code == 201, reply.get_json()
    shown = reply.get_json()
    number = shown["number"]
    assert shown["state"] == "reported" and shown["attachments"] == [sha]
    assert shown["grid"] == field.grid and set(shown["pixel"]) == {"level", "x", "y", "col", "row"}
    assert dt.datetime.fromisoformat(shown["server_time"]).tzinfo is not None
    text = reply.get_data(as_text=True)
    for value in (field.lon, field.lat, field.x, field.y):
        assert f"{value:.4f}"[:-1] not in text  # no coordinate in any form
    # Converted inside by PostGIS: the case lies where the fix is, in the install's CRS.
    with psycopg.connect(field.install.settings.database_url) as conn:
        x, y, grid, client_time, server_time, created = conn.execute(
            """SELECT ST_X(c.geom), ST_Y(c.geom), c.grid_code, d.client_time, d.server_time,
                      c.created_at
               FROM city_case c JOIN device_report d ON d.case_id = c.id WHERE c.number = %s""",
            (number,),
        ).fetchone()
    assert abs(x - field.x) < 0.05 and abs(y - field.y) < 0.05 and grid == field.grid
    assert server_time == created and abs(client_time - server_time) < dt.timedelta(minutes=1)
    # The stored photo lost its GPS: the attachment served is the cleaned one.
    stored = field.desk.client("operator").get(f"/cases/{number}/attachments/{sha}")
    assert stored.status_code == 200 and hashlib.sha256(stored.data).hexdigest() == sha
    assert all(marker != 0xE1 for marker, _ in jpeg_segments(stored.data))
    # The signed evidence every case reader may fetch holds the fix's digest, no coordinate.
    bundle = field.desk.client("operator").get(f"/cases/{number}/bundle").get_data(as_text=True)
    assert f"{field.lon:.5f}" not in bundle and f"{field.lat:.5f}" not in bundle
    # A retry after a lost answer: the first answer again, no second case.
    again = device.post("/device/v1/reports", body, key="report-1")
    assert again.status_code == 201 and again.get_json() == shown
    assert again.headers["Idempotent-Replayed"] == "true"
    with psycopg.connect(field.install.settings.database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM city_case WHERE description = '井盖缺失（设备上报）'"
        ).fetchone()[0]
    assert count == 1
    # The same key with another body: 422, audited, nothing applied.
    other, _ = field.report_body("另一个问题")
    reused = device.post("/device/v1/reports", other, key="report-1")
    assert reused.status_code == 422 and reused.get_json()["error"] == "idempotency_key_reused"
    assert field.audited(reused)[1:] == ("refused", 422)
    # No key at all: 400.
    assert device.client.post("/device/v1/reports", json=other).status_code == 400
    # Once the key has expired, it is a new request.
    with psycopg.connect(field.install.settings.database_url) as conn:
        conn.execute(
            "UPDATE device_idempotency SET expires_at = now() - interval '1 second'"
            " WHERE key = 'report-1'"
        )
    fresh = device.post("/device/v1/reports", other, key="report-1")
    assert fresh.status_code == 201 and fresh.get_json()["number"] != number
    # Expired keys of anyone are purged as new keys are claimed, a bounded batch at a time.
    with psycopg.connect(field.install.settings.database_url) as conn:
        conn.execute("UPDATE device_idempotency SET expires_at = now() - interval '1 second'")
        stale = conn.execute("SELECT count(*) FROM device_idempotency").fetchone()[0]
    assert stale >= 1
    third, _ = field.report_body("第三个问题")
    assert device.post("/device/v1/reports", third, key="report-3").status_code == 201
    with psycopg.connect(field.install.settings.database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM device_idempotency WHERE expires_at <= now()"
        ).fetchone()[0]
    assert left == 0


def test_a_component_report_from_the_device_client(field: Field) -> None:
    """`citygrid device report --kind component --component CODE`: the client signed the code
    as a place, which the server never read for a component case (400 every time)."""
    from mapserver.device_client import plan

    with psycopg.connect(field.install.settings.database_url) as conn:
        code, major, minor = conn.execute(
            "SELECT code, major, minor FROM component WHERE grid_code LIKE '110108001%%'"
            " ORDER BY code LIMIT 1"
        ).fetchone()
    when = dt.datetime.now(dt.UTC)
    params = plan.report_params("component", major, minor, "井盖缺失", {"component": code}, when)
    reply = field.device.post(
        "/device/v1/reports", field.device.envelope("case.report", "cases", params)
    )
    assert reply.status_code == 201, reply.get_json()
    number = reply.get_json()["number"]
    with psycopg.connect(field.install.settings.database_url) as conn:
        assert conn.execute(
            "SELECT component_code FROM city_case WHERE number = %s", (number,)
        ).fetchone() == (code,)
    other = "02" if major != "02" else "03"  # a class the component is not of
    wrong = plan.report_params("component", other, minor, "x", {"component": code}, when)
    refused = field.device.post(
        "/device/v1/reports", field.device.envelope("case.report", "cases", wrong)
    )
    assert refused.status_code == 400 and "is of class" in refused.get_json()["message"]
    with pytest.raises(ValueError):
        plan.report_params("component", major, minor, "x", {"grid": field.grid}, when)


def test_report_refusals(field: Field) -> None:
    device = field.device
    body, salt = field.report_body("位置不符")
    body["fix"] = {"lon": field.lon + 0.001, "lat": field.lat, "salt": salt}
    reply = device.post("/device/v1/reports", body)
    assert reply.status_code == 400 and "digest" in reply.get_json()["message"]
    # A coordinate in clear in the signed place is refused.
    params = {
        "source": "inspector",
        "kind": "event",
        "major": "01",
        "minor": "02",
        "description": "x",
        "place": {"gps": [field.lon, field.lat]},
        "client_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    reply = device.post("/device/v1/reports", device.envelope("case.report", "cases", params))
    assert reply.status_code == 400
    # Without the device's clock.
    del params["client_time"]
    params["place"] = {"grid": field.grid}
    reply = device.post("/device/v1/reports", device.envelope("case.report", "cases", params))
    assert reply.status_code == 400 and "client_time" in reply.get_json()["message"]
    # A photo not uploaded (or not finished) cannot be attached.
    params["client_time"] = dt.datetime.now(dt.UTC).isoformat()
    params["attachments"] = ["0" * 64]
    reply = device.post("/device/v1/reports", device.envelope("case.report", "cases", params))
    assert reply.status_code == 400 and "upload" in reply.get_json()["message"]
    # GPS on /cases/report (browser) is not taken.
    params.pop("attachments")
    params["place"] = {"gps": [field.lon, field.lat]}
    envelope = field.install.envelope("cs-inspector", "case.report", "cases", params)
    assert field.desk.client("inspector").post("/cases/report", json=envelope).status_code == 400


def test_a_fix_beyond_floats_and_keys_beside_the_envelope_are_refused(field: Field) -> None:
    """A fix whose longitude is a JSON integer too large for a float was a 500 (OverflowError
    in math.isfinite); keys the server never reads (fix.alt, a top-level `junk`) were taken
    silently, 201. Each is a 400 naming what is wrong, and nothing is kept."""
    device = field.device
    for lon in (10**400, -(10**400), 181, True, "116.3"):
        body, salt = field.report_body("经度过大")
        body["fix"] = {"lon": lon, "lat": 39.98814, "salt": salt}
        reply = device.post("/device/v1/reports", body)
        assert reply.status_code == 400, (lon, reply.get_json())
        assert reply.get_json()["message"].startswith("fix.lon and fix.lat must be numbers")
    body, _ = field.report_body("带海拔")
    body["fix"]["alt"] = 52.0
    reply = device.post("/device/v1/reports", body)
    assert reply.status_code == 400 and "'alt'" in reply.get_json()["message"], reply.get_json()
    body, _ = field.report_body("多余字段")
    body["junk"] = {"x": 1}
    reply = device.post("/device/v1/reports", body)
    assert reply.status_code == 400 and "'junk'" in reply.get_json()["message"], reply.get_json()
    number = field.desk.record(place={"grid": field.grid}, description="待核实").get_json()[
        "number"
    ]
    params = {"from": "reported", "note": "属实"}
    body = device.envelope("case.verify", f"case {number}", params)
    body["fix"] = {"lon": field.lon, "lat": field.lat, "salt": "00" * 16}
    reply = device.post(f"/device/v1/cases/{number}/verify", body)
    assert reply.status_code == 400 and "'fix'" in reply.get_json()["message"], reply.get_json()
    with psycopg.connect(field.install.settings.database_url) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM city_case WHERE description IN ('经度过大', '带海拔', '多余字段')"
            " OR (number = %s AND state <> 'reported')",
            (number,),
        ).fetchone()[0]
    assert kept == 0


def test_tasks_etag_gzip_and_field_results(field: Field) -> None:
    device, desk = field.device, field.desk
    first = device.client.get("/device/v1/tasks")
    tag = first.headers["ETag"]
    assert tag.startswith('W/"')
    unchanged = device.client.get("/device/v1/tasks", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.data == b""
    number = desk.record(place={"grid": field.grid}, description="暴露垃圾待核实").get_json()[
        "number"
    ]
    zipped = device.client.get("/device/v1/tasks", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"] != tag
    import gzip

    listed = json.loads(gzip.decompress(zipped.data))["tasks"]
    mine = next(t for t in listed if t["number"] == number)
    assert mine["task"] == "verify" and mine["transitions"] == ["verify"]
    assert mine["map"].startswith(f"/device/v1/map?case={number}")
    assert "x" not in mine and "pixel" not in mine
    # Not in the other street's device's tasks.
    other = field.other.client.get("/device/v1/tasks").get_json()["tasks"]
    assert number not in {t["number"] for t in other}
    # Verify from the field, signed by the device's account, idempotent.
    body = device.envelope(
        "case.verify",
        f"case {number}",
        {"from": "reported", "note": "属实", "client_time": dt.datetime.now(dt.UTC).isoformat()},
    )
    done = device.post(f"/device/v1/cases/{number}/verify", body, key=f"v-{number}")
    assert done.status_code == 200 and done.get_json()["state"] == "accepted", done.get_json()
    assert device.post(f"/device/v1/cases/{number}/verify", body, key=f"v-{number}").get_json() == (
        done.get_json()
    )
    # Through the centres to checking, then a check result with a photo from the field.
    for who, name, params in [
        ("leader", "file", {}),
        ("dispatcher", "dispatch", {"bureau": desk.bureau}),
        ("bureau", "receive", {}),
        ("bureau", "handle", {"result": "已清理"}),
        ("dispatcher", "forward", {}),
        ("operator", "request_check", {}),
    ]:
        assert desk.act(who, number, name, **params).status_code == 200, name
    tasks = device.client.get("/device/v1/tasks").get_json()["tasks"]
    assert next(t for t in tasks if t["number"] == number)["task"] == "check"
    sha = device.upload(_noise_photo(7, (64, 48)))
    body = device.envelope(
        "case.check_pass",
        f"case {number}",
        {"from": "checking", "note": "已处理", "attachments": [sha]},
    )
    closed = device.post(f"/device/v1/cases/{number}/check_pass", body)
    assert closed.status_code == 200 and closed.get_json()["state"] == "closed"
    assert closed.get_json()["attachments"] == [sha]
    # Transitions that are not the field's: 404.
    body = device.envelope("case.file", f"case {number}", {"from": "closed"})
    assert device.post(f"/device/v1/cases/{number}/file", body).status_code == 404
    # The other street's device does not see the case.
    body = field.other.envelope("case.verify", f"case {number}", {"from": "closed", "note": "x"})
    assert field.other.post(f"/device/v1/cases/{number}/verify", body).status_code == 404


def test_a_tasks_photos_download_on_demand_and_resume(field: Field) -> None:
    """A task lists its case's photos and recordings (the reporter's, to find the problem
    by), each fetched when the inspector asks, checked against its SHA-256: 304 for the hash
    the device holds, the rest of a cut download by Range; not for another street's device."""
    device, desk = field.device, field.desk
    uploaded = desk.client("operator").post(
        "/cases/attachments", data=phone_photo(), content_type="image/jpeg"
    )
    assert uploaded.status_code == 201, uploaded.get_json()
    sha = uploaded.get_json()["sha256"]
    number = desk.record(
        place={"grid": field.grid}, description="井盖缺失，附照片", attachments=[sha]
    ).get_json()["number"]
    listed = device.client.get("/device/v1/tasks").get_json()["tasks"]
    mine = next(t for t in listed if t["number"] == number)
    assert [(a["sha256"], a["kind"], a["media_type"]) for a in mine["attachments"]] == [
        (sha, "photo", "image/jpeg")
    ]
    url = mine["attachments"][0]["url"]
    assert url == f"/device/v1/cases/{number}/attachments/{sha}"
    whole = device.client.get(url)
    assert whole.status_code == 200 and hashlib.sha256(whole.data).hexdigest() == sha
    assert whole.headers["ETag"] == f'"{sha}"' and "immutable" in whole.headers["Cache-Control"]
    assert 0xE1 not in {m for m, _ in jpeg_segments(whole.data)}  # cleaned: no EXIF, no place
    held = device.client.get(url, headers={"If-None-Match": f'"{sha}"'})
    assert held.status_code == 304 and held.data == b""
    cut = len(whole.data) // 3
    rest = device.client.get(url, headers={"Range": f"bytes={cut}-"})
    assert rest.status_code == 206 and whole.data[:cut] + rest.data == whole.data
    assert rest.headers["Content-Range"] == f"bytes {cut}-{len(whole.data) - 1}/{len(whole.data)}"
    # RFC 9110: a Range of another unit, a malformed one or several ranges is ignored (the
    # whole body, 200: they were 416); 416 only for a well-formed range beyond the end.
    size = len(whole.data)
    for ignored in ("bytes=0-1,5-9", "items=0-5", "bytes=abc", "bytes=9-5", "bytes=0-1" + "0" * 40):
        got = device.client.get(url, headers={"Range": ignored})
        assert (got.status_code, got.data) == (200, whole.data), ignored
    for asked, start, end in (
        ("BYTES=0-9", 0, 9),
        ("bytes=-5", size - 5, size - 1),
        (f"bytes=-{size + 100}", 0, size - 1),  # a suffix longer than the body: all of it
        (f"bytes={size - 3}-{size + 1000}", size - 3, size - 1),
    ):
        got = device.client.get(url, headers={"Range": asked})
        assert got.status_code == 206 and got.data == whole.data[start : end + 1], asked
        assert got.headers["Content-Range"] == f"bytes {start}-{end}/{size}", asked
    for beyond in (f"bytes={size}-", f"bytes={size}-{size + 5}", "bytes=-0"):
        got = device.client.get(url, headers={"Range": beyond})
        assert got.status_code == 416 and got.headers["Content-Range"] == f"bytes */{size}", beyond
    for other, path in ((field.other, url), (device, url.replace(sha, "0" * 64))):
        refused = other.client.get(path)
        assert refused.status_code == 404 and refused.get_json()["error"] == "not_found"
    assert field.audited(whole)[:2] == ("device.tasks", "ok")


def test_tus_protocol_checks_and_refusals(field: Field) -> None:
    device = field.device
    options = device.client.options("/device/v1/uploads")
    assert options.status_code == 204 and options.headers["Tus-Version"] == "1.0.0"
    assert set(options.headers["Tus-Extension"].split(",")) == {
        "creation",
        "checksum",
        "expiration",
        "termination",
    }
    data = phone_photo()
    location = device.create_upload(len(data))
    head = device.head(location)
    assert head.headers["Upload-Offset"] == "0" and head.headers["Upload-Length"] == str(len(data))
    assert "Upload-Expires" in head.headers
    # A chunk whose checksum does not match: 460, nothing kept.
    bad = device.patch(location, 0, data[:500], hashlib.sha256(b"other").digest())
    assert bad.status_code == 460 and bad.get_json()["error"] == "checksum_mismatch"
    assert field.audited(bad)[1:] == ("refused", 460)
    assert device.head(location).headers["Upload-Offset"] == "0"
    assert device.patch(location, 0, data[:500]).status_code == 204
    # At a wrong offset: 409 naming where the upload stands.
    wrong = device.patch(location, 100, data[100:600])
    assert wrong.status_code == 409 and wrong.get_json()["offset"] == 500
    # Without the protocol version, checksum or the offset content type.
    reply = device.client.patch(location, data=b"x", headers={"Upload-Offset": "500"})
    assert reply.status_code == 412
    no_sum = device.client.patch(
        location,
        data=data[500:600],
        headers={
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "500",
        },
    )
    assert no_sum.status_code == 400
    # Another device's account cannot touch it.
    assert field.other.head(location).status_code == 404
    # Termination.
    gone = device.client.delete(location, headers={"Tus-Resumable": "1.0.0"})
    assert gone.status_code == 204 and device.head(location).status_code == 404
    # Too large, and a type never taken.
    meta = "filetype " + base64.b64encode(b"image/jpeg").decode()
    huge = device.client.post(
        "/device/v1/uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(9 << 20),
            "Upload-Metadata": meta,
            "Idempotency-Key": "huge",
        },
    )
    assert huge.status_code == 413
    exe = device.client.post(
        "/device/v1/uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "10",
            "Upload-Metadata": "filetype " + base64.b64encode(b"application/x-msdownload").decode(),
            "Idempotency-Key": "exe",
        },
    )
    assert exe.status_code == 415
    # The faulty header is named: a creation has no Content-Type of its file.
    assert exe.get_json()["message"].startswith("Upload-Metadata filetype must be one of")
    # Declared a JPEG, the bytes are not: refused on the last byte, and the upload goes.
    junk = b"MZ" + bytes(2000)
    location = device.create_upload(len(junk))
    assert device.patch(location, 0, junk[:1000]).status_code == 204
    last = device.patch(location, 1000, junk[1000:])
    assert last.status_code in (400, 415), last.get_json()
    assert device.head(location).status_code == 404


def test_unfinished_uploads_expire_and_are_removed(field: Field) -> None:
    device = field.device
    data = phone_photo()
    location = device.create_upload(len(data))
    assert device.patch(location, 0, data[:1000]).status_code == 204
    upload_id = location.rsplit("/", 1)[1]
    with psycopg.connect(field.install.settings.database_url) as conn:
        conn.execute(
            "UPDATE device_upload SET expires_at = now() - interval '1 second' WHERE id = %s",
            (upload_id,),
        )
    assert device.head(location).status_code == 410  # HEAD: no body
    expired = device.patch(location, 1000, data[1000:2000])
    assert expired.status_code == 410 and expired.get_json()["error"] == "upload_expired"
    device.create_upload(10)  # any creation removes what has expired
    with psycopg.connect(field.install.settings.database_url) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM device_upload WHERE id = %s),"
            " (SELECT count(*) FROM device_upload_chunk WHERE upload_id = %s)",
            (upload_id, upload_id),
        ).fetchone()
    assert left == (0, 0)
    assert device.head(location).status_code == 404


def test_creation_is_idempotent(field: Field) -> None:
    device = field.device
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": "100",
        "Upload-Metadata": "filetype " + base64.b64encode(b"image/png").decode(),
        "Idempotency-Key": "create-once",
    }
    first = device.client.post("/device/v1/uploads", headers=headers)
    again = device.client.post("/device/v1/uploads", headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.headers["Location"] == again.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    # A creation has no body: its headers are the request. The same key with another length
    # or type was replayed as the first upload (of the first length); it is 422, as for a
    # report with another body.
    other_type = "filetype " + base64.b64encode(b"image/jpeg").decode()
    for changed in ({"Upload-Length": "99"}, {"Upload-Metadata": other_type}):
        reused = device.client.post("/device/v1/uploads", headers={**headers, **changed})
        assert reused.status_code == 422, (changed, reused.get_json())
        assert reused.get_json()["error"] == "idempotency_key_reused"
    # The replay tells the upload as it stands now, not as it was created.
    assert device.patch(first.headers["Location"], 0, bytes(40)).status_code == 204
    later = device.client.post("/device/v1/uploads", headers=headers)
    assert later.status_code == 201 and later.headers["Upload-Offset"] == "40"
    assert later.headers["Location"] == first.headers["Location"]


def test_a_creation_replayed_after_its_upload_is_gone_is_410(field: Field) -> None:
    """A creation asked again once its upload had expired was answered 201 with the first
    answer (offset 0, expiring a day later) for an upload that was purged: HEAD then 404. It
    is 410 `upload_expired`, whether the upload is expired, purged or ended, so the device
    creates a new one under a new key; that one is made."""
    device = field.device
    headers = {
        "Tus-Resumable": "1.0.0",
        "Upload-Length": "100",
        "Upload-Metadata": "filetype " + base64.b64encode(b"image/png").decode(),
    }
    for end in ("expired", "purged", "ended"):
        key = f"gone-{end}"
        first = device.client.post(
            "/device/v1/uploads", headers={**headers, "Idempotency-Key": key}
        )
        assert first.status_code == 201, first.get_json()
        location = first.headers["Location"]
        upload_id = location.rsplit("/", 1)[1]
        with psycopg.connect(field.install.settings.database_url) as conn:
            if end == "ended":
                conn.execute("DELETE FROM device_upload WHERE id = %s", (upload_id,))
            else:
                conn.execute(
                    "UPDATE device_upload SET expires_at = now() - interval '1 second'"
                    " WHERE id = %s",
                    (upload_id,),
                )
        if end == "purged":
            device.create_upload(10)  # any creation removes what has expired
            assert device.head(location).status_code == 404
        elif end == "expired":
            assert device.head(location).status_code == 410
        again = device.client.post(
            "/device/v1/uploads", headers={**headers, "Idempotency-Key": key}
        )
        assert again.status_code == 410, (end, again.status_code, dict(again.headers))
        assert again.get_json()["error"] == "upload_expired"
        assert "Location" not in again.headers and "Upload-Offset" not in again.headers
        fresh = device.client.post(
            "/device/v1/uploads", headers={**headers, "Idempotency-Key": f"{key}-new"}
        )
        assert fresh.status_code == 201 and "Idempotent-Replayed" not in fresh.headers
        assert fresh.headers["Location"] != location


# -- over real TLS: `citygrid serve`, the CA signer, the device's own certificate files


class TlsField:
    def __init__(self, install: Install, out: Path):
        self.install = install
        self.device = Device(install, "dv-tls", out)
        self.ca = install.store.cert_path
        self.token = ""

    def env(self) -> dict[str, str]:
        s = self.install.settings
        return {
            "CITYGRID_DATABASE_URL": s.database_url,
            "CITYGRID_DATA_DIR": str(s.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
        }

    def call(self, port: int, method: str, path: str, **kw: Any):  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return request(port, path, self.ca, self.device.crt, self.device.key, method, headers, **kw)


@pytest.fixture(scope="module")
def tls_field(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsField, Server]]:
    settings = demo_database("citygrid_device_tls", tmp_path_factory.mktemp("device-tls-var"))
    install = Install(settings, tmp_path_factory.mktemp("device-tls-certs"))
    with db.transaction(install.settings) as conn:
        certs.publish_crl(conn, install.store, SECRET)
    found = TlsField(install, tmp_path_factory.mktemp("device-tls-devices"))
    install.close()  # the in-process app is not needed any more: the server serves
    server = Server(found.env())
    try:
        server.wait_ready()
        yield found, server
    finally:
        server.stop()
        db.drop_database(settings)


def _cut_patch(port: int, field: TlsField, location: str, at: int, chunk: bytes) -> None:
    """A PATCH whose connection drops after half of its body: what a GPRS link does."""
    ctx = ssl.create_default_context(cafile=str(field.ca))
    ctx.load_cert_chain(str(field.device.crt), str(field.device.key))
    digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {field.token}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {at}\r\nUpload-Checksum: sha256 {digest}\r\n"
        f"Content-Length: {len(chunk)}\r\n\r\n"
    ).encode()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(head + chunk[: len(chunk) // 2])
        time.sleep(0.3)
    time.sleep(0.5)  # the server notices the drop


def test_device_over_tls_resumes_at_70_percent_and_revocation_stops_it(
    tls_field: tuple[TlsField, Server],
) -> None:
    field, server = tls_field
    port = server.port
    token = request(
        port, "/auth/token", field.ca, field.device.crt, field.device.key, "POST"
    ).json()
    field.token = token["access_token"]
    tasks = field.call(port, "GET", "/device/v1/tasks", headers={"Accept-Encoding": "gzip"})
    assert tasks.status == 200 and tasks.headers["Content-Encoding"] == "gzip"
    assert field.call(port, "GET", "/device/v1/tasks", headers={"Authorization": ""}).status == 401

    photo = _noise_photo()
    step = len(photo) // 10
    created = field.call(
        port,
        "POST",
        "/device/v1/uploads",
        headers={
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(photo)),
            "Upload-Metadata": "filetype " + base64.b64encode(b"image/jpeg").decode(),
            "Idempotency-Key": "tls-upload",
        },
    )
    assert created.status == 201, created.body
    location = created.headers["Location"]
    for at in range(0, 7 * step, step):
        sent = _patch(port, field, location, at, photo[at : at + step])
        assert sent.status == 204, sent.body
    _cut_patch(port, field, location, 7 * step, photo[7 * step : 8 * step])
    head = field.call(port, "HEAD", location, headers={"Tus-Resumable": "1.0.0"})
    assert head.status == 200 and int(head.headers["Upload-Offset"]) == 7 * step  # 70 %
    at = 7 * step
    while at < len(photo):
        chunk = photo[at : at + step]
        reply = _patch(port, field, location, at, chunk)
        assert reply.status == 204, reply.body
        at += len(chunk)
    sha = reply.headers["CityGrid-Attachment"]
    with psycopg.connect(field.install.settings.database_url) as conn:
        stored = conn.execute(
            "SELECT data FROM case_attachment WHERE sha256 = %s AND uploader = 'dv-tls'", (sha,)
        ).fetchone()
    assert stored is not None and hashlib.sha256(bytes(stored[0])).hexdigest() == sha

    # Revoke the device certificate: the next request is refused, token included.
    with db.transaction(field.install.settings) as conn:
        certs.revoke(conn, field.device.issued.serial, "key_compromise")
        certs.publish_crl(conn, field.install.store, SECRET)
    with pytest.raises(REFUSED):
        field.call(port, "GET", "/device/v1/tasks")


def _patch(port: int, field: TlsField, location: str, at: int, chunk: bytes):  # type: ignore[no-untyped-def]
    return field.call(
        port,
        "PATCH",
        location,
        headers={
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(at),
            "Upload-Checksum": "sha256 " + _b64sha(chunk),
        },
        body=chunk,
    )


def _b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _noise_photo(seed: int = 13, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of noise, different for every seed (by default about 200 KB)."""
    import io
    import random

    from PIL import Image

    rng = random.Random(seed)
    im = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=95)
    return out.getvalue()


def test_tus_pure_parsing() -> None:
    assert tus.metadata({"Upload-Metadata": "filetype aW1hZ2UvanBlZw==,empty"}) == {
        "filetype": "image/jpeg",
        "empty": "",
    }
    with pytest.raises(InvalidInput):
        tus.metadata({"Upload-Metadata": "a !!!"})
    with pytest.raises(tus.ChecksumMismatch):
        tus.verify("sha256", hashlib.sha256(b"a").digest(), b"b")
    assert fix_mod.digest(116.3, 39.9, "00" * 16) != fix_mod.digest(116.3000001, 39.9, "00" * 16)
    # A request without defining headers keeps the fingerprint it always had (keys kept before
    # still replay); a creation's Upload-Length is part of its own.
    old = hashlib.sha256()
    for part in (b"POST", b"/device/v1/reports", b"{}"):
        old.update(len(part).to_bytes(8, "big") + part)
    assert idempotency.fingerprint("POST", "/device/v1/reports", b"{}") == old.hexdigest()
    creation = ("POST", "/device/v1/uploads", b"")
    assert idempotency.fingerprint(*creation, [("Upload-Length", "100")]) != (
        idempotency.fingerprint(*creation, [("Upload-Length", "99")])
    )


def test_a_photo_already_on_a_case_goes_on_the_case_it_duplicates(field: Field) -> None:
    """An inspector's verify of a complaint with the photo of their own report of the same
    thing was 409 "already attached to a case", and the device's queued item failed for
    good. Both cases now show the one photo."""
    device, desk = field.device, field.desk
    photo = _noise_photo(21, (64, 48))
    sha = device.upload(photo)
    body, _ = field.report_body("路灯不亮（设备上报）", attachments=[sha])
    reported = device.post("/device/v1/reports", body)
    assert reported.status_code == 201, reported.get_json()
    number = desk.record(place={"grid": field.grid}, description="市民来电：路灯不亮").get_json()[
        "number"
    ]
    assert device.upload(photo) == sha  # the item's photo goes again: the same upload
    body = device.envelope(
        "case.verify",
        f"case {number}",
        {
            "from": "reported",
            "note": "属实，与上报案件同一处",
            "attachments": [sha],
            "client_time": dt.datetime.now(dt.UTC).isoformat(),
        },
    )
    verified = device.post(f"/device/v1/cases/{number}/verify", body)
    assert verified.status_code == 200, verified.get_json()
    shown = verified.get_json()
    assert (shown["state"], shown["attachments"]) == ("accepted", [sha])
    for case in (reported.get_json()["number"], number):
        served = desk.client("operator").get(f"/cases/{case}/attachments/{sha}")
        assert served.status_code == 200 and hashlib.sha256(served.data).hexdigest() == sha


def test_a_report_outside_ones_streets_is_outside_streets(field: Field) -> None:
    """A device's report of a place outside the inspector's streets was 400 `invalid`; the
    case routes say `outside_streets` (mapserver.cases.own_streets), and so does the device."""
    device = field.device
    with psycopg.connect(field.install.settings.database_url) as conn:
        grid, lon, lat = conn.execute(
            """SELECT code, ST_X(ST_Transform(p, 4326)), ST_Y(ST_Transform(p, 4326))
               FROM (SELECT code, ST_PointOnSurface(geom) AS p FROM unit_grid
                     WHERE code LIKE '110108002%%' ORDER BY code LIMIT 1) g"""
        ).fetchone()
    salt = secrets.token_hex(16)
    params = {
        "source": "inspector",
        "kind": "event",
        "major": "01",
        "minor": "02",
        "description": "别的街道",
        "place": {"gps": fix_mod.digest(lon, lat, salt)},
        "client_time": dt.datetime.now(dt.UTC).isoformat(),
    }
    body = device.envelope("case.report", "cases", params)
    body["fix"] = {"lon": lon, "lat": lat, "salt": salt}
    by_gps = device.post("/device/v1/reports", body)
    params["place"] = {"grid": grid}
    by_grid = device.post("/device/v1/reports", device.envelope("case.report", "cases", params))
    # A fix in no unit grid at all (far from the district) is outside one's streets too.
    far_lon, far_lat = lon + 0.5, lat + 0.5
    params["place"] = {"gps": fix_mod.digest(far_lon, far_lat, salt)}
    body = device.envelope("case.report", "cases", params)
    body["fix"] = {"lon": far_lon, "lat": far_lat, "salt": salt}
    far = device.post("/device/v1/reports", body)
    for reply in (by_gps, by_grid, far):
        assert reply.status_code == 400, reply.get_json()
        assert reply.get_json()["error"] == "outside_streets", reply.get_json()


def _enrolled(field: TlsField, server: Server, name: str, root: Path) -> config.Paths:
    """The reference client's directory for a new inspector of street 001: initialised with
    a device certificate and enrolled over TLS, its backoff short for a test."""
    install = field.install
    install.account(name, ["inspector"], "street-001")
    issued = root / "issued"
    with db.transaction(install.settings) as conn:
        certs.issue(conn, install.store, SECRET, name, pki.Kind.DEVICE, issued)
        code = enrol.issue_code(conn, name)
        certs.publish_crl(conn, install.store, SECRET)
    paths = config.Paths(root / "device")
    runner = CliRunner()
    made = runner.invoke(
        main,
        ["device", "init", "--dir", str(paths.root),
         "--server", f"https://127.0.0.1:{server.port}",
         "--cert", str(issued / f"{name}.crt"), "--key", str(issued / f"{name}.key"),
         "--ca", str(field.ca)],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    done = runner.invoke(main, ["device", "enrol", "--dir", str(paths.root), "--code", code])
    assert done.exit_code == 0, done.output
    quick = dataclasses.replace(config.load(paths), backoff_base_s=0.01, backoff_cap_s=0.05)
    config.save(paths, quick)
    return paths


def test_the_client_creates_anew_when_its_creation_is_gone(
    tls_field: tuple[TlsField, Server], tmp_path: Path
) -> None:
    """The client's creation reached the server, its answer was lost, and the upload expired
    before the device came back: asked again under its key, the creation is 410 (it was a
    201 for an upload that was no more). The client creates the upload anew under a new key
    and the report goes, with its photo."""
    field, server = tls_field
    paths = _enrolled(field, server, "dv-anew", tmp_path)
    with psycopg.connect(field.install.settings.database_url) as conn:
        grid = conn.execute(
            "SELECT code FROM unit_grid WHERE code LIKE '110108001%%' ORDER BY code LIMIT 1"
        ).fetchone()[0]
    queue = Queue(paths.queue)
    item = compose.report(
        queue, config.load(paths), kind="event", major="01", minor="02",
        description="照片创建已过期", place={"grid": grid}, photos=[_noise_photo(31, (96, 64))],
    )  # fmt: skip
    photo = queue.photos(item)[0]
    queue.close()
    device = (paths.ca, paths.device_crt, paths.device_key)
    token = request(server.port, "/auth/token", *device, "POST").json()["access_token"]
    lost = request(
        server.port,
        "/device/v1/uploads",
        *device,
        "POST",
        {
            "Authorization": f"Bearer {token}",
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(photo.length),
            "Upload-Metadata": "filetype " + base64.b64encode(b"image/jpeg").decode(),
            "Idempotency-Key": photo.create_key,
        },
    )
    assert lost.status == 201, lost.body
    with psycopg.connect(field.install.settings.database_url) as conn:
        conn.execute(
            "UPDATE device_upload SET expires_at = now() - interval '1 second' WHERE id = %s",
            (lost.headers["Location"].rsplit("/", 1)[1],),
        )
    done = CliRunner().invoke(main, ["device", "send", "--dir", str(paths.root), "--quiet"])
    assert done.exit_code == 0, done.output
    queue = Queue(paths.queue)
    try:
        sent, again = queue.item(item), queue.photos(item)[0]
    finally:
        queue.close()
    assert sent.state == "sent", sent.error
    assert again.create_key != photo.create_key and again.location != lost.headers["Location"]
    assert json.loads(sent.answer or "{}")["attachments"] == [again.attachment]


def test_an_answer_before_the_body_is_read_says_connection_close(
    tls_field: tuple[TlsField, Server], tmp_path: Path
) -> None:
    """A 2 MiB PATCH got its 413 with `Connection: keep-alive`, and the server closed the
    connection anyway (gunicorn drains at most 64 KiB of an unread body): the client's next
    request on it failed, "Remote end closed connection without response". An answer given
    before the body is read now says close; one that read it keeps the connection."""
    field, server = tls_field
    paths = _enrolled(field, server, "dv-close", tmp_path)
    ctx = ssl.create_default_context(cafile=str(paths.ca))
    ctx.load_cert_chain(str(paths.device_crt), str(paths.device_key))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=20)
    token = ""

    def ask(method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Any:
        conn.request(
            method, path, body=body, headers={"Authorization": f"Bearer {token}", **headers}
        )
        answer = conn.getresponse()
        answer.read()
        return answer

    try:
        conn.request("POST", "/auth/token")
        token = json.loads(conn.getresponse().read())["access_token"]
        made = ask(
            "POST",
            "/device/v1/uploads",
            {
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(3 << 20),
                "Upload-Metadata": "filetype " + base64.b64encode(b"image/jpeg").decode(),
                "Idempotency-Key": "close-1",
            },
        )
        assert made.status == 201 and made.getheader("Connection") == "keep-alive"
        location, kept = made.getheader("Location"), conn.sock
        chunk = bytes(1000)
        tus_patch = {
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "1000",
        }
        first = {**tus_patch, "Upload-Offset": "0", "Upload-Checksum": "sha256 " + _b64sha(chunk)}
        ok = ask("PATCH", location, first, chunk)
        assert ok.status == 204 and ok.getheader("Connection") == "keep-alive"
        assert conn.sock is kept  # the body was read: the connection goes on
        big = bytes(2 << 20)
        refused = ask(
            "PATCH", location, {**tus_patch, "Upload-Checksum": "sha256 " + _b64sha(big)}, big
        )
        assert refused.status == 413 and refused.getheader("Connection") == "close"
        assert conn.sock is None  # http.client closed it, as told
        # A small body refused unread (no Tus-Resumable) says close as well.
        small = ask("PATCH", location, {"Content-Type": tus_patch["Content-Type"]}, b"x" * 10)
        assert small.status == 412 and small.getheader("Connection") == "close"
        head = ask("HEAD", location, {"Tus-Resumable": "1.0.0"})  # on a new connection
        assert head.status == 200 and head.getheader("Upload-Offset") == "1000"
        assert head.getheader("Connection") == "keep-alive"
    finally:
        conn.close()


def test_upload_chunks_count_against_their_own_limit(field: Field, tmp_path: Path) -> None:
    """A photo is many tus chunks: they and the offset asks count against
    CITYGRID_RATE_LIMIT_UPLOADS, not the API's limit, which a fast link would otherwise
    reach within one photo; each limit still holds, with a 429 and Retry-After."""
    limited = Install(
        field.install.settings,
        field.install.out,
        rate_limit_api="*=4/hour",
        rate_limit_uploads="*=12/hour",
    )
    device = Device.of(limited, field.device.name, tmp_path)  # its token: the API's first
    data = phone_photo()
    chunk = len(data) // 10 + 1
    location = device.create_upload(len(data))  # the API's second
    for at in range(0, len(data), chunk):  # ten chunks, more than the API's limit
        assert device.patch(location, at, data[at : at + chunk]).status_code == 204
    assert device.head(location).status_code == 200  # the eleventh
    assert device.head(location).status_code == 200  # the twelfth: the uploads' limit
    over = device.head(location)
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    chunk_over = device.patch(location, 0, data[:chunk])
    assert chunk_over.status_code == 429
    assert chunk_over.get_json()["message"] == "more than 12 requests in 3600 s"
    # The API's limit holds for its routes, each counted on its own: four, then 429.
    tasks = [device.client.get("/device/v1/tasks").status_code for _ in range(5)]
    assert tasks == [200] * 4 + [429]
