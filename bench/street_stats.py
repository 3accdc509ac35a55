"""Street statistics benchmark: `street_stats.report` (the query behind GET /street/stats)
over N generated cases of the 1 km² demo district, for one street office's month and for
every street's year, and the XLSX export of each.

The cases are generated with SQL (generate_series) into a database of its own, dropped
afterwards, with triggers off during the bulk load: a case every hour of the past year,
spread over the unit grids and nine event classes, a third closed a day after creation, two
thirds still open (the worst case for the period filter, which skips cases closed before
the period), each with a filing event, one in seven of them late.

Usage: python bench/street_stats.py [--cases 50000] [--runs 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import tempfile
import time
from zoneinfo import ZoneInfo

import psycopg

from mapserver import db, migrate
from mapserver.cases import street_stats
from mapserver.demo import build_demo
from mapserver.settings import Settings

_CASES = """
INSERT INTO city_case (number, district, kind, major, minor, source, state, description, geom,
    grid_code, community_code, street_code, reporter, created_at, stage, stage_deadline,
    closed_at)
SELECT '2026-' || lpad(i::text, 6, '0'), '110108', 'event', '01',
    lpad((1 + i %% 9)::text, 2, '0'), 'phone',
    CASE WHEN i %% 3 = 0 THEN 'closed' ELSE 'handling' END, 'bench', g.geom, g.code,
    g.community_code, g.street_code, 'bench', now() - make_interval(hours => i %% 8760),
    CASE WHEN i %% 3 = 0 THEN NULL ELSE 'handle' END,
    now() - make_interval(hours => i %% 8760) + interval '3 days',
    CASE WHEN i %% 3 = 0 THEN now() - make_interval(hours => i %% 8760) + interval '1 day' END
FROM generate_series(1, %(n)s) i
JOIN (SELECT u.code, u.community_code, c.street_code, ST_PointOnSurface(u.geom) AS geom,
             (row_number() OVER (ORDER BY u.code)) - 1 AS n
      FROM unit_grid u JOIN community c ON c.code = u.community_code) g
  ON g.n = i %% (SELECT count(*) FROM unit_grid)
"""
_EVENTS = """
INSERT INTO case_event (case_id, at, actor, transition, from_state, to_state, version, stage,
    on_time)
SELECT id, created_at + interval '1 hour', 'bench', 'file', 'accepted', 'filed', 2, 'file',
    (id % 7) <> 0
FROM city_case
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("CITYGRID_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432")
    settings = dataclasses.replace(
        Settings(),
        database_url=f"{url}/citygrid_bench_street_{os.getpid()}",
        data_dir=Path(tempfile.mkdtemp(prefix="citygrid-bench-street-")),
    )
    db.drop_database(settings)
    db.ensure_database(settings)
    try:
        with db.connect(settings) as conn:
            migrate.upgrade(conn, settings)
        build_demo(settings, area_km2=1.0, seed=1, progress=False)
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("SET session_replication_role = replica")  # bulk load: no triggers
            conn.execute(_CASES, {"n": args.cases})
            conn.execute(_EVENTS)
            conn.execute("SET session_replication_role = origin")
            conn.commit()
            conn.execute("ANALYZE")
            streets = [r[0] for r in conn.execute("SELECT code FROM street ORDER BY code")]
            tz = ZoneInfo(settings.work_timezone)
            today = dt.datetime.now(tz).date()
            print(f"{args.cases} cases over {len(streets)} streets")
            for label, days, chosen in [
                ("one street, 31 days", 30, streets[:1]),
                ("all streets, 366 days", 365, streets),
            ]:
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    shown = street_stats.report(
                        conn, chosen, today - dt.timedelta(days=days), today, tz
                    )
                    times.append(time.perf_counter() - start)
                start = time.perf_counter()
                street_stats.as_xlsx(shown)
                xlsx = time.perf_counter() - start
                reported = sum(s["total"]["reported"] for s in shown["streets"])
                print(
                    f"{label}: {reported} reported; report median "
                    f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms;"
                    f" xlsx {xlsx * 1000:.0f} ms"
                )
    finally:
        db.drop_database(settings)


if __name__ == "__main__":
    main()
