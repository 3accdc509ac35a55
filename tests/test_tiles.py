"""Rendering, cache, locking, invalidation, seeding and serving on the demo district."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from PIL import Image

from mapserver.settings import Settings
from tiles import png
from tiles.service import TileService
from tiles.style import palette
from tiles.tile_grid import BBox

from .app_client import Install


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _near(a: tuple[int, ...], b: tuple[int, ...], tol: int = 14) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a[:3], b[:3], strict=True))


def _pixel(data: bytes, col: int, row: int) -> tuple[int, ...]:
    return Image.open(io.BytesIO(data)).convert("RGBA").getpixel((col, row))  # type: ignore[return-value]


@pytest.fixture
def tile_settings(demo_settings: Settings, tmp_path: Path) -> Settings:
    """The demo database with an empty cache of its own."""
    return dataclasses.replace(demo_settings, data_dir=tmp_path / "var")


@pytest.fixture
def svc(tile_settings: Settings) -> TileService:
    return TileService.from_settings(tile_settings)


def _building_point(conn: psycopg.Connection) -> tuple[float, float, float, float]:
    """A point well inside a 1:500 building, away from labels and grid lines; with the
    building's width and height."""
    row = conn.execute(
        """SELECT x, y, w, h FROM (
             SELECT ST_XMin(b.geom) + 0.2 * (ST_XMax(b.geom) - ST_XMin(b.geom)) AS x,
                    ST_YMin(b.geom) + 0.25 * (ST_YMax(b.geom) - ST_YMin(b.geom)) AS y,
                    ST_XMax(b.geom) - ST_XMin(b.geom) AS w, ST_YMax(b.geom) - ST_YMin(b.geom) AS h,
                    b.geom
             FROM building b WHERE b.scale = 500 AND ST_Area(b.geom) > 400 ORDER BY b.id) s
           WHERE NOT EXISTS (SELECT 1 FROM unit_grid g
                             WHERE ST_DWithin(ST_Boundary(g.geom),
                                              ST_SetSRID(ST_MakePoint(x, y), 4548), 1.5))
             AND NOT EXISTS (SELECT 1 FROM component c
                             WHERE ST_DWithin(c.geom, ST_SetSRID(ST_MakePoint(x, y), 4548), 2))
           LIMIT 1"""
    ).fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


def test_building_at_the_pixel_the_grid_says(svc: TileService, demo_conn) -> None:  # type: ignore[no-untyped-def]
    x, y, width, _ = _building_point(demo_conn)
    z = svc.grid.z_of_scale(500)
    tx, ty, col, row = svc.grid.locate(z, x, y)
    data = svc.tile("topo500", z, tx, ty)
    fill = _rgb(palette()["building_fill"])
    assert _near(_pixel(data, col, row), fill)
    # 1 m west of the building's west wall, on the same row, is not building.
    tx2, ty2, col2, row2 = svc.grid.locate(z, x - 0.2 * width - 1.0, y)
    assert not _near(_pixel(svc.tile("topo500", z, tx2, ty2), col2, row2), fill)


def test_scale_one_pixel_is_14_cm(svc: TileService, demo_conn) -> None:  # type: ignore[no-untyped-def]
    """At 1:500 a building W metres wide covers W / 0.14 pixels of its fill colour."""
    x, y, width, _ = _building_point(demo_conn)
    z = svc.grid.z_of_scale(500)
    assert svc.grid.level(z).resolution == pytest.approx(0.14)
    x0 = x - 0.2 * width
    rng = svc.grid.tile_range(z, BBox(x0 - 5, y - 1, x0 + width + 5, y + 1))
    image = Image.new("RGBA", (rng.width * 256, rng.height * 256))
    for tx, ty in rng.tiles():
        tile = Image.open(io.BytesIO(svc.tile("topo500", z, tx, ty))).convert("RGBA")
        image.paste(tile, ((tx - rng.x0) * 256, (ty - rng.y0) * 256))
    _, ty, _, row = svc.grid.locate(z, x, y)
    fill = _rgb(palette()["building_fill"])
    line = [image.getpixel((c, (ty - rng.y0) * 256 + row)) for c in range(image.width)]
    run = max_run = 0
    for p in line:
        run = run + 1 if _near(p, fill) else 0  # type: ignore[arg-type]
        max_run = max(max_run, run)
    # The outline (1 px each side) is drawn in another colour.
    assert abs(max_run - width / 0.14) <= 4


