"""The machine's CPU time by kind of process, read from /proc: for benchmarks that want to
say where a request's time went (the app, nginx, the database, the client), not only how
many requests there were.

`snapshot()` sums every live process's user and system time by the kind its name says, plus
the calling process's finished children (the load generator) and the calling process itself;
the difference of two snapshots is what each kind used in between. A process that starts and
ends between them (a short-lived database backend) is not counted."""

from __future__ import annotations

import os
from collections import Counter
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


def snapshot() -> Counter[str]:
    """CPU seconds used so far, by kind (module docstring)."""
    used: Counter[str] = Counter()
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


def per_request(before: Counter[str], after: Counter[str], requests: int) -> dict[str, float]:
    """µs of CPU per request by kind between two snapshots, and "all"."""
    spent = {kind: max(after[kind] - before[kind], 0.0) for kind in ORDER}
    spent["all"] = sum(spent.values())
    return {kind: seconds / requests * 1e6 for kind, seconds in spent.items()}
