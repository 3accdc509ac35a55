"""Component online update over mutual TLS, as a bureau's people drive it: only their own
departments' components, every change a signed action, the full history (a component as of
any moment), 409 for the second of two concurrent edits, moves by a pixel of the pictures,
new codes by the standard's rules, bulk files checked and applied all or nothing, the case
about a component linked to it, and the changed component on its 1:500 tile within seconds
of the edit, through the gateway."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image

from auth import pki, signed_action
from mapserver import db
from mapserver.components import bulk
from mapserver.errors import InvalidInput
from mapserver.importer import gdal_env
from mapserver.settings import Settings
from tiles.service import grid_from

from .app_client import SECRET, Install
from .conftest import demo_database
from .tls import Reply, Server, request

LIMIT_S = 10  # "within seconds": one metatile render (~1 s here) on a shared, loaded machine
MISSING_RGB = (0xE0, 0x20, 0x1B)  # styles/palette.toml `missing`: a 丢失 component's marker


def _missing_marker(rgb: tuple[int, int, int]) -> bool:
    """The marker's red, within what the PNG8 palette may round it to."""
    return all(abs(a - b) <= 24 for a, b in zip(rgb, MISSING_RGB, strict=True))


class Site:
    """A demo district served by gunicorn over TLS; a bureau's people and the centres."""

    def __init__(self, install: Install, server: Server):
        self.install = install
        self.server = server
        self.settings: Settings = install.settings
        with psycopg.connect(self.settings.database_url) as conn:
            rows = conn.execute(
                """SELECT o.code, o.name, count(c.code) FROM organisation o
                   JOIN component c ON c.owner_dept = o.name
                   WHERE o.kind = 'bureau' GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 2"""
            ).fetchall()
        (self.bureau, self.dept, _), (self.other, self.other_dept, _) = rows
        for name, roles, org in (
            ("cp-bureau", ["bureau_handler"], self.bureau),
            ("cp-bureau2", ["bureau_handler"], self.bureau),
            ("cp-other", ["bureau_handler"], self.other),
            ("cp-operator", ["operator"], None),
            ("cp-leader", ["shift_leader"], None),
            ("cp-dispatcher", ["dispatcher"], None),
        ):
            install.account(name, roles, org)

    def ask(
        self, who: str, method: str, path: str, body: Any = None, raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Reply:  # fmt: skip
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        out = self.install.out
        return request(
            self.server.port, path, self.install.store.cert_path, out / f"{who}.crt",
            out / f"{who}.key", method=method, headers=headers, body=data,
        )  # fmt: skip

    def envelope(
        self, who: str, action: str, resource: str, params: dict[str, Any]
    ) -> dict[str, str]:
        """Signed with `who`'s signing key and a nonce asked over TLS."""
        cert, key = self.install.signing(who)
        nonce = self.ask(who, "POST", "/auth/nonce").json()["nonce"]
        data = signed_action.payload(
            action, resource, params, nonce, pki.now(), pki.thumbprint(cert)
        )
        return {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
            "certificate": pki.pem(cert).decode(),
        }

    def signed(
        self, who: str, path: str, action: str, resource: str, params: dict[str, Any]
    ) -> Reply:
        return self.ask(who, "POST", path, self.envelope(who, action, resource, params))

    def edit(self, who: str, code: str, op: str, **params: Any) -> Reply:
        return self.signed(
            who, f"/components/{code}/{op}", f"component.{op}", f"component {code}", params
        )

    def own_component(self, n: int = 0) -> dict[str, Any]:
        listed = self.ask("cp-bureau", "GET", f"/components?page={1 + n // 50}").json()
        return listed["components"][n % 50]

    def sql(self, query: str, *args: Any) -> Any:
        with psycopg.connect(self.settings.database_url) as conn:
            return conn.execute(query, args).fetchall()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = demo_database("citygrid_components", tmp_path_factory.mktemp("cp-var"))
    install = Install(settings, tmp_path_factory.mktemp("cp-certs"))
    server = Server(
        {
            "CITYGRID_DATABASE_URL": settings.database_url,
            "CITYGRID_DATA_DIR": str(settings.data_dir),
            "CITYGRID_CA_PASSPHRASE": SECRET.decode(),
            "CITYGRID_RATE_LIMIT_TILES": "*=100000/hour",
            "CITYGRID_RATE_LIMIT_API": "*=100000/hour",
        }
    )
    try:
        server.wait_ready()
        yield Site(install, server)
    finally:
        server.stop()
        install.close()
        db.drop_database(settings)


def _no_coordinates(doc: Any) -> None:
    """No float anywhere in an answer: codes, names, versions and pixels only."""
    if isinstance(doc, float):
        raise AssertionError(f"a number that may be a coordinate: {doc}")
    if isinstance(doc, dict):
        assert not {"x", "y", "geom", "point", "lon", "lat"} & set(doc) or "col" in doc, doc
        for v in doc.values():
            _no_coordinates(v)
    if isinstance(doc, list):
        for v in doc:
            _no_coordinates(v)


def test_only_own_departments(site: Site) -> None:
    listed = site.ask("cp-bureau", "GET", "/components").json()
    assert listed["total"] > 0
    assert all(site.dept in (c["owner_dept"], c["maintainer_dept"]) for c in listed["components"])
    _no_coordinates(listed)
    theirs = site.ask("cp-other", "GET", "/components").json()["components"][0]
    assert site.ask("cp-bureau", "GET", f"/components/{theirs['code']}").status == 404
    refused = site.edit(
        "cp-bureau", theirs["code"], "edit", version=theirs["version"], set={"state": "damaged"}
    )
    assert refused.status == 404
    assert site.ask("cp-operator", "GET", "/components").status == 403  # not a bureau's role
    assert (
        site.sql("SELECT version FROM component WHERE code = %s", theirs["code"])[0][0]
        == theirs["version"]
    )


def test_edit_history_and_as_of(site: Site) -> None:
    c = site.own_component(0)
    before = dt.datetime.now(dt.UTC)
    reply = site.edit(
        "cp-bureau",
        c["code"],
        "edit",
        version=c["version"],
        set={"state": "damaged", "name": "井盖（已破损）"},
    )
    assert reply.status == 200, reply.json()
    after = reply.json()
    assert after["version"] == c["version"] + 1 and after["state"] == "damaged"
    assert reply.headers["ETag"] == f'"v{after["version"]}"'
    _no_coordinates(after)
    last, previous = after["history"][-1], after["history"][-2]
    assert last["change"] == "edit" and last["actor"] == "cp-bureau" and last["signed_action"]
    assert previous["valid_to"] == last["valid_from"] and previous["state"] == c["state"]
    then = site.ask(
        "cp-bureau",
        "GET",
        f"/components/{c['code']}?as_of={before.isoformat().replace('+', '%2B')}",
    )
    assert (
        then.status == 200
        and then.json()["state"] == c["state"]
        and then.json()["version"] == c["version"]
    )
    now = site.ask(
        "cp-bureau",
        "GET",
        f"/components/{c['code']}?as_of={dt.datetime.now(dt.UTC).isoformat().replace('+', '%2B')}",
    )
    assert now.json()["state"] == "damaged"
    assert site.ask("cp-bureau", "GET", f"/components/{c['code']}?as_of=1990-01-01").status == 404
    signed = site.sql(
        "SELECT a.action, a.account FROM signed_action a JOIN component_history h"
        " ON h.signed_action = a.id WHERE h.code = %s AND h.change = 'edit'",
        c["code"],
    )
    assert signed == [("component.edit", "cp-bureau")]
    # History rows are append-only, even for the database owner.
    with pytest.raises(psycopg.Error, match="append-only"):
        site.sql("UPDATE component_history SET state = 'intact' WHERE code = %s", c["code"])
    with pytest.raises(psycopg.Error):
        site.sql("TRUNCATE component_history")
    with pytest.raises(psycopg.Error, match="append-only"):
        site.sql("DELETE FROM component_history WHERE code = %s", c["code"])
    # Bad input: 400 naming the field, nothing written.
    bad = site.edit("cp-bureau", c["code"], "edit", version=after["version"], set={"state": "gone"})
    assert bad.status == 400 and "set.state" in bad.json()["message"]
    unsigned = site.ask("cp-bureau", "POST", f"/components/{c['code']}/edit", {"version": 1})
    assert unsigned.status == 400 and unsigned.json()["error"] == "signature_refused"
    assert (
        site.sql("SELECT version FROM component WHERE code = %s", c["code"])[0][0]
        == after["version"]
    )


def test_two_concurrent_edits_one_wins(site: Site) -> None:
    c = site.own_component(1)
    envelopes = [
        site.envelope(
            who,
            "component.edit",
            f"component {c['code']}",
            {"version": c["version"], "set": {"state": s}},
        )
        for who, s in (("cp-bureau", "occupied"), ("cp-bureau2", "missing"))
    ]
    gate = threading.Barrier(2)
    replies: list[Reply] = []

    def send(envelope: dict[str, str], who: str) -> None:
        gate.wait()
        replies.append(site.ask(who, "POST", f"/components/{c['code']}/edit", envelope))

    threads = [
        threading.Thread(target=send, args=(e, w))
        for e, w in zip(envelopes, ("cp-bureau", "cp-bureau2"), strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in replies) == [200, 409], [r.json() for r in replies]
    lost = next(r for r in replies if r.status == 409).json()
    assert lost["error"] == "conflict" and lost["version"] == c["version"] + 1
    assert (
        site.sql("SELECT version FROM component WHERE code = %s", c["code"])[0][0]
        == c["version"] + 1
    )
    assert (
        len(
            site.sql(
                "SELECT 1 FROM component_history WHERE code = %s AND change = 'edit'", c["code"]
            )
        )
        == 1
    )


def test_move_by_pixel_add_by_standard_code_and_retire(site: Site) -> None:
    c = site.own_component(2)
    p = c["pixel"]
    target = {**p, "col": (p["col"] + 128) % 256}
    moved = site.edit("cp-bureau", c["code"], "move", version=c["version"], place={"pixel": target})
    assert moved.status == 200, moved.json()
    assert moved.json()["pixel"] == target
    grid_code = site.sql("SELECT grid_code FROM component WHERE code = %s", c["code"])[0][0]
    assert moved.json()["grid"] == grid_code
    point = site.edit(
        "cp-bureau", c["code"], "move", version=c["version"] + 1, place={"point": [1.0, 2.0]}
    )
    assert point.status == 400  # coordinates are never taken from outside

    major, minor = c["class"]["major"], c["class"]["minor"]
    top = site.sql(
        "SELECT max(right(code, 6)::int) FROM component WHERE major = %s AND minor = %s",
        major,
        minor,
    )[0][0]
    added = site.signed(
        "cp-bureau", "/components", "component.add", "components",
        {"major": major, "minor": minor, "name": "新设施", "place": {"grid": grid_code}},
    )  # fmt: skip
    assert added.status == 201, added.json()
    new = added.json()
    assert new["code"] == f"{site.settings.district_code}{major}{minor}{top + 1:06d}"
    assert new["owner_dept"] == site.dept and new["grid"] == grid_code
    assert [h["change"] for h in new["history"]] == ["add"]

    retired = site.edit("cp-bureau", new["code"], "retire", version=1, reason="拆除")
    assert retired.status == 200 and retired.json()["in_use"] is False
    again = site.edit("cp-bureau", new["code"], "edit", version=2, set={"state": "damaged"})
    assert again.status == 409
    listed = site.ask("cp-bureau", "GET", f"/components?code={new['code']}").json()
    assert listed["total"] == 0  # retired ones only with retired=1
    assert (
        site.ask("cp-bureau", "GET", f"/components?code={new['code']}&retired=1").json()["total"]
        == 1
    )


def test_bulk_csv_all_or_nothing(site: Site) -> None:
    a, b = site.own_component(3), site.own_component(4)
    theirs = site.ask("cp-other", "GET", "/components").json()["components"][1]
    rows = [
        "op,code,state,name,grid,major,minor",
        f"edit,{a['code']},damaged,,,,",
        f"edit,{b['code']},occupied,,,,",
        f"edit,{theirs['code']},missing,,,,",
        f"add,,,批量新增,{a['grid']},{a['class']['major']},{a['class']['minor']}",
        f"edit,{a['code']},lost,,,,",
    ]
    given_away = "\n".join(
        [
            "op,code,owner_dept,maintainer_dept",
            f"edit,{a['code']},{site.other_dept},{site.other_dept}",
        ]
    )
    away = site.ask(
        "cp-bureau", "POST", "/components/imports", raw=given_away.encode(), content_type="text/csv"
    ).json()
    assert (
        not away["ok"] and "must stay one of your departments" in away["report"][0]["problems"][0]
    )
    bad = site.ask(
        "cp-bureau",
        "POST",
        "/components/imports?filename=x.csv",
        raw="\n".join(rows).encode(),
        content_type="text/csv",
    )
    assert bad.status == 201, bad.json()
    report = bad.json()
    assert not report["ok"] and report["problems"] == 2
    assert [r["row"] for r in report["report"] if r["problems"]] == [3, 5]
    assert "of your departments" in report["report"][2]["problems"][0]
    assert "named twice" in report["report"][4]["problems"][0]
    refused = site.signed(
        "cp-bureau", f"/components/imports/{report['id']}/apply", "component.import",
        f"component import {report['id']}", {"sha256": report["sha256"]},
    )  # fmt: skip
    assert refused.status == 400
    assert site.sql("SELECT state FROM component WHERE code = %s", a["code"])[0][0] == a["state"]

    good = site.ask(
        "cp-bureau",
        "POST",
        "/components/imports",
        raw="\n".join(rows[:3] + rows[4:5]).encode(),
        content_type="text/csv",
    ).json()
    assert good["ok"], good
    _no_coordinates(good)
    # Someone edits b after the check: the whole import is refused, nothing of it applied.
    site.edit("cp-bureau2", b["code"], "edit", version=b["version"], set={"name": "抢先修改"})
    stale = site.signed(
        "cp-bureau", f"/components/imports/{good['id']}/apply", "component.import",
        f"component import {good['id']}", {"sha256": good["sha256"]},
    )  # fmt: skip
    assert stale.status == 409
    assert site.sql("SELECT state FROM component WHERE code = %s", a["code"])[0][0] == a["state"]

    rows[2] = f"edit,{b['code']},occupied,,,,"
    fresh = site.ask(
        "cp-bureau",
        "POST",
        "/components/imports",
        raw="\n".join(rows[:3] + rows[4:5]).encode(),
        content_type="text/csv",
    ).json()
    applied = site.signed(
        "cp-bureau", f"/components/imports/{fresh['id']}/apply", "component.import",
        f"component import {fresh['id']}", {"sha256": fresh["sha256"]},
    )  # fmt: skip
    assert applied.status == 200, applied.json()
    assert applied.json()["applied"] == 3
    states = dict(
        site.sql("SELECT code, state FROM component WHERE code IN (%s, %s)", a["code"], b["code"])
    )
    assert states == {a["code"]: "damaged", b["code"]: "occupied"}
    action = site.sql(
        "SELECT signed_action FROM component_import WHERE id = %s::uuid", fresh["id"]
    )[0][0]
    assert len(site.sql("SELECT 1 FROM component_history WHERE signed_action = %s", action)) == 3
    twice = site.signed(
        "cp-bureau", f"/components/imports/{fresh['id']}/apply", "component.import",
        f"component import {fresh['id']}", {"sha256": fresh["sha256"]},
    )  # fmt: skip
    assert twice.status == 409
    junk = site.ask(
        "cp-bureau", "POST", "/components/imports", raw=b"\x00\x01", content_type="text/csv"
    )
    assert junk.status == 400 and junk.json()["error"] == "invalid"


def test_bulk_geopackage_moves_by_its_points(site: Site, tmp_path: Path) -> None:
    c = site.own_component(5)
    x, y = site.sql(
        "SELECT ST_X(geom) + 3, ST_Y(geom) + 4 FROM component WHERE code = %s", c["code"]
    )[0]
    geojson = tmp_path / "moves.geojson"
    geojson.write_text(json.dumps({
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {"op": "move", "code": c["code"]},
                      "geometry": {"type": "Point", "coordinates": [x, y]}}],
    }))  # fmt: skip
    gpkg = tmp_path / "moves.gpkg"
    made = subprocess.run(
        ["ogr2ogr", "-f", "GPKG", "-a_srs", f"EPSG:{site.settings.srid}", str(gpkg), str(geojson)],
        capture_output=True, text=True, env=gdal_env(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    checked = site.ask(
        "cp-bureau", "POST", "/components/imports?filename=moves.gpkg", raw=gpkg.read_bytes(),
        content_type="application/geopackage+sqlite3",
    ).json()  # fmt: skip
    assert checked["ok"], checked
    _no_coordinates(checked)
    applied = site.signed(
        "cp-bureau", f"/components/imports/{checked['id']}/apply", "component.import",
        f"component import {checked['id']}", {"sha256": checked["sha256"]},
    )  # fmt: skip
    assert applied.status == 200, applied.json()
    moved = site.sql("SELECT ST_X(geom), ST_Y(geom) FROM component WHERE code = %s", c["code"])[0]
    assert moved == pytest.approx((x, y))


_POINT = (
    b"GP\x00\x01" + struct.pack("<i", 4548) + b"\x01\x01\x00\x00\x00" + struct.pack("<dd", 1, 2)
)


def _geopackage(path: Path, srs: object, geometry: object) -> bytes:
    """A GeoPackage's bare bones, with what a hand-made or damaged file may hold."""
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE gpkg_contents (table_name TEXT, data_type TEXT)")
        con.execute(
            "CREATE TABLE gpkg_geometry_columns (table_name TEXT, column_name TEXT, srs_id)"
        )
        con.execute("INSERT INTO gpkg_contents VALUES ('parts', 'features')")
        con.execute("INSERT INTO gpkg_geometry_columns VALUES ('parts', 'geom', ?)", (srs,))
        con.execute("CREATE TABLE parts (fid INTEGER PRIMARY KEY, geom, code TEXT)")
        con.execute("INSERT INTO parts (geom, code) VALUES (?, '1101080209000001')", (geometry,))
    con.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("srs", "geometry", "message"),
    [
        ("abc", _POINT, "names no SRS"),
        (None, _POINT, "names no SRS"),
        (4548.5, _POINT, "names no SRS"),
        (4547, _POINT, "in SRS 4547"),
        (4548, "POINT (1 2)", "not a GeoPackage geometry"),
        (4548, 1.5, "not a GeoPackage geometry"),
        (4548, 10**12, "not a GeoPackage geometry"),  # bytes(10**12) tried to allocate it
        (4548, b"GP\x00\x01" + b"\x00" * 6, "unreadable"),
    ],
)
def test_a_damaged_geopackage_is_named_not_a_crash(
    tmp_path: Path, srs: object, geometry: object, message: str
) -> None:
    data = _geopackage(tmp_path / "parts.gpkg", srs, geometry)
    with pytest.raises(InvalidInput, match=message):
        bulk.read(data, "gpkg", 4548)
    assert bulk.read(_geopackage(tmp_path / "good.gpkg", 4548, _POINT), "gpkg", 4548) == [
        {"point": (1.0, 2.0), "code": "1101080209000001"}
    ]


def test_a_component_case_links_to_its_component(site: Site) -> None:
    c = site.own_component(6)
    created = site.signed(
        "cp-operator", "/cases/record", "case.record", "cases",
        {"source": "phone", "kind": "component", "component": c["code"], "description": "井盖松动"},
    )  # fmt: skip
    assert created.status == 201, created.json()
    number = created.json()["number"]
    assert created.json()["component"] == c["code"]
    for who, name, params in (
        ("cp-operator", "accept", {}),
        ("cp-leader", "file", {}),
        ("cp-dispatcher", "dispatch", {"bureau": site.bureau}),
    ):
        state = site.sql("SELECT state FROM city_case WHERE number = %s", number)[0][0]
        reply = site.signed(
            who,
            f"/cases/{number}/{name}",
            f"case.{name}",
            f"case {number}",
            {"from": state, **params},
        )
        assert reply.status == 200, reply.json()
    shown = site.ask("cp-bureau", "GET", f"/components/{c['code']}").json()
    assert [k["number"] for k in shown["cases"]] == [number]
    assert shown["cases"][0]["href"] == f"/inbox/{number}"
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        site.sql(
            "UPDATE city_case SET component_code = '1101089999999999' WHERE number = %s", number
        )


def _tile_rgb(site: Site, pixel: dict[str, int]) -> Any:
    path = f"/tiles/topo500/{pixel['level']}/{pixel['x']}/{pixel['y']}.png"
    reply = site.ask("cp-bureau", "GET", path)
    assert reply.status == 200
    image = Image.open(io.BytesIO(reply.body)).convert("RGB")
    return image.getpixel((pixel["col"], pixel["row"]))


def test_changed_component_shows_on_its_tile_within_seconds(site: Site) -> None:
    """Through the gateway: the 1:500 tile is cached before the edit; after it, the tile
    shows the component's new state (the missing marker) at its pixel."""
    grid = grid_from(site.settings)
    assert grid.levels[-1].scale == 500
    c = next(
        site.own_component(n) for n in range(10, 60) if site.own_component(n)["state"] == "intact"
    )
    assert not _missing_marker(_tile_rgb(site, c["pixel"]))  # rendered and cached now
    assert not _missing_marker(_tile_rgb(site, c["pixel"]))  # from the cache
    reply = site.edit(
        "cp-bureau", c["code"], "edit", version=c["version"], set={"state": "missing"}
    )
    assert reply.status == 200
    edited = time.monotonic()
    while not _missing_marker(_tile_rgb(site, c["pixel"])):  # each ask renders afresh
        assert time.monotonic() - edited < LIMIT_S, f"not on its tile {LIMIT_S} s after the edit"
    elapsed = time.monotonic() - edited
    print(f"component change on its 1:500 tile after {elapsed:.3f} s")
    assert elapsed < LIMIT_S


def test_bulk_from_the_command_line(site: Site, tmp_path: Path) -> None:
    """`citygrid components import` signs with the person's key on disk; `--check` and a
    file with a problem apply nothing; `history` lists the versions."""
    from click.testing import CliRunner

    from mapserver.cli import main

    c = site.own_component(7)
    site.install.signing("cp-bureau")
    out = site.install.out
    signer = ["--as", "cp-bureau", "--key", str(out / "cp-bureau.signing.key")]
    signer += ["--cert", str(out / "cp-bureau.signing.crt")]
    env = {
        "CITYGRID_DATABASE_URL": site.settings.database_url,
        "CITYGRID_DATA_DIR": str(site.settings.data_dir),
    }
    good = tmp_path / "cli.csv"
    good.write_text(f"op,code,state\nedit,{c['code']},occupied\n", "utf-8")
    checked = CliRunner().invoke(
        main, ["components", "import", *signer, str(good), "--check"], env=env
    )
    assert checked.exit_code == 0, checked.output
    assert "nothing applied" in checked.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"op,code,state\nedit,{c['code']},broken\n", "utf-8")
    refused = CliRunner().invoke(main, ["components", "import", *signer, str(bad)], env=env)
    assert refused.exit_code == 1 and "row 1: edit" in refused.output
    assert "citygrid: error: 1 row(s) with problems: nothing applied" in refused.output
    assert site.sql("SELECT state FROM component WHERE code = %s", c["code"]) == [(c["state"],)]
    applied = CliRunner().invoke(main, ["components", "import", *signer, str(good)], env=env)
    assert applied.exit_code == 0, applied.output
    assert site.sql("SELECT state FROM component WHERE code = %s", c["code"]) == [("occupied",)]
    shown = CliRunner().invoke(main, ["components", "history", c["code"]], env=env)
    assert shown.exit_code == 0, shown.output
    assert "import" in shown.output.splitlines()[-1] and "by cp-bureau" in shown.output
    old = CliRunner().invoke(
        main, ["components", "history", c["code"], "--as-of", "2000-01-01"], env=env
    )
    assert old.exit_code == 1 and "no history" in old.output