def _without_road_labels(svc: TileService) -> TileService:
    from tiles.renderer import MapnikRenderer
    from tiles.style import Style

    src = svc.source
    assert isinstance(src, MapnikRenderer)
    plain = MapnikRenderer(src.grid, src.srs, src.database_url, src.srid, src.metatile)
    style = src.style("topo500")
    names = re.findall(r'<Layer name="([^"]+)"', style.xml)
    tables = tuple(t for n, t in zip(names, style.tables, strict=True) if n != "road_line")
    xml = re.sub(r'<Layer name="road_line".*?</Layer>', "", style.xml, flags=re.S)
    plain._styles["topo500"] = Style(xml, tables)
    return TileService(svc.grid, svc.cache, svc.locks, plain, None, svc.metatile)


def test_chinese_road_names_are_drawn(svc: TileService, demo_conn) -> None:  # type: ignore[no-untyped-def]
    name, x, y = demo_conn.execute(
        """SELECT name, ST_X(ST_LineInterpolatePoint(ST_GeometryN(geom, 1), 0.5)),
                  ST_Y(ST_LineInterpolatePoint(ST_GeometryN(geom, 1), 0.5))
           FROM road_line WHERE scale = 500 AND kind = 'arterial' ORDER BY id LIMIT 1"""
    ).fetchone()
    assert re.search(r"[\u4e00-\u9fff]", name)
    z = svc.grid.z_of_scale(1000)
    tx, ty, _, _ = svc.grid.locate(z, x, y)
    mx, my = svc.grid.metatile(z, tx, ty, svc.metatile)
    with_labels = svc.source.render_metatile("topo500", z, mx, my)
    plain = _without_road_labels(svc).source.render_metatile("topo500", z, mx, my)
    differing = 0
    for key, data in with_labels.items():
        a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        b = np.asarray(Image.open(io.BytesIO(plain[key])).convert("RGB"))
        differing += int((a != b).any(axis=2).sum())
    # Each CJK glyph at 14 px draws dozens of pixels; the labels of the metatile many hundreds.
    assert differing > 300


@pytest.fixture
def seeded(tile_settings: Settings, demo_conn) -> tuple[Settings, str]:  # type: ignore[no-untyped-def]
    from tiles.seed import seed

    grid = demo_conn.execute(
        "SELECT code FROM unit_grid ORDER BY code LIMIT 1 OFFSET 40"
    ).fetchone()[0]
    bbox = BBox(
        *demo_conn.execute(
            "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM unit_grid"
            " WHERE code = %s",
            (grid,),
        ).fetchone()
    )
    for product, levels in (
        ("topo500", [7, 8]),
        ("topo2000", [5, 6]),
        ("grids", [6, 7]),
        ("components", [8]),
    ):
        seed(tile_settings, product, levels, bbox, workers=2, progress=False)
    return tile_settings, grid


def test_chunk_whitelist_over_a_seeded_area(seeded: tuple[Settings, str]) -> None:
    settings, _ = seeded
    files = list(Path(settings.tile_dir).rglob("*"))
    tiles = [f for f in files if f.is_file()]
    assert len(tiles) > 100
    for f in tiles:
        assert f.suffix == ".png" and not f.name.startswith("."), f  # no world files, sidecars
        data = f.read_bytes()
        assert png.chunk_types(data)[0] == "IHDR"
        assert set(png.chunk_types(data)) <= {"IHDR", "PLTE", "tRNS", "IDAT", "IEND"}, f
        assert png.is_clean(data)


def test_strip_removes_metadata_chunks() -> None:
    buf = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("coords", "441000,4428000")
    Image.new("P", (4, 4)).save(buf, "PNG", pnginfo=info, dpi=(96, 96))
    dirty = buf.getvalue()
    assert not png.is_clean(dirty) and "tEXt" in png.chunk_types(dirty)
    clean = png.strip(dirty)
    assert png.is_clean(clean) and b"4428000" not in clean
    assert Image.open(io.BytesIO(clean)).size == (4, 4)


