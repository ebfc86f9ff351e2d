"""Where one VM keeps its files: `run` is QEMU's runtime dir (sockets; created by the driver), logs beside it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VMPaths:
    base: Path

    @property
    def run(self) -> Path:
        return self.base / "vm"

    @property
    def share(self) -> Path:
        """The directory the VM exports to the guest (rund/runtime/volumes.py binds the pod's volumes into it)."""
        return self.base / "volumes"

    @property
    def console_log(self) -> Path:
        return self.base / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.base / "qemu.log"
