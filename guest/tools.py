"""Running host tools: one place that turns a failed command into a typed ToolError."""

from __future__ import annotations

import subprocess
from pathlib import Path

from guest.errors import ToolError


def run(argv: list[str], cwd: Path | None = None, input: bytes | None = None) -> str:
    """Run argv to completion; return its stdout as text, raise ToolError on a non-zero exit."""
    try:
        proc = subprocess.run(argv, cwd=cwd, input=input, capture_output=True)
    except FileNotFoundError as exc:
        raise ToolError(argv, 127, str(exc)) from exc
    if proc.returncode != 0:
        raise ToolError(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode(errors="replace")
