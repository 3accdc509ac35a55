"""Demo district build time per km², at 4 km² and at the 50 km² benchmark size.

Usage: python bench/demo_build.py [--sizes 4,50] [--seed 1]
Builds into its own database (citygrid_bench on CITYGRID_DATABASE_URL's server) and
prints seconds and seconds per km² for each size, and the per-km² ratio against the
smallest size measured in the same run.
"""

# ruff: noqa: E402 - this folder leaves sys.path before the project is imported
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: this folder's names (audit.py, tiles.py) must not hide the project's packages.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import time
from urllib.parse import urlsplit, urlunsplit

from mapserver import db, migrate
from mapserver.demo import build_demo, generate
from mapserver.settings import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,50")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    base = load()
    url = urlunsplit(urlsplit(base.database_url)._replace(path="/citygrid_bench"))
    settings = dataclasses.replace(base, database_url=url)
    db.ensure_database(settings)
    with db.connect(settings) as conn:
        migrate.upgrade(conn, settings)
    print(f"{'km²':>6} {'generate s':>11} {'total s':>8} {'s/km²':>7} {'comp/km²':>9} {'ratio':>6}")
    first = None
    for size in sizes:
        t0 = time.perf_counter()
        generate(size, args.seed, settings.district_code)
        gen = time.perf_counter() - t0
        summary = build_demo(settings, area_km2=size, seed=args.seed, progress=False)
        total = summary["seconds"]
        per = total / size
        first = first or per
        print(
            f"{size:6.1f} {gen:11.2f} {total:8.2f} {per:7.3f} "
            f"{summary['components_per_km2']:9d} {per / first:6.2f}"
        )


if __name__ == "__main__":
    main()
