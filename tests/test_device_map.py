"""The map picture for a device's small screen (`GET /device/v1/map`): one clean PNG of the
asked size, the case at the centre with its mark where `CityGrid-Marks` says, the
inspector's other tasks marked, no coordinate anywhere, street scope (404 for another
street's case or grid, tiles of other streets covered), 400 for a bad size, ETag and 304
without a render, and nothing asked of the tile service."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image

from mapserver import db
from mapserver.cases import place
from mapserver.device import map_picture
from mapserver.services import services
from tiles import png
from tiles.picture import MASK_RGB, Frame, fit, products_at, render
from tiles.tile_grid import BBox, TileGrid

from .app_client import Install
from .conftest import demo_database
from .test_cases import Desk
from .test_device import Device


class Site:
    def __init__(self, install: Install, out: Path):
        self.install = install
        self.desk = Desk(install)
        self.device = Device(install, "dm-one", out / "one")
        self.other = Device(install, "dm-two", out / "two", "street-002")
        with psycopg.connect(install.settings.database_url) as conn:
            self.grid = self._one(
                conn, "SELECT code FROM unit_grid WHERE code LIKE '110108001%%' ORDER BY code"
            )
            # A unit grid of street 002.
            self.far = self._one(
                conn, "SELECT code FROM unit_grid WHERE code LIKE '110108002%%' ORDER BY code"
            )
            # The unit grids of street 001 nearest street 002, those touching it most first.
            # Which of their pictures hold a tile of street 002 alone depends on where the
            # install's (randomly offset) tile origin puts the tile edges.
            self.edges = [
                str(code)
                for (code,) in conn.execute(
                    "SELECT g.code FROM unit_grid g, street s WHERE s.code = '110108002'"
                    " AND g.code LIKE '110108001%%' ORDER BY ST_Distance(g.geom, s.geom),"
                    " ST_Length(ST_Intersection(ST_Boundary(g.geom), ST_Buffer(s.geom, 1)))"
                    " DESC LIMIT 12"
                ).fetchall()
            ]
            assert self.edges
        self.case = self.record(self.grid, "井盖缺失（地图图片）")
        # Another task 25 m east and 15 m south of the case, placed by a pixel of the map.
        x, y = self.point(self.case)
        pixel = place.pixel_of(services(install.app).tiles().grid, x + 25, y - 15)._asdict()
        self.task = self.record(self.grid, "路灯不亮（地图图片）", {"pixel": pixel})
        self.elsewhere = self.record(self.far, "另一街道的案件")

    @staticmethod
    def _one(conn: psycopg.Connection, query: str, *args: str) -> str:
        row = conn.execute(query + " LIMIT 1", args).fetchone()
        assert row is not None, query
        return str(row[0])

    def record(self, grid: str, description: str, where: dict[str, Any] | None = None) -> str:
        reply = self.desk.record(place=where or {"grid": grid}, description=description)
        assert reply.status_code == 201, reply.get_json()
        return str(reply.get_json()["number"])

    def point(self, number: str) -> tuple[float, float]:
        with psycopg.connect(self.install.settings.database_url) as conn:
            row = conn.execute(
                "SELECT ST_X(geom), ST_Y(geom) FROM city_case WHERE number = %s", (number,)
            ).fetchone()
        assert row is not None
        return float(row[0]), float(row[1])

    def renderer(self):  # type: ignore[no-untyped-def]
        return services(self.install.app).tiles().source


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = demo_database("citygrid_device_map", tmp_path_factory.mktemp("map-var"))
    install = Install(
        settings, tmp_path_factory.mktemp("map-certs"), rate_limit_api="*=100000/hour"
    )
    yield Site(install, tmp_path_factory.mktemp("map-devices"))
    install.close()
    db.drop_database(settings)


def marks(header: str) -> dict[str, tuple[int, int]]:
    out = {}
    for part in header.split(";"):
        number, _, at = part.partition(":")
        col, row = at.split(",")
        out[number] = (int(col), int(row))
    return out


def rgb(data: bytes, at: tuple[int, int]) -> tuple[int, ...]:
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel(at)  # type: ignore[return-value]


def near(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_picture_of_a_case_with_its_marks(site: Site) -> None:
    reply = site.device.client.get(f"/device/v1/map?case={site.case}&w=480&h=640")
    assert reply.status_code == 200 and reply.mimetype == "image/png"
    data = reply.data
    assert Image.open(io.BytesIO(data)).size == (480, 640)
    assert png.is_clean(data) and set(png.chunk_types(data)) <= {k.decode() for k in png.ALLOWED}
    shown = marks(reply.headers["CityGrid-Marks"])
    assert next(iter(shown)) == site.case  # the picture's case first
    # Centred on the case: its mark is at the middle, in the case colour; outside the
    # mark's circle, the map.
    assert shown[site.case] == (240, 320)
    assert near(rgb(data, shown[site.case]), map_picture.CASE_RGB)
    assert not near(rgb(data, (240 + 3 * map_picture.MARK_RADIUS, 320)), map_picture.CASE_RGB)
    # The inspector's other task nearby, in the task colour; another street's case is not.
    assert near(rgb(data, shown[site.task]), map_picture.TASK_RGB)
    assert site.elsewhere not in shown
    # Only the tasks' pixel offsets and numbers: no coordinate in any header.
    head = "\n".join(f"{k}: {v}" for k, v in reply.headers.items())
    for number in (site.case, site.task):
        x, y = site.point(number)
        for value in (x, y):
            assert f"{value:.1f}"[:-2] not in head and str(int(value)) not in head
    assert int(reply.headers["CityGrid-Scale"]) in (500, 1000, 2000, 4000)


def test_picture_by_grid_and_tasks_link(site: Site) -> None:
    reply = site.device.client.get(f"/device/v1/map?grid={site.grid}&w=320&h=240")
    assert reply.status_code == 200 and Image.open(io.BytesIO(reply.data)).size == (320, 240)
    shown = marks(reply.headers["CityGrid-Marks"])
    assert site.case in shown and near(rgb(reply.data, shown[site.case]), map_picture.TASK_RGB)
    tasks = site.device.client.get("/device/v1/tasks").get_json()["tasks"]
    link = next(t["map"] for t in tasks if t["number"] == site.case)
    assert site.device.client.get(link).status_code == 200


def test_another_streets_case_or_grid_is_404(site: Site) -> None:
    for url in (
        f"/device/v1/map?case={site.elsewhere}&w=480&h=640",
        f"/device/v1/map?grid={site.far}&w=480&h=640",
        "/device/v1/map?case=2026-999999&w=480&h=640",
    ):
        reply = site.device.client.get(url)
        assert reply.status_code == 404 and reply.get_json()["error"] == "not_found", url
    theirs = site.other.client.get(f"/device/v1/map?case={site.elsewhere}&w=480&h=640")
    assert theirs.status_code == 200
    # A person certificate is no device, and an operator has no device.map.
    person = site.install.client("dm-one")
    assert person.get(f"/device/v1/map?case={site.case}&w=480&h=640").status_code in (401, 403)
    operator = site.desk.client("operator")
    assert operator.get(f"/device/v1/map?case={site.case}&w=480&h=640").status_code == 403


def test_tiles_of_other_streets_are_covered(site: Site) -> None:
    """A picture at the edge of street 001: where a tile meets street 002 only, the
    street-001 inspector sees the cover; a whole-district role would see the map."""
    seen = []
    for edge in site.edges:
        url = f"/device/v1/map?grid={edge}&w=1080&h=1080"
        data = site.device.client.get(url).data
        image = Image.open(io.BytesIO(data)).convert("RGB")
        covered = sum(n for n, c in image.getcolors(1080 * 1080) or () if c == MASK_RGB)
        assert covered < 1080 * 1080  # never the whole picture: the grid itself is theirs
        seen.append(covered)
        if covered >= 64 * 64:  # a good part of a tile
            break
    else:
        raise AssertionError(f"no picture near street 002 covers a tile: {seen}")
    marked = marks(site.device.client.get(url).headers["CityGrid-Marks"] or "x:0,0")
    assert site.elsewhere not in marked


def test_bad_sizes_are_400_json(site: Site) -> None:
    for query in (
        "w=480",
        "w=119&h=640",
        "w=480&h=1081",
        "w=abc&h=640",
        "w=-480&h=640",
        "w=0480&h=640",
    ):
        reply = site.device.client.get(f"/device/v1/map?case={site.case}&{query}")
        assert reply.status_code == 400 and reply.get_json()["error"] == "invalid", query
    for query in (
        f"case={site.case}&grid={site.grid}&w=480&h=640",
        "w=480&h=640",
        "case=1&w=480&h=640",
    ):
        reply = site.device.client.get(f"/device/v1/map?{query}")
        assert reply.status_code == 400 and reply.is_json, query


def test_etag_304_without_a_render_and_new_marks_a_new_picture(site: Site) -> None:
    url = f"/device/v1/map?case={site.case}&w=400&h=400"
    first = site.device.client.get(url)
    tag = first.headers["ETag"]
    renderer = site.renderer()
    before = renderer.pictures
    again = site.device.client.get(url, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == tag
    assert again.headers["CityGrid-Marks"] == first.headers["CityGrid-Marks"]
    assert renderer.pictures == before  # kept: no render for an unchanged picture
    # A new task at the case's very place: hidden under the case's mark, the pixels stay
    # the same, the marks do not, so neither does the ETag.
    added = site.record(site.grid, "新的待核实任务")
    changed = site.device.client.get(url, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    assert added in marks(changed.headers["CityGrid-Marks"])


def test_the_picture_comes_from_one_request(site: Site) -> None:
    """One GET answers the whole picture with its marks; no tile is rendered or asked."""
    renderer = site.renderer()
    tiles_before, pictures_before = renderer.renders, renderer.pictures
    reply = site.device.client.get(f"/device/v1/map?case={site.case}&w=640&h=480")
    assert reply.status_code == 200 and site.case in marks(reply.headers["CityGrid-Marks"])
    assert renderer.pictures == pictures_before + 1 and renderer.renders == tiles_before
    assert not any(Path(site.install.settings.tile_dir).rglob("*.png"))


# -- the pure parts


class _Flat:
    """A picture source that draws one flat colour (no Mapnik), for the mask."""

    def render_box(self, products, bbox, width, height):  # type: ignore[no-untyped-def]
        out = io.BytesIO()
        Image.new("RGBA", (width, height), (10, 200, 10, 255)).save(out, "PNG")
        return out.getvalue()


def test_fit_frame_pixels_and_products() -> None:
    grid = TileGrid(1000.0, 9000.0, 4)
    holds = BBox(4000.0, 5000.0, 4040.0, 5030.0)  # 40 m × 30 m
    frame = fit(grid, (4020.0, 5015.0), holds, 480, 640, grid.scales)
    # 1:500 is 0.14 m/px: 40 m + margins needs 334 px of 480; it fits at the finest.
    assert grid.level(frame.z).scale == 500
    assert frame.pixel(grid, 4020.0, 5015.0) == (240, 320)
    assert frame.pixel(grid, 4000.0 - 100, 5015.0) is None
    big = BBox(3100.0, 4100.0, 4900.0, 5900.0)  # 1:16000 is 4.48 m/px: 201 + 24 px a side
    assert grid.level(fit(grid, (4000.0, 5000.0), big, 480, 640, grid.scales).z).scale == 16000
    assert fit(grid, (4020.0, 5015.0), holds, 480, 640, (2000, 8000)).z == grid.z_of_scale(2000)
    assert products_at(500) == ("topo500", "grids")
    assert products_at(2000) == ("topo2000", "grids")
    assert products_at(16000) == ("topo2000",)


def test_render_covers_the_tiles_not_shown() -> None:
    grid = TileGrid(0.0, 100000.0, 4)
    frame = Frame(8, 256 * 10 + 100, 256 * 20 + 50, 400, 300)
    hidden = {(11, 20)}
    image = render(_Flat(), grid, frame, ("topo500",), lambda x, y: (x, y) not in hidden)
    left, top, right, bottom = frame.tile_box(11, 20)
    assert (left, top) == (156, 0) and (right, bottom) == (400, 206)
    assert image.getpixel((left, top)) == MASK_RGB and image.getpixel((right - 1, 0)) == MASK_RGB
    assert image.getpixel((left - 1, 0)) == (10, 200, 10)
    assert image.getpixel((left, bottom)) == (10, 200, 10)
