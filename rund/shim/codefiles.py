"""Whether the code a long-lived shim process runs has changed on disk since it imported it (an upgrade): the fork
server then exits, and a group shim takes no new pod (they go to a group of the new code)."""
from __future__ import annotations

import os
import sys

Snapshot = dict[str, tuple[int, int, int]]


def snapshot() -> Snapshot:
    """(mtime, size, inode) of every imported module's file."""
    files = {}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        files[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return files


def changed(files: Snapshot) -> str | None:
    """The first file of `files` changed on disk since, or None."""
    for path, was in files.items():
        try:
            st = os.stat(path)
            now = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            now = None
        if now != was:
            return path
    return None
