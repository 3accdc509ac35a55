"""Tile-grid arithmetic against hand computations."""

from __future__ import annotations

import pytest

from tiles.tile_grid import PIXEL_M, SCALES, BBox, TileGrid, TileRange

GRID = TileGrid(430_000.0, 4_440_000.0, top_tiles=4)


def test_levels_hold_1_500_and_1_2000_exactly() -> None:
    by_scale = {lv.scale: lv for lv in GRID.levels}
    assert 500 in by_scale and 2000 in by_scale
    assert by_scale[500].resolution == pytest.approx(0.14)  # 0.28 mm × 500
    assert by_scale[2000].resolution == pytest.approx(0.56)
    assert by_scale[500].tile_span == pytest.approx(35.84)  # 256 px × 0.14 m
    assert [lv.scale for lv in GRID.levels] == list(SCALES)
    assert all(
        b.resolution == pytest.approx(a.resolution / 2)
        for a, b in zip(GRID.levels, GRID.levels[1:], strict=False)
    )
    assert GRID.level(0).matrix_width == 4 and GRID.level(8).matrix_width == 4 * 256
    assert PIXEL_M == 0.00028


def test_tile_bbox_by_hand() -> None:
    # Level 8 (1:500): tile (10, 20) starts 10 × 35.84 m east, 20 × 35.84 m south of origin.
    assert GRID.tile_bbox(8, 10, 20) == pytest.approx(
        BBox(430_358.4, 4_439_247.36, 430_394.24, 4_439_283.2)
    )
    # Level 0 (1:128000): one tile spans 256 × 35.84 m = 9175.04 m.
    assert GRID.tile_bbox(0, 1, 1) == pytest.approx(
        BBox(439_175.04, 4_421_649.92, 448_350.08, 4_430_824.96)
    )


def test_locate_and_ground_round_trip() -> None:
    # 430_358.4 + 100.5 px × 0.14 m, 4_439_283.2 - 37.5 px × 0.14 m
    x, y, col, row = GRID.locate(8, 430_372.47, 4_439_277.95)
    assert (x, y, col, row) == (10, 20, 100, 37)
    gx, gy = GRID.ground(8, 10, 20, 100.5, 37.5)
    assert gx == pytest.approx(430_372.47) and gy == pytest.approx(4_439_277.95)


def test_tile_range_and_metatiles() -> None:
    bbox = GRID.tile_bbox(8, 10, 20)
    assert GRID.tile_range(8, bbox) == TileRange(8, 10, 20, 10, 20)  # edges don't spill over
    wide = BBox(bbox.minx - 1, bbox.miny - 1, bbox.maxx + 1, bbox.maxy + 1)
    assert GRID.tile_range(8, wide) == TileRange(8, 9, 19, 11, 21)
    assert GRID.metatile(8, 17, 9, 8) == (2, 1)
    meta = GRID.metatile_range(8, 2, 1, 8)
    assert meta == TileRange(8, 16, 8, 23, 15) and meta.n_tiles == 64
    edge = GRID.metatile_range(0, 0, 0, 8)  # clipped at the 4 × 4 matrix
    assert edge == TileRange(0, 0, 0, 3, 3)
    assert GRID.metatiles(TileRange(8, 7, 7, 8, 8), 8) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    outside = GRID.tile_range(3, BBox(0, 0, 10, 10))
    assert outside.n_tiles == 0


def test_validity() -> None:
    assert GRID.valid(8, 1023, 1023) and not GRID.valid(8, 1024, 0)
    assert not GRID.valid(9, 0, 0) and not GRID.valid(-1, 0, 0)
    with pytest.raises(ValueError):
        GRID.level(9)