def test_sixteen_requests_one_render(svc: TileService, demo_conn) -> None:  # type: ignore[no-untyped-def]
    x, y, _, _ = _building_point(demo_conn)
    z = svc.grid.z_of_scale(500)
    tx, ty, _, _ = svc.grid.locate(z, x, y)
    mx, my = svc.grid.metatile(z, tx, ty, svc.metatile)
    meta = svc.grid.metatile_range(z, mx, my, svc.metatile).tiles()
    barrier = threading.Barrier(16)
    results: list[bytes] = []

    def fetch(i: int) -> None:
        barrier.wait()
        results.append(svc.tile("topo500", z, *meta[i % len(meta)]))

    before = svc.source.renders  # type: ignore[attr-defined]
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(png.is_clean(r) for r in results)
    assert svc.source.renders - before == 1  # type: ignore[attr-defined]


def test_invalidation_rerenders_only_the_area(
    svc: TileService, tile_settings: Settings, demo_conn
) -> None:  # type: ignore[no-untyped-def]
    import tiles as tiles_pkg

    code, x, y = demo_conn.execute(
        """SELECT c.code, ST_X(c.geom), ST_Y(c.geom) FROM component c
           WHERE c.state = 'intact' AND c.major = '01' AND c.minor = '01'
             AND NOT EXISTS (SELECT 1 FROM component o WHERE o.code <> c.code
                             AND ST_DWithin(o.geom, c.geom, 4))
           ORDER BY c.code LIMIT 1"""
    ).fetchone()
    demo_conn.rollback()
    z = svc.grid.z_of_scale(500)
    tx, ty, col, row = svc.grid.locate(z, x, y)
    before = svc.tile("components", z, tx, ty)
    served = svc.served_range(svc.product("components"), z)
    assert served is not None
    far = (served.x0 if tx - served.x0 > 16 else served.x1, ty)
    assert abs(far[0] - tx) > 16
    far_bytes = svc.tile("components", z, *far)
    far_path = svc.cache.path("components", z, *far)
    far_mtime = far_path.stat().st_mtime_ns
    red = _rgb(palette()["missing"])
    assert not _near(_pixel(before, col, row), red)
    with psycopg.connect(tile_settings.database_url, autocommit=True) as c:
        c.execute("UPDATE component SET state = 'missing' WHERE code = %s", (code,))
    try:
        assert svc.tile("components", z, tx, ty) == before  # still the cached picture
        dropped = tiles_pkg.invalidate(tile_settings, BBox(x - 1, y - 1, x + 1, y + 1))
        assert dropped >= 1
        renders = svc.source.renders  # type: ignore[attr-defined]
        after = svc.tile("components", z, tx, ty)
        assert svc.source.renders == renders + 1  # type: ignore[attr-defined]
        assert _near(_pixel(after, col, row), red)
        assert svc.tile("components", z, *far) == far_bytes
        assert far_path.stat().st_mtime_ns == far_mtime
    finally:
        with psycopg.connect(tile_settings.database_url, autocommit=True) as c:
            c.execute("UPDATE component SET state = 'intact' WHERE code = %s", (code,))


