"""`citygrid cpu-latency` and mapserver.cpu_latency: a PM QoS request on the real
/dev/cpu_dma_latency, held while the command runs and gone when it stops."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mapserver import cpu_latency

needs_device = pytest.mark.skipif(
    not cpu_latency.DEVICE.exists() or os.geteuid() != 0,
    reason="needs /dev/cpu_dma_latency and root",
)
COMMAND = [sys.executable, "-m", "mapserver.cli", "cpu-latency"]


@needs_device
def test_a_request_is_in_force_while_held_and_gone_after() -> None:
    before = cpu_latency.current()
    with cpu_latency.held(7):
        assert cpu_latency.current() == min(before, 7)
    assert cpu_latency.current() == before


@needs_device
def test_the_command_holds_its_request_until_stopped() -> None:
    before = cpu_latency.current()
    proc = subprocess.Popen([*COMMAND, "--us", "9"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the request is in force
        assert "within 9 µs" in line, line
        assert cpu_latency.current() == min(before, 9)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert cpu_latency.current() == before


@pytest.mark.parametrize("us", ["-1", "2000000001", "soon"])
def test_a_value_out_of_range_is_refused(us: str) -> None:
    done = subprocess.run([*COMMAND, "--us", us], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("citygrid: error: Invalid value for '--us'")
    refused = int(us) if us != "soon" else -5
    with (
        pytest.raises(cpu_latency.CpuLatencyError, match="0 to 2000000000"),
        cpu_latency.held(refused),
    ):
        pass


def test_a_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "cpu_dma_latency"
    with (
        pytest.raises(cpu_latency.CpuLatencyError, match="no CPU latency"),
        cpu_latency.held(0, missing),
    ):
        pass
    with pytest.raises(cpu_latency.CpuLatencyError, match="no CPU latency"):
        cpu_latency.current(missing)


@needs_device
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
def test_without_root_the_command_says_so() -> None:
    done = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *COMMAND],
        capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == "citygrid: error: /dev/cpu_dma_latency can be opened by root only"


def test_the_shipped_unit_runs_this_command() -> None:
    unit = Path(__file__).resolve().parents[1] / "deploy/systemd/citygrid-cpu-latency.service"
    exec_start = unit.read_text().split("\nExecStart=", 1)[1].splitlines()[0].split()
    assert exec_start[0].endswith("/bin/citygrid")
    assert exec_start[1:] == ["cpu-latency", "--us", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "mapserver.cli", *exec_start[1:], "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "PM QoS" in done.stdout
