"""A whole district seeded at 1:500 and 1:2000: the time to make a new district servable.

Builds (once, kept between runs) a demo district of `--area-km2` (50 by default) in a
database of its own, then seeds, from an empty cache, every level of topo2000 (up to 1:2000)
and of topo500 (1:1000 and 1:500) over the whole district with `--workers` processes, and
prints per map: metatiles, tiles written, seconds and tiles/s, and the total. The 1:500 level
alone is also timed with 1 worker on a sample of the district, so the run states its own
per-process baseline: the whole-district seed / (that rate × workers) is the scaling the run
reached.

Usage: python bench/seed_district.py [--area-km2 50] [--workers 2]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import os
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
from tiles_bench_support import bench_settings  # noqa: E402

PRODUCTS = (("topo2000", [0, 1, 2, 3, 4, 5, 6]), ("topo500", [7, 8]))


def tiles_written(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    base = bench_settings(args.area_km2, database=f"citygrid_bench{int(args.area_km2)}")
    print(f"district of {args.area_km2:g} km² ready in {time.perf_counter() - t0:.0f} s")
    load = os.getloadavg()[0]

    # The per-process baseline: 1:500 on a 1 km² sample at the district's centre, 1 worker.
    svc = TileService.from_settings(base)
    assert svc.extent is not None
    cx, cy = (svc.extent.minx + svc.extent.maxx) / 2, (svc.extent.miny + svc.extent.maxy) / 2
    sample = BBox(cx - 500, cy - 500, cx + 500, cy + 500)
    one = dataclasses.replace(base, data_dir=Path(tempfile.mkdtemp()))
    r1 = seed(one, "topo500", [8], area=sample, workers=1, progress=False)
    one_rate = tiles_written(one.data_dir) / r1.seconds
    shutil.rmtree(one.data_dir, ignore_errors=True)
    print(f"baseline: 1:500, 1 km² sample, 1 worker: {one_rate:.0f} tiles/s")

    total_tiles, total_seconds = 0, 0.0
    for product, levels in PRODUCTS:
        run = dataclasses.replace(base, data_dir=Path(tempfile.mkdtemp()))
        r = seed(run, product, levels, workers=args.workers, progress=False)
        n = tiles_written(run.data_dir)
        shutil.rmtree(run.data_dir, ignore_errors=True)
        total_tiles += n
        total_seconds += r.seconds
        print(
            f"{product} levels {levels[0]}–{levels[-1]}: {r.rendered} metatiles, {n} tiles, "
            f"{r.seconds:.0f} s, {n / r.seconds:.0f} tiles/s"
        )
    rate = total_tiles / total_seconds
    print(
        f"whole district ({args.area_km2:g} km², 1:500 and 1:2000, {args.workers} workers): "
        f"{total_tiles} tiles in {total_seconds:.0f} s ({total_seconds / 60:.1f} min), "
        f"{rate:.0f} tiles/s = {rate / (one_rate * args.workers):.2f} × "
        f"{args.workers} × the 1-worker baseline; load average at start {load:.1f}"
    )
    shutil.rmtree(base.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
