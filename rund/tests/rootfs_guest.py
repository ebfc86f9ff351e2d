"""One real q35 guest for the rootfs VM tests and bench: the guest OS image on pmem slot 0 (DAX), container images on
the next slots, the agent on virtio-serial. The VM and its agent connections live on one event loop in a thread of
their own, so a module-scoped guest serves plain (sync) tests, each of which runs a container to completion."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from agent.tests.helpers import read_all
from rund import errors
from rund.agent import AgentClient, LayeredRootfs, StdioConfig
from rund.hypervisor import Machine, PmemSlot, QemuVM, host_tsc_khz, pmem_slot_address
from rund.hypervisor.testing import VMDirs, minimal_spec

T = TypeVar("T")
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 240.0


def container_spec(script: str) -> dict:
    process = {"args": ["sh", "-c", script], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": [PATH]}
    return {"ociVersion": "1.0.2", "process": process, "hostname": "rootfs",
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}}


class RootfsGuest:
    def __init__(self, base: Path, images: list[tuple[Path, int]], memory_mib: int = 512) -> None:
        from guest.build import ensure_built
        art = ensure_built()
        os_image = Path(art.rootfs)
        slots = [(os_image, os_image.stat().st_size), *images]
        self.spec = minimal_spec(
            VMDirs(base), Machine.Q35, name="rootfs", memory_mib=memory_mib, kernel=art.vmlinux, initrd=art.initrd,
            cmdline="console=ttyS0 quiet panic=-1 rund.root=/dev/pmem0 rund.rootflags=dax=always",
            tsc_khz=host_tsc_khz(),
            pmem=tuple(PmemSlot(path, size, pmem_slot_address(memory_mib, i)) for i, (path, size) in enumerate(slots)))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rootfs-guest", daemon=True)
        self._vm: QemuVM | None = None
        self._sequence = 0

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> float:
        self._thread.start()
        started = time.monotonic()
        self._vm = QemuVM(self.spec)
        self.call(self._vm.start())
        self.call(self._first_health(started + BOOT_TIMEOUT), BOOT_TIMEOUT + 10)
        return time.monotonic() - started

    def stop(self) -> None:
        try:
            if self._vm is not None:
                self.call(self._vm.stop(), 60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def console(self) -> str:
        try:
            return self.spec.console_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def sh(self, rootfs: LayeredRootfs, script: str, timeout: float = 120.0) -> tuple[int, str]:
        """Run `script` with busybox sh in a fresh container on `rootfs`: (exit code, stdout+stderr)."""
        self._sequence += 1
        return self.call(self._run(f"c{self._sequence}", rootfs, f"exec 2>&1; {script}"), timeout)

    async def _first_health(self, deadline: float) -> None:
        while not self.spec.agent_socket.exists():
            await asyncio.sleep(0.01)
        async with await AgentClient.connect_unix(str(self.spec.agent_socket)) as client:
            while True:  # a request waits in the socket until the agent opens its port
                try:
                    await client.health(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                    return
                except errors.Unavailable:
                    if time.monotonic() > deadline:
                        raise

    async def _run(self, cid: str, rootfs: LayeredRootfs, script: str) -> tuple[int, str]:
        async with await AgentClient.connect_unix(str(self.spec.agent_socket), timeout=60.0) as client:
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
