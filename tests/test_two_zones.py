"""Two zones as separate processes: the renderer service inside (`citygrid renderer serve`:
the map database, Mapnik, the tile cache) and the gateway outside (`citygrid serve` with
`renderer_url`), each under real gunicorn TLS with its own data directory, settings,
database and PostgreSQL role. The gateway's role cannot even connect to the map database,
and its own database holds no map data, yet it serves tiles; the renderer refuses what the
gateway did not grant, whoever asks."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jwt
import psycopg
import pytest
from PIL import Image

from auth import pki
from mapserver import db
from mapserver.settings import _as_role
from tiles import grant as grants
from tiles.picture import Frame
from tiles.remote import RemoteTiles, RendererRefused

from .tls import REFUSED, request
from .zones import Zones, two_zones


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    with two_zones(tmp_path_factory.mktemp("zones")) as found:
        yield found


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
        for table in ("street", "building", "road_line", "component", "district"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
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
    # Audited by the gateway, in its own database, before each response left.
    with db.connect(zones.gateway_db) as conn:
        found = conn.execute(
            "SELECT count(*) FROM audit_queue WHERE resource = %s AND account = %s",
            (f"tile topo500/{z}/{x}/{y}", "zone-operator"),
        ).fetchone()
    assert found is not None and found[0] == 2


def _renderer(z: Zones, path: str, token: str | None, cert: tuple[Path, Path] | None = None,
              **kw: Any) -> Any:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cert = cert or z.service
    return request(z.renderer_port, path, z.ca, *cert, headers=headers, **kw)


def _sha(cert: Path) -> str:
    from cryptography import x509

    return pki.thumbprint(x509.load_pem_x509_certificates(cert.read_bytes())[0])


def _grant(z: Zones, grant: grants.Grant, cert: Path | None = None, **kw: Any) -> str:
    key = grants.load_private(z.grant_key)
    return grants.sign(key, grant, _sha(cert or z.service[0]), **kw)


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
    # What the renderer does not offer yet is refused through the gateway, never a 500.
    z, x, y = _served_tile(zones)
    answer = _gateway(zones, f"/map/cases?level={z}&x={x}&y={y}&col=128&row=128")
    assert answer.status == 503 and answer.json()["error"] == "not_in_this_zone"


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
