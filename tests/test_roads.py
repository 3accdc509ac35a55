"""Roads at large scales: a centre-line without a surface is drawn as a road of its width,
one label per road name however many segments it has, label size by road class.
Real Mapnik renders over a database of its own, checked by pixels."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from PIL import Image

from mapserver import db
from mapserver.settings import Settings
from tiles.origin import install_grid
from tiles.renderer import MapnikRenderer
from tiles.service import proj_string
from tiles.style import palette
from tiles.tile_grid import TILE_PX, BBox

from .conftest import empty_database

X0, Y0 = 441_000.0, 4_428_000.0


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)])


def _line(points: list[tuple[float, float]], srid: int) -> str:
    coords = ", ".join(f"{X0 + x} {Y0 + y}" for x, y in points)
    return f"ST_Multi(ST_GeomFromText('LINESTRING({coords})', {srid}))"


@pytest.fixture(scope="module")
def roads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    s = empty_database("citygrid_roads", tmp_path_factory.mktemp("roads-var"))
    with db.transaction(s) as conn:
        conn.execute(
            "INSERT INTO district (code, name, geom) VALUES ('110108', '海淀区',"
            f" ST_Multi(ST_MakeEnvelope({X0}, {Y0}, {X0 + 600}, {Y0 + 600}, {s.srid})))"
        )
        # 长安路: six 25 m segments of one branch road 10 m wide along y = 100, no surface
        srid = s.srid
        for i in range(6):
            conn.execute(
                "INSERT INTO road_line (scale, name, kind, width_m, geom) VALUES"
                f" (500, '长安路', 'branch', 10, {_line([(i * 25, 100), (i * 25 + 25, 100)], srid)})"  # noqa: E501
            )
        # 复兴路: a road with its surface (4 m) whose centre-line says 10 m: the surface wins
        conn.execute(
            "INSERT INTO road_line (scale, name, kind, width_m, geom) VALUES"
            f" (500, '', 'branch', 10, {_line([(0, 300), (150, 300)], s.srid)})"
        )
        conn.execute(
            "INSERT INTO road_surface (scale, kind, geom) VALUES (500, 'branch',"
            f" ST_Multi(ST_MakeEnvelope({X0}, {Y0 + 298}, {X0 + 150}, {Y0 + 302}, {s.srid})))"
        )
        # an arterial and a lane, one segment each, far apart: label sizes by class
        conn.execute(
            "INSERT INTO road_line (scale, name, kind, width_m, geom) VALUES"
            f" (500, '大道大道', 'arterial', 30, {_line([(0, 450), (300, 450)], s.srid)}),"
            f" (500, '小巷小巷', 'lane', 4, {_line([(0, 550), (300, 550)], s.srid)})"
        )
    yield s
    db.drop_database(s)


class Picture:
    """A rendered block of tiles and where a ground point falls in it."""

    def __init__(self, settings: Settings, product: str, scale: int, box: BBox):
        with psycopg.connect(settings.database_url) as conn:
            srs = proj_string(conn, settings.srid)
        self.grid = install_grid(settings)
        renderer = MapnikRenderer(self.grid, srs, settings.database_url, settings.srid)
        self.z = self.grid.z_of_scale(scale)
        self.rng = self.grid.tile_range(self.z, box)
        tiles = renderer.render_range(product, self.rng)
        image = Image.new("RGB", (self.rng.width * TILE_PX, self.rng.height * TILE_PX))
        for (tx, ty), data in tiles.items():
            tile = Image.open(io.BytesIO(data)).convert("RGB")
            image.paste(tile, ((tx - self.rng.x0) * TILE_PX, (ty - self.rng.y0) * TILE_PX))
        self.pixels = np.asarray(image).astype(int)

    def at(self, x: float, y: float) -> tuple[int, int]:
        """(column, row) in the picture of ground point (X0 + x, Y0 + y)."""
        tx, ty, col, row = self.grid.locate(self.z, X0 + x, Y0 + y)
        return (tx - self.rng.x0) * TILE_PX + col, (ty - self.rng.y0) * TILE_PX + row

    def near(self, x: float, y: float, colour: str, tol: int = 6) -> bool:
        c, r = self.at(x, y)
        return bool((abs(self.pixels[r, c] - _rgb(colour)) <= tol).all())


@pytest.fixture(scope="module")
def at500(roads: Settings) -> Picture:
    return Picture(roads, "topo500", 500, BBox(X0 - 20, Y0 + 50, X0 + 320, Y0 + 580))


def test_centre_line_drawn_as_a_road_of_its_width(at500: Picture) -> None:
    p = palette()
    # 3.5 m off the centre-line is inside the 10 m road (the label sits on the line)
    for x in (12.5, 62.5, 112.5, 140.0):
        assert at500.near(x, 103.5, p["road_fill"], 3), x
        assert at500.near(x, 96.5, p["road_fill"], 3), x
    assert at500.near(60, 120, p["paper"], 3)
    # across the road: 10 m / 0.14 m = 71 px of fill between two casing edges
    col, row = at500.at(137.0, 100)
    column = at500.pixels[row - 60 : row + 60, col]
    fill = (abs(column - _rgb(p["road_fill"])) <= 3).all(axis=1)
    assert abs(int(fill.sum()) - 10 / 0.14) <= 3, int(fill.sum())
    # a casing on each side: darker than both the paper and the fill
    casing = column.sum(axis=1) < _rgb(p["paper"]).sum() - 60
    assert casing[: 60 - 30].any() and casing[60 + 30 :].any()
    assert not casing[60 - 30 : 60 + 30].any()


def test_a_surface_wins_over_its_centre_line(at500: Picture) -> None:
    p = palette()
    assert at500.near(75, 300.5, p["road_fill"], 3)
    # 3.5 m off the line is outside the 4 m surface: paper, not a 10 m road
    assert at500.near(75, 303.5, p["paper"], 3)
    assert at500.near(75, 296.5, p["paper"], 3)


def _label_runs(pic: Picture, y: float, x0: float, x1: float, half_px: int = 14) -> list[int]:
    """Widths of the runs of columns holding label ink along a horizontal road."""
    ink = _rgb(palette()["road_label"])
    c0, row = pic.at(x0, y)
    c1, _ = pic.at(x1, y)
    band = pic.pixels[row - half_px : row + half_px, c0:c1]
    inked = (abs(band - ink) <= 40).all(axis=2).any(axis=0)
    runs, width, gap = [], 0, 0
    for on in inked:
        if on:
            width, gap = width + 1 + (gap if width else 0), 0
        elif width:
            gap += 1
            if gap > 25:  # wider than the space between two glyphs: a new label
                runs.append(width)
                width, gap = 0, 0
    if width:
        runs.append(width)
    return runs


def test_one_label_per_road_name(at500: Picture) -> None:
    # six segments, 150 m = 1071 px at 1:500: one label, not one per segment
    runs = _label_runs(at500, 100, -10, 160)
    assert len(runs) == 1, runs
    assert 30 <= runs[0] <= 80  # three glyphs of 13 px


def test_label_size_by_road_class(at500: Picture) -> None:
    arterial = _label_runs(at500, 450, 0, 300, 20)[0]
    lane = _label_runs(at500, 550, 0, 300, 20)[0]
    # four glyphs each: 16 px bold against 11 px
    assert arterial > lane * 1.25, (arterial, lane)


def test_topo2000_draws_centre_lines_too(roads: Settings) -> None:
    with db.transaction(roads) as conn:
        conn.execute(
            "INSERT INTO road_line (scale, name, kind, width_m, geom) VALUES"
            f" (2000, '', 'secondary', 20, {_line([(0, 200), (300, 200)], roads.srid)})"
        )
    try:
        pic = Picture(roads, "topo2000", 2000, BBox(X0 + 50, Y0 + 150, X0 + 250, Y0 + 250))
        p = palette()
        assert pic.near(150, 205, p["road_major_fill"], 4)  # 5 m off the line: 20 m road
        assert pic.near(150, 225, p["paper"], 4)
    finally:
        with db.transaction(roads) as conn:
            conn.execute("DELETE FROM road_line WHERE scale = 2000")
