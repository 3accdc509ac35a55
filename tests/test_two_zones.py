"""Two zones as separate processes: the renderer service inside (`citygrid renderer serve`:
the map database, Mapnik, the tile cache) and the gateway outside (`citygrid serve` with
`renderer_url`), each under real gunicorn TLS with its own data directory, settings,
database and PostgreSQL role. The gateway's role cannot even connect to the map database,
and its own database holds no map data, yet it serves tiles; the renderer refuses what the
gateway did not grant, whoever asks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from PIL import Image

from auth import pki
from mapserver import db
from mapserver.device import map_picture
from mapserver.settings import _as_role
from tiles import grant as grants
from tiles.picture import Frame
from tiles.remote import RemoteTiles, RendererRefused
from tiles.tile_line import TileLine

from .app_client import Install, PeerSocket
from .hot_paths import Paths, same
from .load import sequencer_leader
from .sequenced import sequenced, shipped
from .tls import REFUSED, request
from .zones import Zones, tile_answers, two_zones
from .zones import sign_grant as _grant
from .zones import thumbprint_of as _sha


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    with two_zones(tmp_path_factory.mktemp("zones"), sequencers=True) as found:
        yield found


def test_each_zones_log_is_sequenced_by_its_own_service(zones: Zones) -> None:
    """As deployed (citygrid-renderer-sequencer.service, citygrid-sequencer.service): each
    zone's sequencer runs beside its servers, not in them, and leads its own log only."""
    renderer_sequencer, gateway_sequencer = zones.sequencers
    assert sequencer_leader(zones.map_db.database_url) == renderer_sequencer
    assert sequencer_leader(zones.gateway_db.database_url) == gateway_sequencer


def _gateway(z: Zones, path: str, **kw: Any) -> Any:
    return request(z.gateway_port, path, z.ca, *z.person, **kw)


def _served_tile(z: Zones) -> tuple[int, int, int]:
    desc = _gateway(z, "/tiles/topo500").json()
    level = desc["levels"][-1]
    t = level["tiles"]
    return level["level"], (t["x_min"] + t["x_max"]) // 2, (t["y_min"] + t["y_max"]) // 2


