"""The tile interface in one process (tiles.source.LocalTiles) and the renderer grants
(tiles.grant): what the gateway signs and what the renderer accepts."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from PIL import Image

from mapserver.settings import Settings
from tiles import grant as grants
from tiles.cache import etag_of
from tiles.picture import Frame
from tiles.service import TileService
from tiles.source import LocalTiles

GATEWAY_CERT = "ab" * 32  # a service certificate's SHA-256 (hex)


@pytest.fixture(scope="module")
def local(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> LocalTiles:
    s = dataclasses.replace(demo_settings, data_dir=tmp_path_factory.mktemp("source-var"))
    return LocalTiles(TileService.from_settings(s))


def test_local_descriptor_is_the_tile_service_s(local: LocalTiles) -> None:
    for name in ("topo500", "topo2000", "grids"):
        assert local.descriptor(name) == local.service.descriptor(name)
    fine = local.descriptor("topo500", sees=lambda scale: scale == 500)
    assert [lv["scale_denominator"] for lv in fine["levels"]] == [500]
    assert local.scale_of(8) == 500 and local.scale_of(99) is None


def test_local_tile_and_picture(local: LocalTiles) -> None:
    level = local.descriptor("topo500")["levels"][-1]
    z, t = level["level"], level["tiles"]
    x, y = (t["x_min"] + t["x_max"]) // 2, (t["y_min"] + t["y_max"]) // 2
    hit = local.cached("topo500", z, x, y)
    assert hit.data is not None and hit.etag == etag_of(hit.data)
    assert local.files is not None and hit.path.is_relative_to(local.files)
    frame = Frame(z, x * 256 + 10, y * 256 + 10, 300, 200)
    hidden = [(x + 1, y)]  # the frame's right part
    data = local.picture(("topo500",), frame, hidden)
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    with Image.open(io.BytesIO(hit.data)) as opened:
        tile = opened.convert("RGB")
    assert image.size == (300, 200)
    assert all(image.getpixel((c, r)) == (214, 214, 214) for c in (246, 299) for r in (0, 199))

    def near(c: int, r: int) -> bool:
        a, b = image.getpixel((c, r)), tile.getpixel((c + 10, r + 10))
        return max(abs(p - q) for p, q in zip(a, b, strict=True)) <= 14  # type: ignore[arg-type]

    same = [near(c, r) for c in range(0, 240, 12) for r in range(0, 200, 12)]
    assert sum(same) >= 0.9 * len(same)  # the picture lines up with the tile


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return grants.make_keys(tmp_path_factory.mktemp("grant"))


def test_a_grant_round_trips(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert private.stat().st_mode & 0o077 == 0
    asked = grants.Grant("officer", ("topo500",), 8, frozenset({"110108001"}))
    token = grants.sign(grants.load_private(private), asked, GATEWAY_CERT)
    got = grants.verify(grants.load_public(public), token, GATEWAY_CERT)
    assert got == asked
    assert grants.covers(got, ["topo500"], 8)
    assert not grants.covers(got, ["topo500"], 7) and not grants.covers(got, ["grids"], 8)
    whole = grants.Grant("admin", ("topo500", "grids"), 7, None)
    token = grants.sign(grants.load_private(private), whole, GATEWAY_CERT)
    assert grants.verify(grants.load_public(public), token, GATEWAY_CERT).streets is None


@pytest.mark.parametrize(
    "case",
    ["expired", "other_key", "other_cert", "too_long", "tampered", "garbage", "hs256"],
)
def test_bad_grants_are_refused(keys: tuple[Path, Path], tmp_path: Path, case: str) -> None:
    private, public = keys
    key, cert = grants.load_private(private), GATEWAY_CERT
    asked = grants.Grant("officer", ("topo500",), 8, None)
    expected = {
        "expired": "expired", "other_key": "bad_signature", "other_cert": "wrong_binding",
        "too_long": "too_long", "tampered": "bad_signature", "garbage": "malformed",
        "hs256": "algorithm",
    }[case]  # fmt: skip
    if case == "expired":
        token = grants.sign(key, asked, cert, lifetime=60, now=1_000_000.0)
    elif case == "other_key":
        token = grants.sign(grants.load_private(grants.make_keys(tmp_path)[0]), asked, cert)
    elif case == "other_cert":
        token = grants.sign(key, asked, "cd" * 32)
    elif case == "too_long":
        token = grants.sign(key, asked, cert, lifetime=3600)
    elif case == "tampered":  # the street scope widened after signing
        import base64
        import json

        narrow = asked._replace(streets=frozenset({"1"}))
        head, body, sig = grants.sign(key, narrow, cert).split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        claims["streets"] = None
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{body}.{sig}"
    elif case == "garbage":
        token = "not-a-token"
    else:
        import jwt

        token = jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256")
    with pytest.raises(grants.Refused) as refused:
        grants.verify(grants.load_public(public), token, cert)
    assert refused.value.check == expected


def test_the_gateway_reuses_a_grant_for_half_its_life(keys: tuple[Path, Path]) -> None:
    signer = grants.Signer(grants.load_private(keys[0]), GATEWAY_CERT, lifetime=60)
    asked = grants.Grant("officer", ("topo500",), 8, None)
    first = signer.token(asked)
    assert signer.token(asked) == first
    assert signer.token(asked._replace(level=7)) != first


def test_cli_grant_key_keeps_the_pair_in_use(tmp_path: Path) -> None:
    """A second `renderer grant-key` into the same directory replaced the gateway's key in
    use, so the renderer refused every grant until grant.pub was copied again."""
    from click.testing import CliRunner

    from mapserver.cli import main

    out = tmp_path / "grant"
    made = CliRunner().invoke(main, ["renderer", "grant-key", "--out", str(out)])
    assert made.exit_code == 0, made.output
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    again = CliRunner().invoke(main, ["renderer", "grant-key", "--out", str(out)])
    assert again.exit_code == 1, again.output
    assert again.output.startswith("citygrid: error: ") and again.output.count("\n") == 1
    assert "already holds a grant key" in again.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
