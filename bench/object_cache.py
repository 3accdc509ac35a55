"""Cached-tile reads from the shared tile store (SeaweedFS over S3) against the disk cache, in
one run, through the same cache interface the tile service calls (`lookup`: bytes + ETag).

The tiles are real: one level of the demo district is seeded to disk, then the same files are
put into a SeaweedFS `weed server -s3` started here on free ports. Each backend then reads
every tile `--rounds` times from one thread; printed: the median and mean per read of each,
and the S3/disk ratio of the medians.

Usage: python bench/object_cache.py [--area-km2 1] [--level 7] [--rounds 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import statistics
import tempfile
import time
from collections import defaultdict

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.seaweed: the SeaweedFS launcher the tests use

from tests.seaweed import weed_s3
from tiles.cache import DiskCache, TileCache
from tiles.object_cache import ObjectCache, TileStoreUnavailable
from tiles.seed import seed

# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from tiles_bench_support import bench_settings  # noqa: E402

BUCKET = "citygrid-tiles"


def timed_reads(
    cache: TileCache, tiles: list[tuple[str, int, int, int]], rounds: int
) -> list[float]:
    out = []
    for _ in range(rounds):
        for t in tiles:
            t0 = time.perf_counter()
            hit = cache.lookup(*t)
            out.append(time.perf_counter() - t0)
            assert hit is not None and hit.data
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area-km2", type=float, default=1.0)
    parser.add_argument("--level", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    settings = bench_settings(args.area_km2, "citygrid_bench_objcache")
    seed(settings, "topo500", [args.level], None, workers=2, progress=False)
    disk = DiskCache(settings.tile_dir)
    tiles = [("topo500", args.level, x, y) for x, y in sorted(disk.cached("topo500", args.level))]
    with tempfile.TemporaryDirectory() as tmp, weed_s3(Path(tmp), BUCKET) as store:
        s3 = ObjectCache(store.url, BUCKET, store.creds)
        deadline = time.monotonic() + 60
        while True:  # the S3 port answers before the filer and volume server take writes
            try:
                s3.check(create=True)
                s3.put("probe", 0, {(0, 0): b"probe"})
                break
            except TileStoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        by_level: dict[int, dict[tuple[int, int], bytes]] = defaultdict(dict)
        for _, z, x, y in tiles:
            data = disk.get("topo500", z, x, y)
            assert data is not None
            by_level[z][(x, y)] = data
        for z, level in by_level.items():
            s3.put("topo500", z, level)
        timed_reads(disk, tiles[:20], 1)  # warm both: page cache, HTTP connection
        timed_reads(s3, tiles[:20], 1)
        on_disk = timed_reads(disk, tiles, args.rounds)
        on_s3 = timed_reads(s3, tiles, args.rounds)
    size = statistics.mean(len(d) for level in by_level.values() for d in level.values())
    print(f"{len(tiles)} cached tiles (level {args.level}, mean {size / 1024:.1f} KiB), "
          f"{args.rounds} rounds, one thread")  # fmt: skip
    for name, times in (("disk", on_disk), ("s3  ", on_s3)):
        print(
            f"  {name}: median {statistics.median(times) * 1e3:.3f} ms,"
            f" mean {statistics.mean(times) * 1e3:.3f} ms per read"
        )
    ratio = statistics.median(on_s3) / statistics.median(on_disk)
    print(f"  s3/disk (medians): {ratio:.1f} x")


if __name__ == "__main__":
    main()
