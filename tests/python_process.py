"""A Python program run in a process of its own, with the project importable: for tests of
what a process leaves behind when it exits or is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_python(program: str, says: bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    """`program` run to its end (60 s at most); it must print `says`, else its error output
    is shown."""
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        timeout=60,
    )
    assert done.stdout == says, done.stderr.decode()[-2000:]
    return done
