"""Every import a source tree makes, read with `ast` (module level, function level, relative): for the layer test."""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TOPS = ("rund", "agent", "proto")


def source_modules(root: Path, tops: tuple[str, ...] = TOPS) -> dict[str, Path]:
    """Dotted module name -> file, for the non-test code under `root` (no */tests/*, no generated stubs)."""
    found = {}
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            if "tests" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, fully qualified name) of each import; `from a import b` gives a.b (b may be a module or a name)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(package, node.level, node.module)
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"


def _absolute(package: str, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    parts = package.split(".")
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([name] if name else []))


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")
