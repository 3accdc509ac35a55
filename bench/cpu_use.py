"""The machine's CPU time by kind of process, read from /proc: for benchmarks that want to
say where a request's time went (the app, nginx, the database, the client), not only how
many requests there were.

`snapshot()` sums every live process's user and system time by the kind its name says, plus
the calling process's finished children (the load generator) and the calling process itself;
`spent` of two snapshots is what each kind used in between. A process that starts and
ends between them (a short-lived database backend) is not counted."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

KINDS = {  # a process's name (/proc/PID/stat) → its kind
    "gunicorn": "app",
    "citygrid": "app",
    "nginx": "nginx",
    "postgres": "database",
    "redis-server": "redis",
}
ORDER = ("app", "nginx", "database", "redis", "client", "bench", "other")
_TICK = os.sysconf("SC_CLK_TCK")


def snapshot() -> dict[str, float]:
    """CPU seconds used so far, by kind (module docstring)."""
    used: defaultdict[str, float] = defaultdict(float)
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        kind = KINDS.get(name.split(":")[0], "other")
        used[kind] += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    times = os.times()
    used["client"] += times.children_user + times.children_system
    used["bench"] += times.user + times.system
    return used


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each kind used between two snapshots."""
    return {kind: max(after.get(kind, 0.0) - before.get(kind, 0.0), 0.0) for kind in ORDER}


def per_request(used: dict[str, float], requests: int) -> dict[str, float]:
    """`used` (CPU seconds by kind) as µs per request, and "all"."""
    out = {kind: used.get(kind, 0.0) / requests * 1e6 for kind in ORDER}
    out["all"] = sum(out.values())
    return out
