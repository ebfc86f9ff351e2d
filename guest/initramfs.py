"""The initramfs: static busybox, the modules that reach the root device (signatures stripped), and /init."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

from guest import spec
from guest.cpio import CpioWriter
from guest.errors import ModuleError
from guest.kmod import ModuleTree, strip_signature


@dataclass(frozen=True)
class Initramfs:
    data: bytes
    groups: dict[str, list[str]]  # group -> module names in load order

    @property
    def modules(self) -> list[str]:
        return [m for names in self.groups.values() for m in names]


def module_groups(tree: ModuleTree, wanted: Mapping[str, Sequence[str]] = spec.INITRD_MODULE_GROUPS) -> dict[str, list[str]]:
    """Each group closed under its dependencies, minus the "core" group that /init always loads first.

    /init loads any subset of the other groups, so they must not share a module (a second insmod would fail).
    """
    core = tree.order(wanted["core"])
    groups = {"core": core}
    owner: dict[str, str] = {}
    for group, names in wanted.items():
        if group == "core":
            continue
        groups[group] = tree.order(names, already=core)
        for name in groups[group]:
            if name in owner:
                raise ModuleError(f"module {name} is needed by initramfs groups {owner[name]} and {group}")
            owner[name] = group
    return groups


def init_script() -> bytes:
    return resources.files("guest").joinpath("init.sh").read_bytes()


def build(busybox: bytes, tree: ModuleTree) -> Initramfs:
    groups = module_groups(tree)
    out = CpioWriter(mtime=spec.SOURCE_DATE_EPOCH)
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        out.directory(d)
    # The kernel opens /dev/console for /init's stdio before anything is mounted.
    out.char_device("dev/console", 5, 1)
    out.file("bin/busybox", busybox, 0o755)
    out.symlink("bin/sh", "busybox")
    out.file("init", init_script(), 0o755)
    for group, names in groups.items():
        for name in names:
            out.file(f"lib/modules/{name}.ko", strip_signature(tree.path(name).read_bytes()))
        listing = "".join(f"/lib/modules/{name}.ko\n" for name in names)
        out.file(f"lib/modules/{group}.list", listing.encode())
    return Initramfs(out.finish(), groups)
