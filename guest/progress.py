"""Progress lines on stderr: one per step, with the time since the build started."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, prefix: str = "guest") -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._prefix = prefix
        self._start = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self._start
        print(f"[{self._prefix} {elapsed:6.1f}s] {message}", file=self._stream, flush=True)


def silent(message: str) -> None:
    """A progress sink that drops everything (for library callers and tests)."""
