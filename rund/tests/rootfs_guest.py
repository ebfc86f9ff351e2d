"""One real q35 guest for the rootfs VM tests and bench: the guest OS image on pmem slot 0 (DAX), container images on
the next slots, the agent on virtio-serial. A booted guest of the VM factory (vm_factory.py), whose loop thread
lets a module-scoped guest serve plain (sync) tests, each of which runs a container to completion."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from agent.tests.helpers import read_all
from rund.agent import LayeredRootfs, StdioConfig
from rund.hypervisor import Machine
from rund.tests.vm_factory import BOOT_TIMEOUT, VMFactory

T = TypeVar("T")
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def container_spec(script: str) -> dict:
    process = {"args": ["sh", "-c", script], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": [PATH]}
    return {"ociVersion": "1.0.2", "process": process, "hostname": "rootfs",
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}}


class RootfsGuest:
    def __init__(self, base: Path, images: list[tuple[Path, int]], memory_mib: int = 512) -> None:
        self._factory = VMFactory(base)
        self.guest = self._factory.vm(Machine.Q35, name="rootfs", memory_mib=memory_mib, images=images)
        self.spec = self.guest.spec
        self._sequence = 0

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return self._factory.call(coro, timeout)

    def start(self) -> float:
        """Seconds from QEMU exec until the agent answered."""
        self._factory.boot(self.guest, BOOT_TIMEOUT)
        return self.guest.ready_s

    def stop(self) -> None:
        self._factory.close()

    def console(self) -> str:
        return self.guest.console()

    def sh(self, rootfs: LayeredRootfs, script: str, timeout: float = 120.0) -> tuple[int, str]:
        """Run `script` with busybox sh in a fresh container on `rootfs`: (exit code, stdout+stderr)."""
        self._sequence += 1
        return self.call(self._run(f"c{self._sequence}", rootfs, f"exec 2>&1; {script}"), timeout)

    async def _run(self, cid: str, rootfs: LayeredRootfs, script: str) -> tuple[int, str]:
        async with await self.guest.connect() as client:
            await client.create_container(cid, container_spec(script), rootfs, StdioConfig(stdout=True))
            try:
                await client.start_container(cid)
                out = await read_all(client, cid)
                status = await client.wait_process(cid)
            finally:
                await client.remove_container(cid, force=True)
        return status.code, out.decode(errors="replace")


def page_cache_growth_script(paths: str) -> str:
    """Prints the guest's Cached+Buffers (kB) before and after reading `paths`, and the bytes read."""
    meter = "awk '/^(Cached|Buffers):/ {s += $2} END {print s}' /proc/meminfo"
    return (f"sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; before=$({meter}); "
            f"bytes=$(cat {paths} | wc -c); after=$({meter}); echo CACHE $before $after $bytes")


def parse_growth(output: str) -> tuple[int, int]:
    """(page cache growth in bytes, bytes read) from page_cache_growth_script's output."""
    for line in output.splitlines():
        if line.startswith("CACHE "):
            before, after, read = (int(v) for v in line.split()[1:])
            return (after - before) * 1024, read
    raise AssertionError(f"no CACHE line in {output!r}")
