"""Which repo files go into the image (proto/, agent/) and which make up the build recipe (guest/)."""

from __future__ import annotations

from pathlib import Path

from guest import spec

REPO = Path(__file__).resolve().parent.parent
GUEST_DIR = REPO / "guest"


def shipped_files(package: str, repo: Path = REPO) -> list[Path]:
    """The .py files of a repo package that the image carries: no tests, no caches, no stubs or .proto sources."""
    root = repo / package
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(repo).parts
        if any(part in spec.SHIPPED_EXCLUDE_DIRS for part in rel) or "/".join(rel) in spec.SHIPPED_EXCLUDE_FILES:
            continue
        out.append(path)
    return out


def module_names(files: list[Path], root: Path = REPO) -> list[str]:
    """Dotted module names of .py files under root (a package's __init__.py is the package itself)."""
    out = []
    for f in files:
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def recipe_files(guest_dir: Path = GUEST_DIR) -> list[Path]:
    """The build scripts themselves: every file of the guest package except its tests, output and docs."""
    out = []
    for path in sorted(guest_dir.rglob("*")):
        rel = path.relative_to(guest_dir).parts
        if not path.is_file() or rel[0] in ("tests", "out") or "__pycache__" in rel or path.suffix == ".md":
            continue
        out.append(path)
    return out