def test_the_gateway_cannot_reach_the_map_data(zones: Zones) -> None:
    # Its serving role may not connect to the map database at all.
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(_as_role(zones.map_db.database_url, "citygrid_app")).close()
    # Nor may the gateway database's owner role settings name it: its own tables hold no map.
    with db.connect(zones.gateway_db) as conn:
        for table in ("building", "road_line", "component"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        for table in ("street", "district", "unit_grid"):  # cases' areas: codes, no shapes
            shapes = conn.execute(f"SELECT count(*) FROM {table} WHERE NOT ST_IsEmpty(geom)")
            assert shapes.fetchone() == (0,), table
    with db.connect(zones.map_db) as conn:
        assert conn.execute("SELECT count(*) FROM building").fetchone()[0] > 0  # type: ignore[index]


def test_tiles_flow_through_the_two_zones(zones: Zones) -> None:
    z, x, y = _served_tile(zones)
    desc = _gateway(zones, "/tiles/topo500").json()
    text = json.dumps(desc)
    assert "origin" not in text
    assert [lv["scale_denominator"] for lv in desc["levels"]] == [1000, 500]
    first = _gateway(zones, f"/tiles/topo500/{z}/{x}/{y}.png")
    assert first.status == 200 and first.headers["Content-Type"] == "image/png"
    assert "X-Accel-Redirect" not in first.headers
    # The bytes are the renderer's cached tile, rendered inside.
    stored = zones.map_db.tile_dir / "topo500" / str(z) / str(x) / f"{y}.png"
    assert stored.read_bytes() == first.body
    assert not (zones.gateway_db.tile_dir / "topo500").exists()  # nothing cached outside
    etag = first.headers["ETag"]
    again = _gateway(zones, f"/tiles/topo500/{z}/{x}/{y}.png", headers={"If-None-Match": etag})
    assert again.status == 304
    outside = _gateway(zones, f"/tiles/topo500/{z}/{x + 10_000}/{y}.png")
    assert outside.status == 404 and outside.json()["error"] == "not_found"
    # Audited by the gateway before each response left (its spool), then in its own database.
    shipped(zones.gateway_db.database_url)
    with db.connect(zones.gateway_db) as conn:
        found = conn.execute(
            "SELECT count(*) FROM audit_queue WHERE resource = %s AND account = %s",
            (f"tile topo500/{z}/{x}/{y}", "zone-operator"),
        ).fetchone()
    assert found is not None and found[0] == 2


def test_the_gateway_answers_the_renderers_tiles_before_flask(zones: Zones, tmp_path: Path) -> None:
    """The gateway's tile look-up across the hop runs on the cached tiles' own path
    (tiles.hot_path): a tile and its revalidation reach the renderer, not Flask, and are
    answered and audited as the Flask path answers them (an app of the gateway's zone,
    in-process, asking the zones' renderer)."""
    install = Install(
        zones.gateway_db,
        tmp_path,
        renderer_url=f"https://127.0.0.1:{zones.renderer_port}",
        renderer_tile_url=f"https://127.0.0.1:{zones.tile_port}",
    )
    cert = x509.load_pem_x509_certificate(zones.person[0].read_bytes())
    install.der["zone-operator"] = cert.public_bytes(serialization.Encoding.DER)
    paths = Paths(
        install,
        lambda who: {
            "REMOTE_ADDR": "192.0.2.9",
            "gunicorn.socket": PeerSocket(install.der[who or "zone-operator"]),
        },
    )
    z, x, y = _served_tile(zones)
    path = f"/tiles/topo500/{z}/{x}/{y}.png"
    try:
        hot = paths.ask(True, "zone-operator", path)
        assert paths.reached_flask == 0
        assert hot[0].status_code == 200 and hot[0].get_data()[:4] == b"\x89PNG"
        same(hot, paths.ask(False, "zone-operator", path))
        held = {"headers": {"If-None-Match": hot[0].headers["ETag"]}}
        again = paths.ask(True, "zone-operator", path, **held)
        assert paths.reached_flask == 1 and again[0].status_code == 304
        same(again, paths.ask(False, "zone-operator", path, **held))
    finally:
        install.close()


def test_a_revalidation_crosses_the_hop_without_the_bytes(zones: Zones) -> None:
    """The gateway passes the client's If-None-Match on: the renderer answers 304 with no
    body (its own audit log says so), and a version the client does not hold still
    gets the bytes."""
    z, x, y = _served_tile(zones)
    path = f"/tiles/topo500/{z}/{x}/{y}.png"

    def statuses() -> list[tuple[int, int]]:
        sequenced(zones.map_db.database_url)
        with db.connect(zones.map_db) as conn:
            runs = conn.execute(
                "SELECT action, detail, at FROM audit_entry WHERE action = 'renderer.tiles'"
                " ORDER BY leaf_index"
            ).fetchall()
        tile = f"/tile/topo500/{z}/{x}/{y}.png"
        logged = [{"action": action, "detail": d, "at": at} for action, d, at in runs]
        return [
            (a["status"], a["answer"]["bytes"])  # type: ignore[index]
            for a in tile_answers(logged, since)
            if a["resource"] == tile
        ]

    since = dt.datetime.now(dt.UTC)  # earlier tests' answers for this tile may be logged later
    first = _gateway(zones, path)
    etag = first.headers["ETag"]
    again = _gateway(zones, path, headers={"If-None-Match": f'"other", {etag}'})
    assert again.status == 304 and again.headers["ETag"] == etag and not again.body
    stale = _gateway(zones, path, headers={"If-None-Match": '"not-this-version"'})
    assert stale.status == 200 and stale.body == first.body and stale.headers["ETag"] == etag
    # The renderer writes accepted requests' entries behind its answers: wait for them.
    deadline = time.monotonic() + 30
    while len(found := statuses()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found == [(200, len(first.body)), (304, 0), (200, len(first.body))]


@pytest.mark.parametrize("channel", [True, False], ids=["tile-channel", "app"])
def test_the_gateway_reuses_its_connections_to_the_renderer(zones: Zones, channel: bool) -> None:
    """One kept-alive connection serves one thread after another (no handshake per thread
    or per tile); a connection the renderer closed is replaced without an error. The same
    on the renderer's tile channel and at its app."""
    z, x, y = _served_tile(zones)
    settings = dataclasses.replace(
        zones.gateway_db,
        renderer_url=f"https://127.0.0.1:{zones.renderer_port}",
        renderer_tile_url=f"https://127.0.0.1:{zones.tile_port}" if channel else "",
    )
    remote = RemoteTiles.from_settings(settings)
    remote.asker = lambda: _Who("zone-operator", ("operator",), ())
    pool = remote.tile_connections
    assert (pool is remote.connections) is not channel
    first = remote.cached("topo500", z, x, y)
    for _ in range(4):  # four threads, one after the other, as gunicorn's pool hands them out
        thread = threading.Thread(target=remote.cached, args=("topo500", z, x, y))
        thread.start()
        thread.join()
    assert pool.opened == 1
    with pool._lock:
        for _, line in pool._idle:  # as if the renderer's keep-alive had run out
            sock = line.sock if isinstance(line, TileLine) else line.conn.sock  # type: ignore[attr-defined]
            assert sock is not None
            sock.shutdown(socket.SHUT_RDWR)
    assert remote.cached("topo500", z, x, y).data == first.data
    assert pool.opened == 2


class _Who(NamedTuple):
    account: str
    roles: tuple[str, ...]
    streets: tuple[str, ...]


def _renderer(z: Zones, path: str, token: str | None, cert: tuple[Path, Path] | None = None,
              **kw: Any) -> Any:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cert = cert or z.service
    return request(z.renderer_port, path, z.ca, *cert, headers=headers, **kw)


def test_the_renderer_checks_every_grant_again(zones: Zones, tmp_path: Path) -> None:
    z, x, y = _served_tile(zones)
    path = f"/tile/topo500/{z}/{x}/{y}.png"
    ok = grants.Grant("zone-operator", ("topo500",), z, None)
    assert _renderer(zones, path, _grant(zones, ok)).status == 200

    def refused(token: str | None, status: int, path: str = path, **kw: Any) -> None:
        answer = _renderer(zones, path, token, **kw)
        assert answer.status == status, (answer.status, answer.body)
        assert answer.headers["Content-Type"] == "application/json"

    refused(None, 401)  # no grant
    refused(_grant(zones, ok, lifetime=60, now=time.time() - 120), 401)  # expired
    other = grants.load_private(grants.make_keys(tmp_path)[0])
    refused(grants.sign(other, ok, _sha(zones.service[0])), 401)  # another key
    refused(jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256"), 401)  # not ES256
    refused(_grant(zones, ok._replace(level=z - 1)), 403)  # another level
    refused(_grant(zones, ok._replace(products=("topo2000",))), 403)  # another map
    refused(_grant(zones, ok, cert=zones.person[0]), 401)  # bound to another certificate
    # A person's certificate, even with a grant bound to it, is not a service.
    refused(_grant(zones, ok, cert=zones.person[0]), 403, cert=zones.person)
    # Street scope: a grant for a street the tile does not touch.
    with db.connect(zones.map_db) as conn:
        codes = [c for (c,) in conn.execute("SELECT code FROM street ORDER BY code")]
    scope = _renderer(zones, "/scope", _grant(zones, grants.Grant("gateway", (), -1, None))).json()
    spans = scope["streets"]
    touching = {c for c in codes if any(
        x0 <= x <= x1 for x0, x1 in spans.get(c, {}).get(str(z), {}).get(str(y), []))}  # fmt: skip
    assert touching, "the middle tile lies in some street"
    refused(_grant(zones, ok._replace(streets=frozenset({"999999999"}))), 403)
    inside = ok._replace(streets=frozenset(touching))
    assert _renderer(zones, path, _grant(zones, inside)).status == 200
    # The scope is for the gateway's own grant only; other paths are refused.
    refused(_grant(zones, ok), 403, path="/scope")
    refused(_grant(zones, ok), 404, path="/audit/entries")
    # No client certificate: the handshake fails.
    with pytest.raises(REFUSED):
        request(zones.renderer_port, path, zones.ca).status  # noqa: B018


def test_pictures_through_the_remote_interface(zones: Zones) -> None:
    """The gateway's side of the interface (tiles.remote.RemoteTiles) as the views use it:
    a picture of a frame, masked where the asker's streets do not reach, masked again by
    the renderer whatever the gateway asks."""
    z, x, y = _served_tile(zones)
    settings = dataclasses.replace(
        zones.gateway_db, renderer_url=f"https://127.0.0.1:{zones.renderer_port}"
    )

    class Who(NamedTuple):
        account: str
        roles: tuple[str, ...]
        streets: tuple[str, ...]

    who = [Who("zone-operator", ("operator",), ())]
    remote = RemoteTiles.from_settings(settings)
    remote.asker = lambda: who[0]
    frame = Frame(z, x * 256, y * 256, 512, 256)  # tiles (x, y) and (x + 1, y)
    with Image.open(io.BytesIO(remote.picture(("topo500",), frame))) as opened:
        whole = opened.convert("RGB")
    assert whole.size == (512, 256)
    tile = remote.cached("topo500", z, x, y)
    with Image.open(io.BytesIO(tile.data or b"")) as opened:
        left = opened.convert("RGB")

    def near(c: int, r: int) -> bool:
        a, b = left.getpixel((c, r)), whole.getpixel((c, r))
        return max(abs(p - q) for p, q in zip(a, b, strict=True)) <= 14  # type: ignore[arg-type]

    same = [near(c, r) for c in range(0, 256, 16) for r in range(0, 256, 16)]
    assert sum(same) >= 0.9 * len(same)  # the picture's left half is the tile
    # A viewer of one street the frame's tiles do not touch: all masked, by the renderer.
    who[0] = Who("zone-viewer", ("viewer",), ("999999999",))
    with pytest.raises(RendererRefused):
        remote.cached("topo2000", z - 2, x // 4, y // 4)
    with Image.open(io.BytesIO(remote.picture(("topo500",), frame))) as opened:
        masked = opened.convert("RGB")
    assert {masked.getpixel((c, 128)) for c in (5, 250, 300, 500)} == {(214, 214, 214)}
    assert (
        remote.descriptor("topo500")["levels"] == _gateway(zones, "/tiles/topo500").json()["levels"]
    )


def test_the_gateway_holds_no_map_tile_service(zones: Zones) -> None:
    from mapserver.services import Services

    s = dataclasses.replace(zones.gateway_db, renderer_url="https://127.0.0.1:1")
    found = Services(s, None, None, None, None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="renderer zone"):
        found.tiles()


def test_identify_through_the_two_zones(zones: Zones) -> None:
    """Click-to-identify asks the renderer (the map tables are inside), with the same grant;
    the answer names codes, never a coordinate, and a grant's streets bound it there too."""
    from tiles.service import grid_from

    grid = grid_from(zones.map_db)  # the renderer's secret origin, known to the test only
    with db.connect(zones.map_db) as conn:
        rows = conn.execute(
            "SELECT g.code, c.street_code, ST_X(ST_PointOnSurface(g.geom)),"
            " ST_Y(ST_PointOnSurface(g.geom))"
            " FROM unit_grid g JOIN community c ON c.code = g.community_code ORDER BY g.code"
        ).fetchall()
    code, street, px, py = rows[len(rows) // 2]
    z = grid.z_of_scale(500)
    tx, ty, col, row = grid.locate(z, px, py)
    query = f"/map/identify?map=topo500&level={z}&x={tx}&y={ty}&col={col}&row={row}"
    answer = _gateway(zones, query)
    assert answer.status == 200, answer.body
    found = answer.json()
    assert found["grid"] == code and found["street"]["code"] == street
    assert str(int(px)) not in answer.body.decode() and str(int(py)) not in answer.body.decode()
    shipped(zones.gateway_db.database_url)  # durable in the gateway's spool, then queued
    with db.connect(zones.gateway_db) as conn:
        audited = conn.execute(
            "SELECT count(*) FROM audit_queue WHERE resource = %s",
            (f"identify topo500/{z}/{tx}/{ty}",),
        ).fetchone()
    assert audited == (1,)
    # The renderer: the same question under grants of other streets is refused.
    path = f"/identify/topo500/{z}/{tx}/{ty}?col={col}&row={row}"
    ok = grants.Grant("zone-operator", ("topo500",), z, frozenset({street}))
    assert _renderer(zones, path, _grant(zones, ok)).json()["found"]["grid"] == code
    elsewhere = ok._replace(streets=frozenset({"999999999"}))
    assert _renderer(zones, path, _grant(zones, elsewhere)).status == 403
    assert _renderer(zones, path, _grant(zones, ok._replace(level=z - 1))).status == 403
    assert _renderer(zones, path.replace(f"col={col}", "col=999"), _grant(zones, ok)).status == 400
    neighbours = {s for _, s, _, _ in rows if s != street}
    scope = _renderer(zones, "/scope", _grant(zones, grants.Grant("gateway", (), -1, None))).json()
    spans = scope["streets"]
    touching = {
        s for s in neighbours
        if any(a <= tx <= b for a, b in spans.get(s, {}).get(str(z), {}).get(str(ty), []))
    }  # fmt: skip
    if touching:  # the tile also meets another street: the point's own street decides
        other = ok._replace(streets=frozenset(touching))
        assert _renderer(zones, path, _grant(zones, other)).status == 403


def test_a_service_certificate_is_no_account_at_the_gateway(zones: Zones) -> None:
    answer = request(zones.gateway_port, "/tiles/topo500", zones.ca, *zones.service)
    assert answer.status == 401 and answer.json()["error"] == "unauthenticated"


# -- the case workflow's map parts through the two zones


class Person(NamedTuple):
    cert: tuple[Path, Path]  # the TLS client certificate
    signing: tuple[Any, Any]  # the signing certificate and key


class CaseDesk(NamedTuple):
    operator: Person
    leader: Person
    grid: str  # a unit grid of the map, its street and a finest-level pixel inside it
    street: str
    point: tuple[float, float]  # known to the test only (the renderer's map database)
    number: str  # the case placed by a click on the map
    pixel: dict[str, int]


def _person(z: Zones, out: Path, name: str, roles: list[str] | None) -> Person:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from auth import accounts, certs
    from auth.ca_store import CaStore

    from .zones import SECRET

    store = CaStore(z.gateway_db.pki_dir)
    with db.transaction(z.gateway_db) as conn:
        if roles is not None:
            accounts.add(conn, name, roles, None)
            certs.issue(conn, store, SECRET, name, pki.Kind.PERSON, out)
        certs.issue(conn, store, SECRET, name, pki.Kind.SIGNING, out)
    cert = x509.load_pem_x509_certificates((out / f"{name}.signing.crt").read_bytes())[0]
    key = serialization.load_pem_private_key((out / f"{name}.signing.key").read_bytes(), None)
    tls = z.person if roles is None else (out / f"{name}.crt", out / f"{name}.key")
    return Person(tls, (cert, key))


def _signed(z: Zones, who: Person, action: str, resource: str, params: dict[str, Any]) -> Any:
    """A signed action of `who` posted to the gateway (a fresh nonce asked first)."""
    import base64

    from auth import signed_action

    nonce = request(z.gateway_port, "/auth/nonce", z.ca, *who.cert, method="POST").json()
    cert, key = who.signing
    data = signed_action.payload(
        action, resource, params, nonce["nonce"], pki.now(), pki.thumbprint(cert)
    )
    return {
        "payload": base64.b64encode(data).decode(),
        "signature": base64.b64encode(signed_action.sign(key, data)).decode(),
        "certificate": pki.pem(cert).decode(),
    }


def _post(z: Zones, who: Person, path: str, doc: Any) -> Any:
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    return request(z.gateway_port, path, z.ca, *who.cert, method="POST", headers=headers, body=body)


@pytest.fixture(scope="module")
def desk(zones: Zones, tmp_path_factory: pytest.TempPathFactory) -> CaseDesk:
    """An operator records a case by clicking the map: the place goes to the renderer as a
    pixel, comes back as codes, names and a pixel; the gateway keeps no point."""
    from tiles.service import grid_from

    out = tmp_path_factory.mktemp("zone-desk")
    operator = _person(zones, out, "zone-operator", None)
    leader = _person(zones, out, "zone-leader", ["shift_leader"])
    grid = grid_from(zones.map_db)  # the renderer's secret origin, known to the test only
    with db.connect(zones.map_db) as conn:
        rows = conn.execute(
            "SELECT g.code, c.street_code, ST_X(ST_PointOnSurface(g.geom)),"
            " ST_Y(ST_PointOnSurface(g.geom))"
            " FROM unit_grid g JOIN community c ON c.code = g.community_code ORDER BY g.code"
        ).fetchall()
    code, street, px, py = rows[len(rows) // 3]
    z = grid.z_of_scale(1000)  # a click at 1:1000; the case keeps its 1:500 pixel
    tx, ty, col, row = grid.locate(z, px, py)
    params = {
        "source": "phone", "kind": "event", "major": "01", "minor": "02",
        "description": "路边暴露垃圾（两区）",
        "place": {"pixel": {"level": z, "x": tx, "y": ty, "col": col, "row": row}},
    }  # fmt: skip
    made = _post(zones, operator, "/cases/record", _signed(zones, operator, "case.record",
                                                           "cases", params))  # fmt: skip
    assert made.status == 201, made.body
    shown = made.json()
    assert shown["grid"] == code and shown["street"]["code"] == street
    finest = grid.z_of_scale(500)
    assert shown["pixel"]["level"] == finest
    text = made.body.decode()
    assert str(int(px)) not in text and str(int(py)) not in text
    return CaseDesk(operator, leader, code, street, (px, py), shown["number"], shown["pixel"])


def test_a_case_placed_by_a_map_click_keeps_no_point_at_the_gateway(
    zones: Zones, desk: CaseDesk
) -> None:
    from tiles.service import grid_from

    grid = grid_from(zones.map_db)
    p = desk.pixel
    # Its pixel is where the point shows at 1:500 (the click's 1:1000 pixel, refined).
    tx, ty, col, row = grid.locate(p["level"], *desk.point)
    assert (p["x"], p["y"]) == (tx, ty) and abs(p["col"] - col) <= 1 and abs(p["row"] - row) <= 1
    with db.connect(zones.gateway_db) as conn:
        kept = conn.execute(
            "SELECT geom IS NULL, pixel_x, pixel_y, grid_code FROM city_case WHERE number = %s",
            (desk.number,),
        ).fetchone()
        assert kept == (True, p["x"] * 256 + p["col"], p["y"] * 256 + p["row"], desk.grid)
        # Its areas are registered by code and name, without a shape.
        for table in ("district", "street", "community", "unit_grid"):
            shapes = conn.execute(f"SELECT count(*) FROM {table} WHERE NOT ST_IsEmpty(geom)")
            assert shapes.fetchone() == (0,), table
        assert conn.execute(
            "SELECT count(*) FROM unit_grid WHERE code = %s", (desk.grid,)
        ).fetchone() == (1,)
    detail = _gateway(zones, f"/cases/{desk.number}")
    assert detail.status == 200 and detail.json()["pixel"] == p
    listed = _gateway(zones, "/cases").json()
    assert desk.number in [c["number"] for c in listed["cases"]]


def test_the_case_shows_on_the_overlay_and_a_click_finds_it(zones: Zones, desk: CaseDesk) -> None:
    p = desk.pixel
    path = f"/tiles/cases/{p['level']}/{p['x']}/{p['y']}.png"
    tile = _gateway(zones, path)
    assert tile.status == 200 and tile.headers["Content-Type"] == "image/png", tile.body
    with Image.open(io.BytesIO(tile.body)) as opened:
        drawn = opened.convert("RGBA")
    assert drawn.getpixel((p["col"], p["row"]))[3] > 0  # the case's symbol, drawn inside
    corners = [drawn.getpixel((c, r))[3] for c in (0, 255) for r in (0, 255)]
    far = all(abs(c - p["col"]) > 20 or abs(r - p["row"]) > 20 for c in (0, 255) for r in (0, 255))
    if far:
        assert corners == [0, 0, 0, 0]
    again = _gateway(zones, path, headers={"If-None-Match": tile.headers["ETag"]})
    assert again.status == 304
    # A click near the symbol at 1:1000 finds the case; a click far from it does not.
    z = p["level"] - 1
    gx, gy = (p["x"] * 256 + p["col"]) // 2, (p["y"] * 256 + p["row"]) // 2
    near = f"/map/cases?level={z}&x={gx // 256}&y={gy // 256}&col={gx % 256}&row={gy % 256}"
    found = _gateway(zones, near)
    assert found.status == 200, found.body
    assert [c["number"] for c in found.json()["cases"]] == [desk.number]
    away = (gx + 60) % 256
    other = _gateway(zones, near.replace(f"col={gx % 256}", f"col={away}"))
    assert other.status == 200 and other.json()["cases"] == []


def test_a_device_map_picture_through_the_two_zones(
    zones: Zones, desk: CaseDesk, tmp_path: Path
) -> None:
    """An inspector of the case's street asks its device for the picture: framed on the unit
    grid the renderer locates in pixels, drawn there, masked and marked here."""
    from auth import accounts, certs
    from auth.ca_store import CaStore

    from .zones import SECRET

    with db.transaction(zones.gateway_db) as conn:
        conn.execute(
            "INSERT INTO organisation (code, name, kind, street_code) VALUES"
            " ('zone-street', '街道办事处', 'street_office', %s)",
            (desk.street,),
        )
        accounts.add(conn, "zone-inspector", ["inspector"], "zone-street")
        certs.issue(conn, CaStore(zones.gateway_db.pki_dir), SECRET, "zone-inspector",
                    pki.Kind.DEVICE, tmp_path)  # fmt: skip
    device = (tmp_path / "zone-inspector.crt", tmp_path / "zone-inspector.key")
    token = request(zones.gateway_port, "/auth/token", zones.ca, *device, "POST").json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    url = f"/device/v1/map?case={desk.number}&w=320&h=240"
    answer = request(zones.gateway_port, url, zones.ca, *device, headers=bearer)
    assert answer.status == 200 and answer.headers["Content-Type"] == "image/png", answer.body
    with Image.open(io.BytesIO(answer.body)) as opened:
        assert opened.size == (320, 240)
        shown = opened.convert("RGB")
    assert answer.headers["CityGrid-Marks"].split(";")[0] == f"{desk.number}:160,120"
    assert shown.getpixel((160, 120)) == map_picture.CASE_RGB
    assert int(answer.headers["CityGrid-Scale"]) in (500, 1000, 2000, 4000)
    again = request(zones.gateway_port, url, zones.ca, *device,
                    headers={**bearer, "If-None-Match": answer.headers["ETag"]})  # fmt: skip
    assert again.status == 304
    by_grid = f"/device/v1/map?grid={desk.grid}&w=240&h=240"
    assert request(zones.gateway_port, by_grid, zones.ca, *device, headers=bearer).status == 200
    missing = f"/device/v1/map?grid={desk.grid[:6]}99999999&w=240&h=240"
    assert request(zones.gateway_port, missing, zones.ca, *device, headers=bearer).status == 404


def test_a_hotspot_tile_through_the_two_zones(zones: Zones, desk: CaseDesk) -> None:
    """The case is accepted and filed at the gateway; the hot-spot tile is drawn by the
    renderer from the gateway's counts (unit grid codes and numbers only)."""
    from zoneinfo import ZoneInfo

    from tiles.service import grid_from

    for who, name, state in ((desk.operator, "accept", "reported"),
                             (desk.leader, "file", "accepted")):  # fmt: skip
        resource = f"case {desk.number}"
        signed = _signed(zones, who, f"case.{name}", resource, {"from": state})
        done = _post(zones, who, f"/cases/{desk.number}/{name}", signed)
        assert done.status == 200, done.body
    grid = grid_from(zones.map_db)
    z = grid.z_of_scale(2000)
    tx, ty, col, row = grid.locate(z, *desk.point)
    today = dt.datetime.now(ZoneInfo(zones.gateway_db.work_timezone)).date()
    period = f"from={today - dt.timedelta(days=6)}&to={today}"
    path = f"/evaluation/hotspot/{z}/{tx}/{ty}.png?{period}"
    shaded = _gateway(zones, f"{path}&class=all")
    assert shaded.status == 200 and shaded.headers["Content-Type"] == "image/png", shaded.body
    with Image.open(io.BytesIO(shaded.body)) as opened:
        assert opened.convert("RGBA").getpixel((col, row))[3] > 0  # the filed case's grid
    clear = _gateway(zones, f"{path}&class=c02")  # no component case: nothing shaded
    with Image.open(io.BytesIO(clear.body)) as opened:
        assert opened.convert("RGBA").getpixel((col, row))[3] == 0
    first = today - dt.timedelta(days=6)
    stored = (zones.map_db.tile_dir / f"hotspot_{first:%Y%m%d}_{today:%Y%m%d}_all" / str(z)
              / str(tx) / f"{ty}.png")  # fmt: skip
    assert stored.read_bytes() == shaded.body  # drawn and cached inside
    again = _gateway(zones, f"{path}&class=all")  # from the renderer's cache this time
    assert again.status == 200 and again.body == shaded.body


def test_the_renderer_checks_grants_for_case_work(zones: Zones, desk: CaseDesk) -> None:
    """Each endpoint of the case workflow refuses a grant for another street, map or level."""
    from tiles.service import grid_from

    grid = grid_from(zones.map_db)
    finest = grid.z_of_scale(500)
    mine = grants.Grant("zone-operator", ("cases",), finest, frozenset({desk.street}))
    elsewhere = mine._replace(streets=frozenset({"999999999"}))
    p = desk.pixel
    spec = {"pixel": {"level": finest, "x": p["x"], "y": p["y"], "col": p["col"], "row": p["row"]}}
    body = json.dumps({"spec": spec}).encode()

    def ask(path: str, grant: grants.Grant, data: bytes | None = None) -> Any:
        method = "GET" if data is None else "POST"
        return _renderer(zones, path, _grant(zones, grant), method=method, body=data)

    placed = ask("/place", mine, body)
    assert placed.status == 200 and placed.json()["where"]["grid_code"] == desk.grid
    assert "x" not in placed.json() and str(int(desk.point[0])) not in placed.body.decode()
    assert ask("/place", elsewhere, body).status == 403
    assert ask("/place", mine._replace(level=finest - 1), body).status == 403
    assert ask("/place", mine._replace(products=("topo500",)), body).status == 403
    point = json.dumps({"spec": {"point": list(desk.point)}}).encode()
    assert ask("/place", mine, point).status == 400  # never a point from outside
    # A unit grid: 404 outside the grant's streets, as for a missing one.
    assert ask(f"/grid/{desk.grid}", mine).status == 200
    assert ask(f"/grid/{desk.grid}", elsewhere).status == 404
    # The overlay and hot spots: tiles of the grant's streets only.
    tile = f"{p['level']}/{p['x']}/{p['y']}.png"
    marks = json.dumps({"marks": [[p["x"] * 256 + p["col"], p["y"] * 256 + p["row"], "open", 0]]})
    assert ask(f"/overlay/cases/{tile}", mine, marks.encode()).status == 200
    assert ask(f"/overlay/cases/{tile}", elsewhere, marks.encode()).status == 403
    bad = json.dumps({"marks": [[1, 2, "'; DROP TABLE x; --", 0]]}).encode()
    assert ask(f"/overlay/cases/{tile}", mine, bad).status == 400
    hot = mine._replace(products=("hotspot",))
    name = "hotspot_20260101_20260107_all"
    hot_elsewhere = hot._replace(streets=frozenset({"999999999"}))
    assert ask(f"/hotspot/{name}/{tile}", hot_elsewhere).status == 403
    assert ask(f"/hotspot/{name}/{tile}", hot).status == 409  # no counts yet: asks for them
    counts = json.dumps({"counts": {desk.grid: "1; DROP"}}).encode()
    assert ask(f"/hotspot/{name}/{tile}", hot, counts).status == 400
    assert ask(f"/hotspot/bad_name/{tile}", hot).status == 400


def test_open311_requests_are_placed_by_the_renderer(zones: Zones, tmp_path: Path) -> None:
    """A partner's complaint by an address of the map's table (address_id) and by a unit grid
    code: placed inside, kept outside as codes, names, the address text and a pixel."""
    import urllib.parse

    from auth import accounts, certs
    from auth.ca_store import CaStore

    from .zones import SECRET

    with db.transaction(zones.gateway_db) as conn:
        accounts.add(conn, "zone-hotline", ["partner"], None)
        certs.issue(conn, CaStore(zones.gateway_db.pki_dir), SECRET, "zone-hotline",
                    pki.Kind.PERSON, tmp_path)  # fmt: skip
    partner = (tmp_path / "zone-hotline.crt", tmp_path / "zone-hotline.key")
    with db.connect(zones.map_db) as conn:
        house = conn.execute(
            "SELECT id, full_text, grid_code FROM address WHERE kind = 'house' ORDER BY id LIMIT 1"
        ).fetchone()
    assert house is not None

    def submit(fields: dict[str, str]) -> Any:
        return request(
            zones.gateway_port, "/open311/v2/requests.json", zones.ca, *partner, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode({"service_code": "event-01-02", **fields}).encode(),
        )  # fmt: skip

    by_id = submit({"address_id": str(house[0]), "description": "井盖缺失"})
    assert by_id.status == 201, by_id.body
    by_grid = submit({"attribute[grid]": str(house[2]), "description": "乱停车"})
    assert by_grid.status == 201, by_grid.body
    missing = submit({"address_id": "999999999", "description": "无此地址"})
    assert missing.status == 400 and b"no address" in missing.body
    with db.connect(zones.map_db) as conn:
        part = conn.execute(
            "SELECT code, grid_code FROM component ORDER BY code LIMIT 1"
        ).fetchone()
    assert part is not None
    service = f"component-{part[0][6:8]}-{part[0][8:10]}"
    by_part = submit({"service_code": service, "attribute[component]": part[0],
                      "description": "井盖破损"})  # fmt: skip
    assert by_part.status == 201, by_part.body
    numbers = [answer.json()[0]["service_request_id"] for answer in (by_id, by_grid, by_part)]
    with db.connect(zones.gateway_db) as conn:
        kept = conn.execute(
            "SELECT geom IS NULL, pixel_x IS NOT NULL, grid_code, address, component_code"
            " FROM city_case WHERE number = ANY(%s) ORDER BY number",
            (numbers,),
        ).fetchall()
    assert kept == [
        (True, True, house[2], house[1], None),
        (True, True, house[2], "", None),
        (True, True, part[1], "", part[0]),
    ]


def test_the_gateway_registers_the_renderers_areas(zones: Zones) -> None:
    """`citygrid renderer sync-areas` on the gateway: every street, community and unit grid
    of the map by code, name and area, without a shape; again changes nothing; an
    organisation may then name a street where no case is yet."""
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "CITYGRID_DATABASE_URL": zones.gateway_db.database_url,
        "CITYGRID_DATA_DIR": str(zones.gateway_db.data_dir),
        "CITYGRID_RENDERER_URL": f"https://127.0.0.1:{zones.renderer_port}",
    }
    command = [sys.executable, "-m", "mapserver.cli", "renderer", "sync-areas"]
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    queries = (
        "SELECT code, name FROM street ORDER BY code",
        "SELECT code, street_code, name FROM community ORDER BY code",
        "SELECT code, community_code, area_m2 FROM unit_grid ORDER BY code",
    )
    with db.connect(zones.map_db) as conn:
        inside = [conn.execute(q).fetchall() for q in queries]
    with db.connect(zones.gateway_db) as conn:
        outside = [conn.execute(q).fetchall() for q in queries]
        for table in ("district", "street", "community", "unit_grid"):
            shapes = conn.execute(f"SELECT count(*) FROM {table} WHERE NOT ST_IsEmpty(geom)")
            assert shapes.fetchone() == (0,), table
    assert outside == inside and inside[0]
    assert f"{len(inside[2])} unit grids of {len(inside[0])} streets" in done.stdout
    with db.transaction(zones.gateway_db) as conn:
        conn.execute(
            "INSERT INTO organisation (code, name, kind, street_code) VALUES"
            " ('zone-last-street', '街道办事处', 'street_office', %s)",
            (inside[0][-1][0],),
        )
    # The areas are for the gateway's own grant only.
    person = grants.Grant("zone-operator", ("topo500",), 8, None)
    assert _renderer(zones, "/areas", _grant(zones, person)).status == 403
    own = grants.Grant("gateway", (), -1, None)
    assert _renderer(zones, "/areas", _grant(zones, own)).status == 200


def test_a_device_report_by_gps_through_the_two_zones(
    zones: Zones, desk: CaseDesk, tmp_path: Path
) -> None:
    """An inspector's handheld reports by its GPS fix (signed as a salted digest, the fix
    beside): converted and located by the renderer, kept at the gateway as codes and a
    pixel; a fix outside the inspector's streets is refused there too."""
    import base64
    import secrets

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from auth import accounts, certs, signed_action
    from auth.ca_store import CaStore
    from mapserver.device import fix as fix_mod

    from .zones import SECRET

    store = CaStore(zones.gateway_db.pki_dir)
    with db.transaction(zones.gateway_db) as conn:
        conn.execute(
            "INSERT INTO organisation (code, name, kind, street_code) VALUES"
            " ('zone-gps-street', '街道办事处', 'street_office', %s)",
            (desk.street,),
        )
        accounts.add(conn, "zone-field", ["inspector"], "zone-gps-street")
        for kind in (pki.Kind.DEVICE, pki.Kind.SIGNING):
            certs.issue(conn, store, SECRET, "zone-field", kind, tmp_path)
    device = (tmp_path / "zone-field.crt", tmp_path / "zone-field.key")
    cert = x509.load_pem_x509_certificates((tmp_path / "zone-field.signing.crt").read_bytes())[0]
    key = serialization.load_pem_private_key(
        (tmp_path / "zone-field.signing.key").read_bytes(), None
    )
    token = request(zones.gateway_port, "/auth/token", zones.ca, *device, "POST").json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    with db.connect(zones.map_db) as conn:
        found = conn.execute(
            "SELECT ST_X(ST_Transform(p, 4326)), ST_Y(ST_Transform(p, 4326)) FROM"
            " (SELECT ST_PointOnSurface(geom) AS p FROM unit_grid WHERE code = %s) g",
            (desk.grid,),
        ).fetchone()
    assert found is not None
    lon, lat = float(found[0]), float(found[1])

    def report(lon: float, lat: float) -> Any:
        salt = secrets.token_hex(16)
        params = {
            "source": "inspector", "kind": "event", "major": "01", "minor": "02",
            "description": "井盖缺失（定位）", "place": {"gps": fix_mod.digest(lon, lat, salt)},
            "client_time": dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).isoformat(),
        }  # fmt: skip
        nonce = request(zones.gateway_port, "/auth/nonce", zones.ca, *device, "POST",
                        headers=bearer).json()["nonce"]  # fmt: skip
        data = signed_action.payload(
            "case.report", "cases", params, nonce, pki.now(), pki.thumbprint(cert)
        )
        body = {
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(signed_action.sign(key, data)).decode(),  # type: ignore[arg-type]
            "certificate": pki.pem(cert).decode(),
            "fix": {"lon": lon, "lat": lat, "salt": salt},
        }
        headers = {**bearer, "Content-Type": "application/json",
                   "Idempotency-Key": secrets.token_hex(8)}  # fmt: skip
        return request(zones.gateway_port, "/device/v1/reports", zones.ca, *device, "POST",
                       headers=headers, body=json.dumps(body).encode())  # fmt: skip

    made = report(lon, lat)
    assert made.status == 201, made.body
    answer = made.json()
    assert answer["grid"] == desk.grid and answer["pixel"]["level"] == desk.pixel["level"]
    with db.connect(zones.gateway_db) as conn:
        kept = conn.execute(
            "SELECT geom IS NULL, pixel_x IS NOT NULL FROM city_case WHERE number = %s",
            (answer["number"],),
        ).fetchone()
    assert kept == (True, True)
    # A fix in another street: the renderer's grant names the inspector's street only.
    with db.connect(zones.map_db) as conn:
        far = conn.execute(
            "SELECT ST_X(ST_Transform(p, 4326)), ST_Y(ST_Transform(p, 4326)) FROM"
            " (SELECT ST_PointOnSurface(g.geom) AS p FROM unit_grid g"
            "  JOIN community c ON c.code = g.community_code"
            "  WHERE c.street_code <> %s ORDER BY g.code LIMIT 1) g",
            (desk.street,),
        ).fetchone()
    if far is not None:
        refused = report(float(far[0]), float(far[1]))
        assert refused.status == 400 and b"outside your streets" in refused.body
        assert b'"error":"outside_streets"' in refused.body.replace(b" ", b"")
    # A fix in no unit grid at all: outside the inspector's streets too, as in one process.
    nowhere = report(lon + 0.5, lat + 0.5)
    assert nowhere.status == 400 and b'"error":"outside_streets"' in nowhere.body.replace(b" ", b"")


class Bureau(NamedTuple):
    person: Person
    other: Person  # of another bureau, to sign what is not theirs
    dept: str  # the bureau's name, as its components name their departments


def _no_float(doc: Any) -> None:
    """No float anywhere in an answer: codes, names, versions and pixels only."""
    assert not isinstance(doc, float), doc
    for v in doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ():
        _no_float(v)


@pytest.fixture(scope="module")
def bureau(zones: Zones, tmp_path_factory: pytest.TempPathFactory) -> Bureau:
    """A bureau of the gateway's accounts whose name is the departments of the map's
    components (they are kept in the renderer's database only), and one of another."""
    from auth import accounts, certs
    from auth.ca_store import CaStore

    from .zones import SECRET

    out = tmp_path_factory.mktemp("zone-bureau")
    with db.connect(zones.map_db) as conn:
        rows = conn.execute(
            """SELECT o.code, o.name FROM organisation o JOIN component c ON c.owner_dept = o.name
               WHERE o.kind = 'bureau' GROUP BY 1, 2 ORDER BY count(*) DESC, 1 LIMIT 2"""
        ).fetchall()
    store = CaStore(zones.gateway_db.pki_dir)
    people = []
    for (code, name), who in zip(rows, ("zone-bureau", "zone-bureau-other"), strict=True):
        with db.transaction(zones.gateway_db) as conn:
            conn.execute(
                "INSERT INTO organisation (code, name, kind) VALUES (%s, %s, 'bureau')",
                (code, name),
            )
            accounts.add(conn, who, ["bureau_handler"], code)
            certs.issue(conn, store, SECRET, who, pki.Kind.PERSON, out)
        signing = _person(zones, out, who, None).signing
        people.append(Person((out / f"{who}.crt", out / f"{who}.key"), signing))
    return Bureau(people[0], people[1], rows[0][1])


def _component_edit(z: Zones, who: Person, code: str, op: str, **params: Any) -> Any:
    action, resource = f"component.{op}", f"component {code}"
    return _post(z, who, f"/components/{code}/{op}", _signed(z, who, action, resource, params))


def test_a_bureau_edits_its_components_through_the_two_zones(zones: Zones, bureau: Bureau) -> None:
    """Listing, detail, a signed edit, a move by a pixel, an addition by a unit grid and a
    retirement: applied in the map database by the renderer, with its own copy of each
    signed action under the gateway's number; the gateway keeps no component and no point."""
    who = bureau.person
    listed = request(zones.gateway_port, "/components", zones.ca, *who.cert)
    assert listed.status == 200, listed.body
    shown = listed.json()
    assert shown["total"] > 0
    assert all(bureau.dept in (c["owner_dept"], c["maintainer_dept"]) for c in shown["components"])
    _no_float(shown)
    c = shown["components"][0]
    edited = _component_edit(zones, who, c["code"], "edit", version=c["version"],
                             set={"state": "damaged"})  # fmt: skip
    assert edited.status == 200, edited.body
    assert edited.json()["state"] == "damaged" and edited.json()["version"] == c["version"] + 1
    _no_float(edited.json())
    stale = _component_edit(zones, who, c["code"], "edit", version=c["version"],
                            set={"state": "intact"})  # fmt: skip
    assert stale.status == 409 and stale.json()["version"] == c["version"] + 1, stale.body
    with db.connect(zones.map_db) as conn:
        state, version = conn.execute(
            "SELECT state, version FROM component WHERE code = %s", (c["code"],)
        ).fetchone()  # type: ignore[misc]
        inside = conn.execute(
            "SELECT h.signed_action, s.signature_sha256 FROM component_history h"
            " JOIN signed_action s ON s.id = h.signed_action WHERE h.code = %s",
            (c["code"],),
        ).fetchall()
    assert (state, version) == ("damaged", c["version"] + 1)
    with db.connect(zones.gateway_db) as conn:
        outside = conn.execute(
            "SELECT id, signature_sha256 FROM signed_action WHERE action = 'component.edit'"
        ).fetchall()
        # Components named by cases are registered here by code, with no point (0034).
        points = conn.execute("SELECT count(*) FROM component WHERE NOT ST_IsEmpty(geom)")
        assert points.fetchone() == (0,)
    assert inside == outside  # the same signed action, by the same number, in both zones
    detail = request(zones.gateway_port, f"/components/{c['code']}", zones.ca, *who.cert)
    assert detail.status == 200 and [h["change"] for h in detail.json()["history"]][-1] == "edit"
    assert detail.json()["cases"] == []  # the cases are the gateway's own
    before = request(zones.gateway_port, f"/components/{c['code']}?as_of=2000-01-01", zones.ca,
                     *who.cert)  # fmt: skip
    assert before.status == 404

    # A move by a pixel of the pictures, an addition in a unit grid, a retirement.
    target = shown["components"][1]["pixel"]  # where another of its components lies
    moved = _component_edit(zones, who, c["code"], "move", version=version,
                            place={"pixel": target})  # fmt: skip
    assert moved.status == 200 and moved.json()["pixel"] == target, moved.body
    point = _component_edit(zones, who, c["code"], "move", version=version + 1,
                            place={"point": [1.0, 2.0]})  # fmt: skip
    assert point.status == 400  # never a point from outside
    params = {"major": c["class"]["major"], "minor": c["class"]["minor"], "name": "新设施（两区）",
              "place": {"grid": moved.json()["grid"]}}  # fmt: skip
    added = _post(zones, who, "/components", _signed(zones, who, "component.add", "components",
                                                     params))  # fmt: skip
    assert added.status == 201, added.body
    new = added.json()
    assert new["owner_dept"] == bureau.dept and new["code"].startswith(zones.map_db.district_code)
    retired = _component_edit(zones, who, new["code"], "retire", version=1, reason="拆除")
    assert retired.status == 200 and retired.json()["in_use"] is False
    with db.connect(zones.map_db) as conn:
        assert conn.execute(
            "SELECT in_use FROM component WHERE code = %s", (new["code"],)
        ).fetchone() == (False,)
    # A class renamed by the install's administrators (kept at the gateway) is shown so.
    with db.connect(zones.gateway_db) as conn:
        conn.execute(
            "UPDATE component_class SET name = name || '（改）' WHERE major = %s AND minor = %s",
            (c["class"]["major"], c["class"]["minor"]),
        )
        conn.commit()
    renamed = request(zones.gateway_port, f"/components/{c['code']}", zones.ca, *who.cert)
    assert renamed.json()["class"]["name"] == c["class"]["name"] + "（改）", renamed.body
    listed = request(zones.gateway_port, f"/components?code={c['code']}", zones.ca, *who.cert)
    assert listed.json()["components"][0]["class"]["name"] == c["class"]["name"] + "（改）"
    # Another bureau's person sees none of it.
    theirs = request(zones.gateway_port, f"/components/{c['code']}", zones.ca,
                     *bureau.other.cert)  # fmt: skip
    assert theirs.status == 404


def test_a_bulk_import_is_checked_and_applied_inside(zones: Zones, bureau: Bureau) -> None:
    """A CSV goes to the renderer, which checks it against the map and keeps it; applied as
    one signed action there. The report speaks of rows, codes and grids only."""
    who = bureau.person
    listed = request(zones.gateway_port, "/components?page=2", zones.ca, *who.cert).json()
    a, b = [c for c in listed["components"] if c["state"] == "intact"][:2]

    def marked_missing() -> bool:  # b's pixel on its 1:500 tile, through the gateway
        p = b["pixel"]
        path = f"/tiles/topo500/{p['level']}/{p['x']}/{p['y']}.png"
        tile = request(zones.gateway_port, path, zones.ca, *who.cert)
        assert tile.status == 200, tile.body
        rgb = Image.open(io.BytesIO(tile.body)).convert("RGB").getpixel((p["col"], p["row"]))
        return all(abs(x - y) <= 24 for x, y in zip(rgb, (0xE0, 0x20, 0x1B), strict=True))

    assert not marked_missing()  # rendered and cached inside now
    csv = f"code,state\n{a['code']},damaged\n{b['code']},missing\n".encode()
    sent = request(zones.gateway_port, "/components/imports?filename=two.csv", zones.ca,
                   *who.cert, method="POST", headers={"Content-Type": "text/csv"},
                   body=csv)  # fmt: skip
    assert sent.status == 201, sent.body
    report = sent.json()
    assert report["ok"] and report["rows"] == 2
    _no_float(report)
    again = request(zones.gateway_port, f"/components/imports/{report['id']}", zones.ca, *who.cert)
    assert again.status == 200 and again.json()["sha256"] == report["sha256"]
    other = request(zones.gateway_port, f"/components/imports/{report['id']}", zones.ca,
                    *bureau.other.cert)  # fmt: skip
    assert other.status == 404  # another person's import
    resource = f"component import {report['id']}"
    wrong = _signed(zones, who, "component.import", resource, {"sha256": "0" * 64})
    refused = _post(zones, who, f"/components/imports/{report['id']}/apply", wrong)
    assert refused.status == 400
    envelope = _signed(zones, who, "component.import", resource, {"sha256": report["sha256"]})
    applied = _post(zones, who, f"/components/imports/{report['id']}/apply", envelope)
    assert applied.status == 200, applied.body
    assert applied.json()["applied"] == 2
    with db.connect(zones.map_db) as conn:
        states = conn.execute(
            "SELECT code, state FROM component WHERE code = ANY(%s) ORDER BY code",
            ([a["code"], b["code"]],),
        ).fetchall()
    assert dict(states) == {a["code"]: "damaged", b["code"]: "missing"}
    # The renderer dropped the tiles around what changed: b's tile shows it missing.
    deadline = time.monotonic() + 10
    while not marked_missing():
        assert time.monotonic() < deadline, "the change is not on its tile"
    with db.connect(zones.gateway_db) as conn:
        assert conn.execute("SELECT count(*) FROM component_import").fetchone() == (0,)


def test_the_renderer_checks_a_relayed_signature_again(
    zones: Zones, bureau: Bureau, tmp_path: Path
) -> None:
    """What the renderer refuses of a component change, whatever the gateway relays: a
    replayed signature, one of another account than the grant's, one for another component,
    a grant for another map or level, and a signing certificate revoked since."""
    from tiles.service import grid_from

    who = bureau.person
    finest = grid_from(zones.map_db).z_of_scale(500)
    grant = grants.Grant("zone-bureau", ("components",), finest, None)
    c = request(zones.gateway_port, "/components?page=3", zones.ca, *who.cert).json()
    c = c["components"][0]
    numbers = itertools.count(990_000)  # numbers the gateway never gave

    def relay(envelope: Any, g: grants.Grant = grant, code: str = c["code"]) -> Any:
        doc = {"own": [bureau.dept], "code": code, "op": "edit", "locale": "zh-CN",
               "action_id": next(numbers), "envelope": envelope}  # fmt: skip
        return _renderer(zones, "/components/change", _grant(zones, g), method="POST",
                         body=json.dumps(doc).encode())  # fmt: skip

    # Bad input is a 400 with its reason, never a 500.
    token = _grant(zones, grant)
    for path, body, words in (
        ("/components/list", b"not json", b"JSON object"),
        ("/components/list", b'{"own": "x", "args": {}, "locale": "zh-CN"}', b"departments"),
        ("/components/detail", b'{"own": ["x"], "code": 7, "locale": "zh-CN"}', b"code is text"),
        ("/components/change", json.dumps({"own": [bureau.dept], "code": c["code"], "op": "edit",
                                           "locale": "zh-CN", "envelope": {}}).encode(),
         b"action_id"),
        ("/components/imports?format=csv&id=../x", b"code\n", b"UUID"),
        ("/components/imports?format=xlsx&id=x", b"code\n", b"csv or gpkg"),
    ):  # fmt: skip
        bad = _renderer(zones, path, token, method="POST", body=body)
        assert bad.status == 400 and words in bad.body, (path, bad.body)

    params = {"version": c["version"], "set": {"name": "改名"}}
    resource = f"component {c['code']}"
    done = _component_edit(zones, who, c["code"], "edit", **params)
    assert done.status == 200, done.body
    with db.connect(zones.gateway_db) as conn:
        row = conn.execute(
            "SELECT payload, signature, certificate FROM signed_action"
            " WHERE resource = %s ORDER BY id DESC LIMIT 1",
            (resource,),
        ).fetchone()
    import base64

    used = {"payload": base64.b64encode(bytes(row[0])).decode(),  # type: ignore[index]
            "signature": base64.b64encode(bytes(row[1])).decode(),  # type: ignore[index]
            "certificate": row[2]}  # type: ignore[index]  # fmt: skip
    replayed = relay(used)
    assert replayed.status == 409 and b"applied already" in replayed.body, replayed.body
    theirs = _signed(zones, bureau.other, "component.edit", resource,
                     {**params, "version": c["version"] + 1})  # fmt: skip
    assert relay(theirs).status == 403  # signed by another account than the grant's
    elsewhere = _signed(zones, who, "component.edit", "component 000", params)
    assert relay(elsewhere).status == 400  # signed for another component
    fresh = _signed(zones, who, "component.edit", resource, {**params, "version": c["version"] + 1})
    assert relay(fresh, grant._replace(products=("topo500",))).status == 403
    assert relay(fresh, grant._replace(level=finest - 1)).status == 403
    with db.connect(zones.map_db) as conn:
        assert conn.execute(
            "SELECT version FROM component WHERE code = %s", (c["code"],)
        ).fetchone() == (c["version"] + 1,)

    # A signing certificate revoked at the gateway: once the CRL reaches the renderer (the
    # gateway pushes it by itself), what it signed is refused there too.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from auth import certs
    from auth.ca_store import CaStore

    from .zones import SECRET

    store = CaStore(zones.gateway_db.pki_dir)
    with db.transaction(zones.gateway_db) as conn:
        issued = certs.issue(conn, store, SECRET, "zone-bureau", pki.Kind.SIGNING, tmp_path)
    key = serialization.load_pem_private_key(issued.files[1].read_bytes(), None)
    second = Person(who.cert, (x509.load_pem_x509_certificate(issued.files[0].read_bytes()), key))
    version = c["version"] + 1
    before = relay(_signed(zones, second, "component.edit", resource,
                           {**params, "version": version}))  # fmt: skip
    assert before.status == 200, before.body  # good until revoked
    with db.transaction(zones.gateway_db) as conn:
        certs.revoke(conn, issued.serial, "key_compromise")
        crl = certs.publish_crl(conn, store, SECRET)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    def renderer_holds() -> int:
        held = CaStore(zones.map_db.pki_dir).crl()
        assert held is not None
        return int(held.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)

    deadline = time.monotonic() + 30
    while renderer_holds() < number:
        assert time.monotonic() < deadline, "the CRL did not reach the renderer"
        time.sleep(0.2)
    after = relay(_signed(zones, second, "component.edit", resource,
                          {**params, "version": version + 1}))  # fmt: skip
    assert after.status == 400 and b"revoked" in after.body, after.body
