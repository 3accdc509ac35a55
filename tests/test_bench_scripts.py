"""Every benchmark in bench/ starts: run as `make bench` runs it (`python bench/NAME.py`), each
imports what it needs and answers `--help`. Their names (audit.py, tiles.py) would hide the
project's packages if their folder came first on sys.path, and a helper renamed in one script
broke another's import; both went unnoticed until `make bench` was run."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
HELPERS = {"tiles_bench_support.py", "cpu_use.py"}  # imported by the benchmarks, not run
BY_HAND = {"seed_district.py"}  # the 50 km² district: minutes of building, run on its own


def _help(script: Path) -> tuple[str, int, str]:
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True, text=True, timeout=120, cwd=BENCH.parent,
    )  # fmt: skip
    return script.name, done.returncode, done.stderr[-600:]


def test_every_benchmark_starts() -> None:
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name not in HELPERS)
    assert len(scripts) >= 14, scripts
    makefile = (BENCH.parent / "Makefile").read_text()
    run = [p.name for p in scripts if p.name not in BY_HAND]
    missing = [name for name in run if f"bench/{name}" not in makefile]
    assert not missing, f"benchmarks `make bench` does not run: {missing}"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_help, scripts))
    failed = [r for r in results if r[1] != 0]
    assert not failed, failed
