"""The stdlib selection: AST scan of our sources, and pyc validity against source mtime and size."""

from __future__ import annotations

import os
import py_compile

from guest.pysubset import imported_names, stdlib_only
from guest.rootfs import stale_pycs


def test_imports_are_found_everywhere_including_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "import os, json.decoder\n"
        "from collections import abc\n"
        "from . import sibling\n"
        "def f():\n"
        "    import ctypes.util\n"
        "    from google.protobuf import message\n"
    )
    names = imported_names([f])
    assert {"os", "json.decoder", "collections", "collections.abc", "ctypes.util", "google.protobuf",
            "google.protobuf.message"} <= names
    assert not any("sibling" in n for n in names)
    assert stdlib_only(names) == {"os", "json.decoder", "collections", "collections.abc", "ctypes.util"}


def test_stale_pycs_catch_missing_and_mismatched_bytecode(tmp_path):
    good, touched, missing = (tmp_path / n for n in ("good.py", "touched.py", "missing.py"))
    for f in (good, touched, missing):
        f.write_text("x = 1\n")
        os.utime(f, (1_700_000_000, 1_700_000_000))
    for f in (good, touched):
        py_compile.compile(str(f), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    os.utime(touched, (1_700_000_001, 1_700_000_001))
    assert stale_pycs(tmp_path) == [missing, touched]
