"""Evaluation benchmark: a year's indicators for all bureaus with 10⁶ cases over two years,
from the per-day aggregates against a full scan of the same query (the view `eval_fact` over
every case history), in the same run on the same database. Both must give equal counts.

The history is generated with SQL (generate_series) into a database of its own
(`citygrid_bench_eval`, kept for the next run): ten paths (rejected, open, returned and
re-dispatched, reworked, postponed, closed…), about nine events per case, 90 % of stages on
time. The aggregates are then built by `eval rebuild` (the trigger is off during the bulk
load; it is on again afterwards).

Usage: python bench/evaluation.py [--cases 1000000] [--area-km2 4] [--runs 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import statistics
import time
from typing import Any
from zoneinfo import ZoneInfo

from mapserver import db
from mapserver.evaluation import aggregates, config, hotspot, report, screen
from tiles import origin  # noqa: F401  (the package, before bench/tiles.py can shadow it)
from tiles.service import district_extent, grid_from, proj_string

# The project's folder first, this one after it: bench/audit.py and bench/tiles.py must not hide
# the audit and tiles packages (an editable install's finder comes after sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from tiles_bench_support import bench_settings  # noqa: E402

# (path, steps): each step is a transition; dispatch steps name a bureau.
PATHS = {
    0: ["reject"],
    1: ["accept", "file", "dispatch", "receive"],
    2: ["accept", "file", "dispatch", "return", "dispatch", "receive", "handle", "forward",
        "request_check", "check_pass"],
    3: ["accept", "file", "dispatch", "receive", "handle", "forward", "request_check",
        "check_fail", "handle", "forward", "request_check", "check_pass"],
    4: ["verify", "file", "dispatch", "receive", "request_postpone", "decide_postpone",
        "handle", "forward", "request_check", "check_pass"],
    **{k: ["verify" if k % 2 else "accept", "file", "dispatch", "receive", "handle", "forward",
           "request_check", "check_pass"] for k in range(5, 10)},
}  # fmt: skip
TARGET = {"reject": "rejected", "accept": "accepted", "verify": "accepted", "file": "filed",
          "dispatch": "dispatched", "receive": "handling", "return": "filed",
          "request_postpone": "handling", "decide_postpone": "handling", "handle": "handled",
          "forward": "feedback", "request_check": "checking", "check_pass": "closed",
          "check_fail": "handling"}  # fmt: skip
STAGE_ENDED = {"reject": "accept", "accept": "accept", "verify": "accept", "file": "file",
               "dispatch": "dispatch", "return": "handle", "handle": "handle",
               "forward": "forward", "check_pass": "check", "check_fail": "check"}  # fmt: skip
YEARS = (2024, 2025)


def steps_sql() -> str:
    """VALUES (path, seq, transition, from_state, to_state, stage ended) of every path."""
    rows = []
    for path, names in PATHS.items():
        state = "reported"
        for seq, name in enumerate(names, start=1):
            target = TARGET[name]
            stage = STAGE_ENDED.get(name)
            rows.append(
                f"({path}, {seq}, '{name}', '{state}', '{target}', "
                + (f"'{stage}'" if stage else "NULL")
                + ")"
            )
            state = target
    return "VALUES " + ", ".join(rows)


def fill(settings: Any, n: int) -> None:
    """n cases, half in each year, with their histories; then the aggregates rebuilt."""
    with db.transaction(settings) as conn:
        have = conn.execute("SELECT count(*) FROM city_case").fetchone()
        if have and have[0] >= n:
            return
        if have and have[0]:
            raise SystemExit("citygrid_bench_eval holds another number of cases: drop it first")
        started = time.monotonic()
        conn.execute("ALTER TABLE case_event DISABLE TRIGGER case_event_evaluation")
        half = n // 2
        conn.execute(
            """CREATE TEMP TABLE gen ON COMMIT DROP AS
               SELECT i, i %% 10 AS path,
                      make_timestamptz(y, 1, 1, 9, 0, 0, 'Asia/Shanghai')
                        + (k - 1) * (interval '365 days' / %(half)s) AS t0,
                      y || '-' || lpad(k::text, 6, '0') AS number,
                      (SELECT array_agg(code ORDER BY code) FROM organisation
                       WHERE kind = 'bureau') AS bureaus
               FROM generate_series(1, %(n)s) AS i,
                    LATERAL (SELECT CASE WHEN i <= %(half)s THEN %(y0)s ELSE %(y1)s END AS y,
                                    CASE WHEN i <= %(half)s THEN i ELSE i - %(half)s END AS k) x""",
            {"n": n, "half": half, "y0": YEARS[0], "y1": YEARS[1]},
        )
        grids = conn.execute("SELECT count(*) FROM unit_grid").fetchone()
        assert grids is not None
        conn.execute(
            """INSERT INTO city_case (id, number, district, kind, major, minor, source, state,
                   description, geom, grid_code, community_code, street_code, bureau, reporter,
                   created_at, stage, stage_started_at)
               SELECT g.i, g.number, %s, 'event', '01', '02',
                      CASE WHEN g.i %% 3 = 0 THEN 'phone' ELSE 'inspector' END, 'reported',
                      'benchmark case', ST_PointOnSurface(u.geom), u.code, u.community_code,
                      left(u.code, 9), g.bureaus[1 + g.i %% array_length(g.bureaus, 1)],
                      'bench-inspector-' || (g.i %% 50), g.t0, NULL, g.t0
               FROM gen g
               JOIN LATERAL (SELECT code, community_code, geom FROM unit_grid
                             ORDER BY code OFFSET g.i %% %s LIMIT 1) u ON true""",
            (settings.district_code, grids[0]),
        )
        conn.execute("SELECT setval('city_case_id_seq', %s)", (n,))
        conn.execute(
            f"""INSERT INTO case_event (case_id, at, actor, transition, from_state, to_state,
                   version, parameters, stage, stage_deadline, on_time)
               SELECT g.i, g.t0, 'bench-inspector-' || (g.i % 50), 'create', NULL,
                      'reported', 1, '{{}}', NULL, NULL, NULL
               FROM gen g
               UNION ALL
               SELECT g.i, g.t0 + s.seq * interval '30 minutes', 'bench', s.name, s.from_state,
                      s.to_state, s.seq + 1,
                      CASE s.name
                          WHEN 'dispatch' THEN jsonb_build_object('bureau',
                              g.bureaus[1 + (g.i + s.seq) % array_length(g.bureaus, 1)])
                          WHEN 'decide_postpone' THEN '{{"decision": "approve"}}'
                          ELSE '{{}}' END,
                      s.stage, CASE WHEN s.stage IS NOT NULL THEN g.t0 END,
                      CASE WHEN s.stage IS NOT NULL THEN (g.i + s.seq) % 10 <> 0 END
               FROM gen g JOIN ({steps_sql()}) AS s (path, seq, name, from_state, to_state, stage)
                 ON s.path = g.path
               ORDER BY 1, 2"""
        )
        conn.execute("ANALYZE city_case")
        conn.execute("ANALYZE case_event")
        loaded = time.monotonic() - started
        facts, days = aggregates.rebuild(conn, settings.work_timezone)
        conn.execute("ALTER TABLE case_event ENABLE TRIGGER case_event_evaluation")
        print(
            f"generated {n} cases in {loaded:.0f} s; rebuilt {facts} facts into {days} day rows "
            f"in {time.monotonic() - started - loaded:.0f} s"
        )


def year_report(conn: Any, first: dt.date, last: dt.date, scan: bool) -> dict[str, Any]:
    when = report.Period(first, last)
    before = when.previous()
    now = aggregates.subject_counts(conn, "bureau", when.first, when.last, scan=scan)
    past = aggregates.subject_counts(conn, "bureau", before.first, before.last, scan=scan)
    cfg = config.current(conn)
    names = aggregates.subjects(conn, "bureau")
    return report.build("bureau", names, now, past, {}, cfg.config, cfg.version, when)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--area-km2", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    # Reports only read: the kept database itself (a copy of a million cases would cost
    # more than the run).
    settings = bench_settings(args.area_km2, "citygrid_bench_eval", fresh=False)
    fill(settings, args.cases)
    first, last = dt.date(YEARS[1], 1, 1), dt.date(YEARS[1], 12, 31)
    with db.connect(settings) as conn:
        events = conn.execute("SELECT count(*) FROM case_event").fetchone()
        kept = []
        for _ in range(args.runs):
            t = time.perf_counter()
            fast = year_report(conn, first, last, scan=False)
            kept.append(time.perf_counter() - t)
        t = time.perf_counter()
        slow = year_report(conn, first, last, scan=True)
        scanned = time.perf_counter() - t
    assert fast == slow, "the aggregates and the full scan disagree"
    bureaus = len(fast["subjects"])
    median = statistics.median(kept)
    print(f"{args.cases} cases, {events[0] if events else 0} history entries, {bureaus} bureaus")
    print(f"{YEARS[1]} indicators + previous year, all bureaus, ranked:")
    print(f"  per-day aggregates: {median * 1000:8.1f} ms (median of {args.runs})")
    print(f"  full scan:          {scanned * 1000:8.1f} ms")
    print(f"  ratio:              {scanned / median:8.1f}×  (same figures: yes)")
    hotspot_and_screen(settings, first, last, args.runs)


def hotspot_and_screen(settings: Any, first: dt.date, last: dt.date, runs: int) -> None:
    """A hot-spot metatile of the year (all classes, and one class) drawn as the map role at
    1:2000 in the district's middle, and the big screen's counters and latest events."""
    with db.connect(settings) as conn:
        srs = proj_string(conn, settings.srid)
        box = district_extent(conn)
    assert box is not None
    grid = grid_from(settings)
    url = settings.map_reader_database_url
    draw = hotspot.HotspotRenderer(grid, srs, url, settings.srid, settings.tile_metatile)
    z = grid.z_of_scale(2000)
    x, y, _, _ = grid.locate(z, (box.minx + box.maxx) / 2, (box.miny + box.maxy) / 2)
    mx, my = grid.metatile(z, x, y, settings.tile_metatile)
    print(f"hot-spot metatile ({settings.tile_metatile}×{settings.tile_metatile} tiles, 1:2000):")
    for cls in ("all", "e01"):
        which = hotspot.Variant(report.Period(first, last), cls)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            draw.render_metatile(which.cache_name, z, mx, my)
            times.append(time.perf_counter() - t)
        median = statistics.median(times) * 1000
        print(f"  a year, class {cls}: {median:8.1f} ms (median of {runs})")
    zone = ZoneInfo(settings.work_timezone)
    with db.connect(settings) as conn:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            since = dt.datetime.combine(last, dt.time(), zone)
            screen.counters(conn, since)
            screen.latest(conn, zone)
            times.append(time.perf_counter() - t)
    print(f"big screen counters + latest events: {statistics.median(times) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
