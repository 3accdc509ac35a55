"""Tile benchmarks on the 50 km² demo district; every figure is a ratio within one run.

1. Cold rendering: tiles/s through 8×8 metatiles vs the same tiles rendered one by one
   with a plain Mapnik loop (one 256 px render each).
2. Warm hits: tiles/s through the production app in-process (identity, rate limit,
   policy, audit; cache hit) vs reading the same files straight from disk.
3. Seeding: the same area seeded with 1 and with 2 worker processes.

Usage: python bench/tiles.py [--area-km2 50] [--metatiles 4]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the
# `tiles` package; take the folder off.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import shutil
import tempfile
import time

from tiles.seed import seed
from tiles.service import TileService
from tiles.tile_grid import BBox

# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from tiles_bench_support import admin_client, bench_settings  # noqa: E402


def centre_metatiles(svc: TileService, z: int, n: int) -> list[tuple[int, int]]:
    assert svc.extent is not None
    e = svc.extent
    cx, cy = (e.minx + e.maxx) / 2, (e.miny + e.maxy) / 2
    x, y, _, _ = svc.grid.locate(z, cx, cy)
    mx, my = svc.grid.metatile(z, x, y, svc.metatile)
    return [(mx + i % 2, my + i // 2) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=50.0)
    parser.add_argument("--metatiles", type=int, default=4)
    args = parser.parse_args()
    settings = bench_settings(args.area_km2)
    svc = TileService.from_settings(settings)
    z = svc.grid.z_of_scale(500)
    metas = centre_metatiles(svc, z, args.metatiles)
    tiles = [t for m in metas for t in svc.grid.metatile_range(z, *m, svc.metatile).tiles()]
    renderer = svc.source
    renderer.render_tile("topo500", z, *tiles[0])  # type: ignore[attr-defined]  # warm the Map

    t0 = time.perf_counter()
    for mx, my in metas:
        svc.render("topo500", z, mx, my)
    meta_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for x, y in tiles:
        renderer.render_tile("topo500", z, x, y)  # type: ignore[attr-defined]
    plain_s = time.perf_counter() - t0
    meta_rate, plain_rate = len(tiles) / meta_s, len(tiles) / plain_s
    print(
        f"cold 1:500 render: metatiles {meta_rate:.1f} tiles/s, one by one "
        f"{plain_rate:.1f} tiles/s, ratio {meta_rate / plain_rate:.2f}x ({len(tiles)} tiles)"
    )

    client = admin_client(settings)  # the whole gateway: identity, limit, policy, audit
    rounds = 5
    t0 = time.perf_counter()
    for _ in range(rounds):
        for x, y in tiles:
            r = client.get(f"/tiles/topo500/{z}/{x}/{y}.png")
            assert r.status_code == 200
    view_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for x, y in tiles:
            svc.cache.path("topo500", z, x, y).read_bytes()
    disk_s = time.perf_counter() - t0
    n = rounds * len(tiles)
    print(
        f"warm hits: Flask view {n / view_s:.0f} tiles/s, disk {n / disk_s:.0f} tiles/s, "
        f"ratio {disk_s / view_s:.3f} (view/disk throughput)"
    )

    area = svc.grid.range_bbox(svc.grid.metatile_range(z, *metas[0], svc.metatile))
    w, h = area.maxx - area.minx, area.maxy - area.miny
    area = BBox(area.minx + 1, area.miny - 5 * h + 1, area.maxx + 3 * w - 1, area.maxy - 1)
    times = {}
    for workers in (1, 2):
        fresh = dataclasses.replace(settings, data_dir=Path(tempfile.mkdtemp()))
        result = seed(fresh, "topo500", [z], area, workers=workers, progress=False)
        times[workers] = result.seconds
        print(f"seed {result.rendered} metatiles with {workers} worker(s): {result.seconds:.1f} s")
        shutil.rmtree(fresh.data_dir, ignore_errors=True)
    print(f"seed speed-up 2 vs 1 workers: {times[1] / times[2]:.2f}x")
    shutil.rmtree(settings.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
