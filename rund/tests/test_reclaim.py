"""Idle memory paged out to swap: the mechanism on a real process and a real clone (rund/resources/reclaim.py), and
the sandbox's policy (rund/runtime/idle_reclaim.py) on real processes, idle and busy.

The host needs swap: a test uses the one configured, or sets up zram (compressed swap in RAM) for itself when the
host has a free zram device, and takes it down after."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rund import procfs
from rund.resources import reclaim
from rund.runtime import idle_reclaim
from rund.runtime.idle_reclaim import IDLE_SHARE, IdleReclaim, should_page_out

ZRAM = Path("/sys/block/zram0")
ZRAM_SIZE = "512M"

CHILD = """
import sys, signal
data = bytearray(64 << 20)
for i in range(0, len(data), 4096):
    data[i] = i // 4096 % 251
print("ready", flush=True)
if sys.argv[1] == "busy":
    while True:
        pass
sys.stdin.readline()                     # woken: every page read back, as the kernel returns it
bad = sum(1 for i in range(0, len(data), 4096) if data[i] != i // 4096 % 251)
print(f"bad {bad}", flush=True)
"""


def test_the_decision_idle_busy_and_pressure():
    assert should_page_out(0.0, 10.0, None) is None
    assert should_page_out(IDLE_SHARE * 10.0 * 0.9, 10.0, 0.0) is None
    assert should_page_out(IDLE_SHARE * 10.0, 10.0, 0.0) == "busy"
    assert should_page_out(0.0, 10.0, 25.0) == "pressure"
    assert should_page_out(0.0, 10.0, 0.0, regrown_kib=100) == "resident"     # paged out, little came back
    assert should_page_out(0.0, 10.0, 0.0, regrown_kib=16 << 10) is None


@pytest.fixture(scope="module")
def swap():
    """Swap for the module's tests: the host's, or a zram device set up here and removed after."""
    if reclaim.swap_total_kib():
        yield
        return
    if os.geteuid() != 0 or not ZRAM.exists() or (ZRAM / "disksize").read_text().strip() != "0":
        pytest.skip("no swap on this host and no free zram device to make one (paging out frees nothing)")
    (ZRAM / "disksize").write_text(ZRAM_SIZE)
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True)
    try:
        yield
    finally:
        subprocess.run(["swapoff", "/dev/zram0"], check=True)
        (ZRAM / "reset").write_text("1")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _child(mode: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def test_a_process_paged_out_gets_every_page_back(swap):
    p = _child("idle")
    try:
        rss0 = _status_kib(p.pid, "VmRSS")
        assert reclaim.page_out(p.pid) >= 64 << 20          # its private mappings, the 64 MiB among them
        assert _status_kib(p.pid, "VmSwap") >= 56 << 10
        assert _status_kib(p.pid, "VmRSS") <= rss0 - (56 << 10)
        out, _ = p.communicate("wake\n", timeout=60)
        assert out.strip() == "bad 0" and p.returncode == 0
    finally:
        p.kill()
        p.wait()


RELRO_CHILD = """
import ctypes, mmap, sys
m = mmap.mmap(-1, 16 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, len(m), 4096):
    m[i] = i // 4096 % 251 + 1
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(len(m)), mmap.PROT_READ) == 0   # written, then read-only
print(f"ready {addr:x}", flush=True)
sys.stdin.readline()
"""


def _swap_of_mapping_kib(pid: int, addr: int) -> int:
    """Swap: of the mapping that holds addr (the kernel may have merged it with a neighbour of the same kind)."""
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("Swap:"):
            return int(line.split()[1])
    raise KeyError(hex(addr))


def test_read_only_private_pages_are_paged_out_and_code_is_left(swap):
    # what a library's RELRO holds: pages written at load, then made read-only (QEMU's are ~3 MiB)
    p = subprocess.Popen([sys.executable, "-c", RELRO_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        word, addr = p.stdout.readline().split()
        assert word == "ready"
        ranges = reclaim.private_ranges(p.pid)
        assert any(start <= int(addr, 16) < start + length for start, length in ranges)
        code = [line.split()[0] for line in Path(f"/proc/{p.pid}/maps").read_text().splitlines()
                if line.split()[1] == "r-xp"]
        assert code and not {int(span.split("-")[0], 16) for span in code} & {start for start, _ in ranges}
        reclaim.page_out(p.pid)
        assert _swap_of_mapping_kib(p.pid, int(addr, 16)) >= 14 << 10
    finally:
        p.kill()
        p.wait()


def test_a_gone_process_is_process_lookup_error():
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(ProcessLookupError):
        reclaim.page_out(p.pid)


def test_the_policy_pages_out_an_idle_process_and_leaves_a_busy_one(swap):
    idle, busy = _child("idle"), _child("busy")
    try:
        async def watch(pid: int) -> IdleReclaim:
            r = IdleReclaim("test", 0.5, lambda: pid, lambda: procfs.cpu_ns(pid))
            task = asyncio.create_task(r.run())
            deadline = time.monotonic() + 20            # three periods, however loaded the host
            while r.stats.rounds < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return r

        async def both():
            return await asyncio.gather(watch(idle.pid), watch(busy.pid))
        on_idle, on_busy = asyncio.run(both())
        assert on_idle.stats.paged_out >= 1 and on_idle.stats.busy == 0
        assert on_idle.stats.resident >= 1          # paged out once; nothing came back to page out again
        assert _status_kib(idle.pid, "VmSwap") >= 56 << 10
        assert on_busy.stats.paged_out == 0 and on_busy.stats.busy >= 2
        assert _status_kib(busy.pid, "VmSwap") < 8 << 10
    finally:
        for p in (idle, busy):
            p.kill()
            p.wait()


@pytest.fixture
def fresh_shim(monkeypatch):
    """This test process plays the shim: no page-out of it recorded by an earlier test."""
    monkeypatch.setattr(idle_reclaim, "_shim_left", {})


def test_a_shim_of_one_pod_pages_itself_out_with_its_idle_vm(swap, fresh_shim):
    idle = _child("idle")
    ballast = bytearray(32 << 20)           # the "shim's" heap: this process's
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    try:
        async def watch() -> IdleReclaim:
            r = IdleReclaim("test", 0.5, lambda: idle.pid, lambda: procfs.cpu_ns(idle.pid), also_self=True)
            task = asyncio.create_task(r.run())
            deadline = time.monotonic() + 20            # a page-out of a big test process takes a while under load
            while r.stats.paged_out == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return r
        r = asyncio.run(watch())
        assert r.stats.paged_out >= 1, r.stats
        assert _status_kib(os.getpid(), "VmSwap") >= 24 << 10
        assert _status_kib(idle.pid, "VmSwap") >= 56 << 10
        assert sum(ballast[::4096]) == len(ballast) // 4096     # and it all comes back
    finally:
        idle.kill()
        idle.wait()


def test_a_group_shim_goes_out_once_with_the_first_of_its_idle_vms(swap, fresh_shim):
    vms = [_child("idle"), _child("idle")]
    ballast = bytearray(32 << 20)           # the group shim's heap: this process's
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    try:
        async def watch() -> list[IdleReclaim]:
            rs = [IdleReclaim(f"pod{i}", 0.5, lambda p=p: p.pid, lambda p=p: procfs.cpu_ns(p.pid), also_self=True)
                  for i, p in enumerate(vms)]
            tasks = [asyncio.create_task(r.run()) for r in rs]
            deadline = time.monotonic() + 30
            while min(r.stats.rounds for r in rs) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return rs
        rs = asyncio.run(watch())
        assert all(r.stats.paged_out >= 1 for r in rs), [r.stats for r in rs]
        assert sum(r.stats.shim_paged_out for r in rs) == 1, [r.stats for r in rs]     # not once per pod
        assert _status_kib(os.getpid(), "VmSwap") >= 24 << 10
        assert all(_status_kib(p.pid, "VmSwap") >= 56 << 10 for p in vms)
    finally:
        for p in vms:
            p.kill()
            p.wait()


@pytest.mark.vm
def test_an_idle_clone_paged_out_still_answers(clone, swap):
    """QEMU's private memory (TCG buffer, heap, the clone's copies of guest RAM) goes out; the guest answers the next
    call with it faulted back."""
    pid = clone.vm.pid
    rss0 = _status_kib(pid, "VmRSS")
    t = time.monotonic()
    reclaim.page_out(pid)
    took = time.monotonic() - t
    swapped = _status_kib(pid, "VmSwap")
    assert swapped >= 8 << 10, f"only {swapped} KiB of QEMU went to swap"
    assert _status_kib(pid, "VmRSS") < rss0

    async def health() -> float:
        agent = await clone.connect()
        try:
            t = time.monotonic()
            await agent.health()
            return time.monotonic() - t
        finally:
            await agent.close()
    wake = asyncio.run(health())
    print(f"QEMU RSS {rss0 >> 10} MiB, {swapped >> 10} MiB paged out in {took * 1000:.0f} ms; "
          f"Health after {wake * 1000:.0f} ms")
