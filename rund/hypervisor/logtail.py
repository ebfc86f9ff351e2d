"""The last lines of a log file, for error messages that explain themselves."""

from __future__ import annotations

import os
from pathlib import Path


def log_tail(path: Path, start: int = 0, max_bytes: int = 4096, max_lines: int = 20) -> str:
    """Up to max_lines of the text written to `path` after offset `start`; '' if unreadable."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(start, end - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])
