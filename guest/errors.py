"""Typed errors of the guest build. Callers match on the class, never on the message."""

from __future__ import annotations


class GuestError(Exception):
    """Base of every error raised by the guest package."""


class NotBuiltError(GuestError):
    """No usable guest build exists yet (or the manifest is unreadable)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}; run `python3 -m guest.build`")
        self.detail = detail


class ToolError(GuestError):
    """A host tool (apt-get, dpkg-deb, mkfs.erofs, lz4, pip, qemu) failed."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        tail = stderr.strip().splitlines()[-5:]
        super().__init__(f"{argv[0]} exited {returncode}: " + " | ".join(tail))
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class PackageResolveError(GuestError):
    """apt has no candidate version (or no dependency) for a package the image needs."""


class ModuleError(GuestError):
    """A kernel module is missing, malformed, or its dependencies cannot be ordered."""


class KernelImageError(GuestError):
    """The vmlinuz could not be turned into a PVH-bootable vmlinux."""


class ElfError(GuestError):
    """An ELF file could not be parsed, or a library it needs is not in the image."""


class StdlibTraceError(GuestError):
    """The import trace in the guest Python failed, or a required module is missing."""


class ManifestError(GuestError):
    """A manifest is malformed or disagrees with the files next to it."""


class BootError(GuestError):
    """A smoke boot of the guest did not reach its marker."""
