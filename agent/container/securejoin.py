"""Resolve a path inside a root directory as if root were '/': symlinks cannot escape it."""
import os

_MAX_SYMLINKS = 255


def secure_join(root: str, unsafe: str) -> str:
    """root + unsafe with every symlink resolved relative to root; missing tails are kept as given."""
    pending = [p for p in unsafe.split("/") if p]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            is_link = os.path.islink(candidate)
        except OSError:
            is_link = False
        if not is_link:
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_SYMLINKS:
            raise OSError(40, f"too many levels of symbolic links in {unsafe}")  # ELOOP
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return os.path.join(root, *resolved)
