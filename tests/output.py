"""What a child process of a test prints, kept in a file rather than a pipe.

A server a module keeps for all its tests may log more than a pipe holds (64 KiB on Linux):
with a pipe nobody reads until the server fails to start, its next line would block the
thread that logs it, and requests would hang or time out. A temporary file never fills."""

from __future__ import annotations

import os
import tempfile
from typing import IO


class Output:
    def __init__(self) -> None:
        # Open for the child's whole life: closed by `close` or with the test process.
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="citygrid-test-output-")  # noqa: SIM115

    def text(self) -> str:
        """Everything printed so far (read without moving the offset the child writes at)."""
        fd = self.file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def close(self) -> None:
        self.file.close()