def test_seeding_resumes_after_interruption(tile_settings: Settings, demo_conn) -> None:  # type: ignore[no-untyped-def]
    from tiles.seed import plan, seed

    street = demo_conn.execute("SELECT code FROM street ORDER BY code LIMIT 1").fetchone()[0]
    env = {
        **os.environ,
        "CITYGRID_DATABASE_URL": tile_settings.database_url,
        "CITYGRID_DATA_DIR": str(tile_settings.data_dir),
    }
    cmd = [
        sys.executable,
        "-m",
        "mapserver.cli",
        "seed",
        "--map",
        "topo500",
        "--levels",
        "8",
        "--street",
        street,
        "--workers",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    svc = TileService.from_settings(tile_settings)
    bbox = BBox(
        *demo_conn.execute(
            "SELECT ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM street"
            " WHERE code = %s",
            (street,),
        ).fetchone()
    )
    jobs = plan(svc, "topo500", [8], bbox)
    assert len(jobs) >= 4
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(svc.metatile_fresh(*j) for j in jobs) >= 2:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    fresh = sum(svc.metatile_fresh(*j) for j in jobs)
    assert 2 <= fresh < len(jobs), "the seed must have been stopped part-way"
    result = seed(tile_settings, "topo500", [8], bbox, workers=2, progress=False)
    assert result.rendered == len(jobs) - fresh
    assert result.skipped == fresh
    again = seed(tile_settings, "topo500", [8], bbox, workers=2, progress=False)
    assert again.rendered == 0 and again.skipped == len(jobs)


@pytest.fixture(scope="module")
def client(demo_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    """The production app on the demo district, asked by an administrator (every map at
    every scale)."""
    install = Install(
        demo_settings,
        tmp_path_factory.mktemp("tiles-certs"),
        data_dir=tmp_path_factory.mktemp("tiles-var"),
    )
    install.account("tiles-admin", ["admin"])
    yield install.client("tiles-admin")
    install.close()


def _served_tile(client) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    desc = client.get("/tiles/topo2000").get_json()
    level = desc["levels"][-1]
    t = level["tiles"]
    return level["level"], (t["x_min"] + t["x_max"]) // 2, (t["y_min"] + t["y_max"]) // 2


def test_descriptor_has_no_coordinates(client, tile_settings: Settings) -> None:  # type: ignore[no-untyped-def]
    from tiles.service import grid_from

    grid = grid_from(tile_settings)  # the install's secret origin
    response = client.get("/tiles/topo500")
    assert response.status_code == 200
    desc = response.get_json()
    assert [lv["scale_denominator"] for lv in desc["levels"]] == [1000, 500]
    text = json.dumps(desc)
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]
    assert max(numbers) < 100_000  # tile indices and scales only: no easting or northing
    assert "srs" not in text.lower() and "crs" not in text.lower() and "4548" not in text
    assert "origin" not in text and "bbox" not in text
    assert all(abs(n - grid.origin_x) > 1000 and abs(n - grid.origin_y) > 1000 for n in numbers)
    assert str(int(grid.origin_x)) not in text and str(int(grid.origin_y)) not in text


def test_tile_caching_headers(client) -> None:  # type: ignore[no-untyped-def]
    z, x, y = _served_tile(client)
    first = client.get(f"/tiles/topo2000/{z}/{x}/{y}.png")
    assert first.status_code == 200 and first.mimetype == "image/png"
    assert first.headers["Cache-Control"].startswith("private")
    etag = first.headers["ETag"]
    again = client.get(f"/tiles/topo2000/{z}/{x}/{y}.png", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b""
    for name, value in first.headers.items():
        # Long numbers only where they are hashes, ids or the rate-limit reset time.
        allowed = {"ETag", "X-Request-Id", "X-RateLimit-Reset", "Strict-Transport-Security"}
        assert not re.search(r"\d{6,}", value) or name in allowed, (name, value)
        assert "proj" not in value.lower() and "epsg" not in value.lower()


def test_empty_area_gives_a_valid_empty_tile(client) -> None:  # type: ignore[no-untyped-def]
    desc = client.get("/tiles/components").get_json()
    level = desc["levels"][-1]
    t = level["tiles"]
    response = client.get(f"/tiles/components/{level['level']}/{t['x_min']}/{t['y_min']}.png")
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.data))
    assert image.size == (256, 256)
    assert image.convert("RGBA").getextrema()[3] == (0, 0)  # fully transparent
    assert png.is_clean(response.data)


def test_malformed_tile_paths_are_4xx_json(client) -> None:  # type: ignore[no-untyped-def]
    z, x, y = _served_tile(client)
    paths = [
        "/tiles/nosuchmap",
        "/tiles/nosuchmap/1/1/1.png",
        "/tiles/TOPO500/1/1/1.png",
        f"/tiles/topo2000/{z}/{x}/{y}.jpg",
        f"/tiles/topo2000/{z}/{x}/{y}",
        f"/tiles/topo2000/{z}/{x}",
        f"/tiles/topo2000/a/{x}/{y}.png",
        f"/tiles/topo2000/{z}/b/{y}.png",
        f"/tiles/topo2000/{z}/{x}/c.png",
        f"/tiles/topo2000/-1/{x}/{y}.png",
        f"/tiles/topo2000/{z}/-{x}/{y}.png",
        f"/tiles/topo2000/{z}/{x}/{y}.5.png",
        f"/tiles/topo2000/{z}/{x}.0/{y}.png",
        f"/tiles/topo2000/{z}/0x1/{y}.png",
        "/tiles/topo2000/99/0/0.png",
        "/tiles/topo2000/8/0/0.png",  # topo2000 has no level 8
        f"/tiles/topo2000/{z}/99999999/{y}.png",
        f"/tiles/topo2000/{z}/{x}/99999999.png",
        f"/tiles/topo2000/{z}/0/0.png",
        "/tiles/../../etc/passwd",
        "/tiles/topo2000/../../x",
        f"/tiles/topo2000/{z}/%2e%2e/{y}.png",
        f"/tiles/topo2000/{z}/{x}/..%2f..%2fpasswd",
        f"/tiles/topo2000/{z}/{x}/{y}.png/extra",
        f"/tiles/topo2000/{z}/{x:08d}/{y}.png",
        f"/tiles/topo2000/ {z}/{x}/{y}.png",
        "/tiles/",
        "/tiles/topo2000/%00/1/1.png",
    ]
    for path in paths:
        response = client.get(path)
        assert 400 <= response.status_code < 500, (path, response.status_code)
        assert response.is_json, path
        body = response.get_json()
        assert set(body) == {"error", "message"}, path
        assert "Traceback" not in body["message"], path
        assert not re.search(r"/(tmp|work|var|etc|usr|root|home)\b|\.py\b", body["message"]), body
    assert client.post(f"/tiles/topo2000/{z}/{x}/{y}.png").status_code == 405


