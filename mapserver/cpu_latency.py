"""How soon an idle CPU must be able to wake: a PM QoS request on /dev/cpu_dma_latency.

The kernel keeps the request while the file stays open and drops it when the file is closed,
however the holder ends (a crash too); the value in force is the smallest request of all
holders, and reading the file gives it. Writing 0 keeps idle CPUs from entering any idle state
that takes time to leave: they poll instead.

Why CityGrid offers it (docs/performance.md, "The hop on a virtual machine"): on a virtual
machine an idle vCPU halts, and a halted vCPU is slow to wake and resumes with cold caches. A
cached tile in two zones wakes four processes in turn (client, gateway, renderer, gateway
again), each idle a moment before; held at 0 µs, the hop costs the gateway 0.16–0.18 ms
instead of 0.24–0.29 ms. The price: the CPUs never rest, and the host sees them busy. It is
an operator's choice for latency-bound hosts (deploy/systemd/citygrid-cpu-latency.service),
off by default.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from mapserver.errors import CityGridError

DEVICE = Path("/dev/cpu_dma_latency")
MOST_US = 2_000_000_000  # the kernel's value when nobody asks (PM_QOS_CPU_LATENCY_DEFAULT_VALUE)
_VALUE = struct.Struct("=i")  # what the file takes and gives: one native 32-bit integer


class CpuLatencyError(CityGridError):
    """The request cannot be made or read (no such file, not root, a value out of range)."""


def _unusable(device: Path, exc: OSError) -> CpuLatencyError:
    if isinstance(exc, FileNotFoundError):
        return CpuLatencyError(f"{device} does not exist: the kernel takes no CPU latency requests")
    if isinstance(exc, PermissionError):
        return CpuLatencyError(f"{device} can be opened by root only")
    return CpuLatencyError(f"{device}: {exc.strerror or exc}")


def current(device: Path = DEVICE) -> int:
    """The wake-up latency in force, in µs: the smallest request held (MOST_US if none)."""
    try:
        data = device.read_bytes()
    except OSError as exc:
        raise _unusable(device, exc) from None
    if len(data) != _VALUE.size:
        raise CpuLatencyError(f"{device} gave {len(data)} bytes, not a 32-bit value")
    return int(_VALUE.unpack(data)[0])


@contextlib.contextmanager
def held(us: int, device: Path = DEVICE) -> Iterator[None]:
    """Ask that idle CPUs wake within `us` microseconds while the block runs."""
    if not 0 <= us <= MOST_US:
        raise CpuLatencyError(f"a CPU latency is 0 to {MOST_US} µs, not {us}")
    try:
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _unusable(device, exc) from None
    try:
        try:
            os.write(fd, _VALUE.pack(us))
        except OSError as exc:
            raise _unusable(device, exc) from None
        yield
    finally:
        os.close(fd)  # the request ends with the file
