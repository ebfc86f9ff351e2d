"""The `containerd-shim-rund-v2` file containerd executes: Python started without `site` (-S).

containerd runs the binary's `start` for every task (a pod's sandbox and each of its containers) and waits for it
on the pod's start path. That `start` is a thin client of the fork server (client.py) and needs the standard
library and rund only, yet a Python with `site` first scans site-packages and runs its .pth files: an editable
install's import hook alone took ~11 of the ~13 ms `site` cost here, twice per CRI pod start. `make bin-links`
writes this launcher over pip's console script; every other action loads `site` first (main.full_site).

    python -m rund.shim.launcher PATH       write the launcher to PATH (this interpreter, this rund)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import rund
from rund.atomicfile import write_atomic

SCRIPT = """#!{python} -S
# containerd-shim-rund-v2, written by `make bin-links` (rund/shim/launcher.py) over pip's console script:
# no site-packages for the thin `start`; the other actions load them (rund.shim.main).
import sys
sys.path.insert(0, {root!r})
from rund.shim.main import run
run()
"""


def script(python: str = sys.executable, root: str | None = None) -> str:
    """root: the directory rund is imported from (its package's parent: a checkout, or site-packages)."""
    return SCRIPT.format(python=python, root=root or str(Path(rund.__file__).resolve().parent.parent))


def write(path: str, python: str = sys.executable) -> bool:
    """Write the launcher to `path` (atomically, 0755); False if it was there already."""
    text = script(python)
    try:
        if Path(path).read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(Path(path), text.encode(), mode=0o755)
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m rund.shim.launcher PATH", file=sys.stderr)
        return 2
    write(os.path.abspath(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