def test_tiles_cli(tile_settings: Settings, demo_conn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from mapserver.cli import main

    env = {
        "CITYGRID_DATABASE_URL": tile_settings.database_url,
        "CITYGRID_DATA_DIR": str(tile_settings.data_dir),
    }
    svc = TileService.from_settings(tile_settings)
    grid_code, x, y = demo_conn.execute(
        "SELECT code, ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom))"
        " FROM unit_grid ORDER BY code LIMIT 1"
    ).fetchone()
    z = svc.grid.z_of_scale(500)
    tx, ty, _, _ = svc.grid.locate(z, x, y)
    out = tmp_path / "t.png"
    rendered = CliRunner().invoke(
        main, ["tiles", "render", "topo500", str(z), str(tx), str(ty), "-o", str(out)], env=env
    )
    assert rendered.exit_code == 0, rendered.output
    assert png.is_clean(out.read_bytes())
    expired = CliRunner().invoke(main, ["tiles", "expire", "--grid", grid_code], env=env)
    assert expired.exit_code == 0 and int(expired.output.split()[1]) >= 1
    render = ["tiles", "render", "topo500", str(z), str(tx), str(ty), "-o", str(out)]
    assert CliRunner().invoke(main, render, env=env).exit_code == 0
    # An edge tile is served whole: a box on its part beyond the margin still drops it.
    served = svc.served_range(svc.product("topo500"), z)
    assert served is not None and svc.extent is not None
    ex, ey = served.x1, served.y1
    corner = svc.grid.ground(z, ex, ey, 255.5, 255.5)
    assert not svc.extent.intersects(BBox(corner[0], corner[1], corner[0], corner[1]))
    render = ["tiles", "render", "topo500", str(z), str(ex), str(ey), "-o", str(out)]
    assert CliRunner().invoke(main, render, env=env).exit_code == 0
    assert svc.cache.has("topo500", z, ex, ey)
    fringe = f"{corner[0] - 0.1},{corner[1] - 0.1},{corner[0] + 0.1},{corner[1] + 0.1}"
    expired = CliRunner().invoke(main, ["tiles", "expire", "--bbox", fringe], env=env)
    assert expired.exit_code == 0 and int(expired.output.split()[1]) >= 1, expired.output
    assert not svc.cache.has("topo500", z, ex, ey)
    # A box far beyond the district (a whole CRS zone) was walked metatile by metatile over
    # the tile matrix for hours; only the part where tiles are served is walked now.
    everything = ["tiles", "expire", "--bbox", "-1e300,-1e300,1e300,1e300"]
    expired = CliRunner().invoke(main, everything, env=env)
    assert expired.exit_code == 0 and int(expired.output.split()[1]) >= 1, expired.output
    for args in (
        ["tiles", "expire", "--bbox", "1,2,3"],
        ["tiles", "expire", "--bbox", "-inf,0,inf,1"],  # a traceback (OverflowError)
        ["seed", "--map", "topo500", "--levels", "7", "--bbox", "0,0,nan,1"],
        ["tiles", "expire"],
        ["tiles", "render", "nomap", "1", "1", "1", "-o", str(out)],
        ["seed", "--map", "topo500", "--levels", "x-y"],
    ):
        bad = CliRunner().invoke(main, args, env=env)
        assert bad.exit_code != 0 and bad.output.startswith("citygrid: error: "), args
