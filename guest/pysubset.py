"""Which stdlib files the guest's Python needs: an AST scan of our code plus an import trace in Debian's python3.11.

The trace runs the extracted Debian interpreter (through the extracted ld.so and libs, so exactly the guest's
binaries) in isolated mode, imports the roots, and reports every module it loaded from the stdlib directory.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from guest import spec
from guest.errors import StdlibTraceError, ToolError
from guest.tools import run

LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
LD_SO = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"

# Runs inside the guest interpreter. Imports nothing itself, so sys.modules shows only what the roots pulled in.
_TRACE_CHILD = r"""
import sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
for name in filter(None, args["--deny"].split(",")):
    sys.modules[name] = None
sys.path[:0] = filter(None, args["--path"].split(":"))
for name in filter(None, args["--require"].split(",")):
    __import__(name)
for name in filter(None, args["--optional"].split(",")):
    try:
        __import__(name)
    except ImportError:
        pass
for name, mod in sorted(sys.modules.items()):
    f = getattr(mod, "__file__", None) if mod is not None else None
    if f:
        print(name + "\t" + f)
"""


@dataclass(frozen=True)
class Trace:
    modules: dict[str, Path]  # module name -> file (.py or extension .so) inside the interpreter's stdlib dir


def imported_names(sources: Iterable[Path]) -> set[str]:
    """Absolute module names imported anywhere in these files (also inside functions), plus `from m import x` as m.x."""
    names: set[str] = set()
    for path in sources:
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError as exc:
            raise StdlibTraceError(f"cannot parse {path}: {exc}") from exc
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def stdlib_only(names: Iterable[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in sys.stdlib_module_names}


def interpreter_argv(root: Path) -> list[str]:
    """Run <root>/usr/bin/python3.11 with <root>'s own ld.so and libraries (never the host's)."""
    libs = ":".join(str(root / d) for d in LIB_DIRS)
    return [str(root / LD_SO), "--library-path", libs, str(root / spec.PYTHON_BIN.lstrip("/"))]


def trace(sysroot: Path, required: Iterable[str], optional: Iterable[str], path: Iterable[Path] = (),
          deny: Iterable[str] = spec.STDLIB_DENY) -> Trace:
    argv = interpreter_argv(sysroot) + [
        "-I", "-B", "-c", _TRACE_CHILD,
        "--deny", ",".join(sorted(deny)),
        "--path", ":".join(str(p) for p in path),
        "--require", ",".join(sorted(set(required))),
        "--optional", ",".join(sorted(set(optional))),
    ]
    try:
        out = run(argv)
    except ToolError as exc:
        raise StdlibTraceError(f"import trace failed: {exc}") from exc
    stdlib_dir = (sysroot / spec.PYTHON_LIB.lstrip("/")).resolve()
    modules = {}
    for line in out.splitlines():
        name, _, file = line.partition("\t")
        p = Path(file)
        if p.resolve().is_relative_to(stdlib_dir):
            modules[name] = p.resolve()
    return Trace(modules)


def check_in_chroot(root: Path, names: Iterable[str], agent_module: str | None, dlopen: Iterable[str] = ()
                    ) -> None:
    """Inside a chroot of root (a staged image tree), exactly as the guest will: import every name with
    `python3.11 -I`, load every `dlopen` soname with ctypes, then run `python3.11 -I -m <agent_module> --help`.
    Raises StdlibTraceError on failure."""
    userns = [] if os.geteuid() == 0 else ["unshare", "--map-root-user"]  # chroot needs (namespaced) root
    chroot = [*userns, "chroot", str(root), spec.PYTHON_BIN, "-I", "-B"]
    try:
        run(chroot + ["-c", _TRACE_CHILD, "--deny", "", "--path", "", "--require", ",".join(sorted(set(names))),
                      "--optional", ""])
        for soname in dlopen:
            run(chroot + ["-c", f"import ctypes; ctypes.CDLL({soname!r})"])
        if agent_module:
            run(chroot + ["-m", agent_module, "--help"])
    except ToolError as exc:
        raise StdlibTraceError(f"the staged image cannot run its own Python: {exc}") from exc
