"""Fewer pauses in a serving worker's requests: set once, after the app is loaded.

The tail of a cached tile's latency came from two waits that are not work. The cyclic
garbage collector walked every long-lived object the worker built while loading the app
(some 10^5: Flask, cryptography, psycopg, Mapnik's bindings) in its full collections; after
`gc.freeze()` those objects are out of its reach, and young collections run less often. And
a request thread woken by its audit commit or Redis reply waited for the GIL up to Python's
switch interval (5 ms) while other threads ran; a shorter interval hands it back sooner.
Measured with bench/gateway.py (docs/performance.md).
"""

from __future__ import annotations

import gc
import sys

GC_THRESHOLDS = (10_000, 20, 20)  # Python's default is (700, 10, 10)
SWITCH_SECONDS = 0.001  # Python's default is 0.005


def settle() -> None:
    """Freeze what exists now out of the collector's reach; tune it and the GIL handover."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_SECONDS)
