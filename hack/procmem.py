"""Host memory and CPU of processes from /proc, for the density benchmark and by hand.

    .venv/bin/python -m hack.procmem PID...        # each process's PSS by mapping category (QEMU and rund shims)

PSS (proportional set size): each page a process maps counts 1/n for the n processes that map it, so PSS summed
over processes is the memory they use together. `smaps_rollup` gives the totals cheaply; `smaps` gives them per
mapping, which `breakdown` sorts into categories:

QEMU (`qemu-system-*`):
  guest RAM, CoW copies      the clone's own copies of template RAM pages the guest wrote (MAP_PRIVATE: anonymous;
                             with KSM merging, their PSS from pagemap and kpagecount)
  guest RAM, template share  its PSS share of the template file's pages it maps unwritten (tmpfs pages, shared
                             with every clone of the template: 1/n each; all of a page no other clone maps)
  guest RAM (anonymous)      a cold-booted VM's RAM (no template)
  hotplug RAM (virtio-mem)   the memory-backend-ram QEMU plugs into the guest as it grows (touched pages only)
  TCG code buffer            the anonymous rwx mapping of translated code (TCG only; none under KVM)
  rootfs images (pmem)       the erofs images mapped shared for virtio-pmem/DAX (page cache, shared by all VMs)
  heap                       [heap] (glibc main arena)
  other anon                 other anonymous maps: thread stacks, glibc/glib arenas, device buffers
  binaries and libraries     qemu-system and its .so files (text shared; relocated data private)
  other                      stack, vdso, anything else
A Python process (the rund shim): heap, other anon (obmalloc arenas, thread stacks), binaries and libraries, other.
"""
from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
MAP_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$")


@dataclass
class Mapping:
    start: int
    end: int
    perms: str
    path: str
    kib: dict[str, int] = field(default_factory=dict)     # Rss, Pss, Private_Dirty, ... in KiB

    @property
    def size(self) -> int:
        return self.end - self.start


def smaps(pid: int) -> list[Mapping]:
    maps: list[Mapping] = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if m := MAP_HEADER.match(line):
                maps.append(Mapping(int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4).strip()))
            elif maps and line.endswith(" kB\n"):
                key, value = line.split(":", 1)
                maps[-1].kib[key] = int(value.split()[0])
    return maps


def rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup in KiB (Rss, Pss, Pss_Anon, Pss_File, Pss_Shmem, Private_Dirty, ...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.endswith(" kB\n"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()          # fields from 3 (state) on


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all its threads, live and exited), in clock ticks."""
    f = stat_fields(pid)
    return int(f[11]) + int(f[12])


def cpu_snapshot() -> dict[tuple[int, int], tuple[str, int]]:
    """Every process's (comm, utime + stime) by (pid, start time): two of them say what kept the host busy between
    them (busiest)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            f = text[text.rindex(")") + 2:].split()
            out[(int(entry), int(f[19]))] = (text[text.index("(") + 1:text.rindex(")")], int(f[11]) + int(f[12]))
    return out


def busiest(before: dict, after: dict, seconds: float, top: int = 8) -> list[tuple[str, float, int]]:
    """(command, % of one core, processes) between two cpu_snapshot()s, busiest first; a kernel worker's name is cut
    at its '/' (kworker, ksoftirqd: one line each). A process that started and exited between the snapshots (a CNI
    plugin, a `shim start`) is not seen."""
    use: dict[str, list[int]] = {}
    for key, (name, ticks) in after.items():
        name = name.split("/")[0] if name.startswith(("kworker", "ksoftirqd", "migration", "cpuhp")) else name
        u = use.setdefault(name, [0, 0])
        u[0] += ticks - before.get(key, (name, 0))[1]
        u[1] += 1
    ranked = sorted(use.items(), key=lambda kv: -kv[1][0])[:top]
    return [(name, t / CLK_TCK / max(seconds, 1e-9) * 100, n) for name, (t, n) in ranked if t > 0]


def start_ticks(pid: int) -> int:
    return int(stat_fields(pid)[19])


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(stat_fields(int(entry))[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def with_descendants(roots: set[int], kids: dict[int, list[int]] | None = None) -> set[int]:
    kids = children() if kids is None else kids
    seen: set[int] = set()
    todo = [r for r in roots if r]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo += kids.get(pid, [])
    return seen


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def host_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot (/proc/stat): user, nice, system, idle, iowait, irq, softirq,
    steal. guest and guest_nice are not added: the kernel counts them in user and nice already."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


# ---- categories


def is_qemu(pid: int) -> bool:
    try:
        return comm(pid).startswith("qemu-system")
    except OSError:
        return False


def _size(text: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(text[:-1]) * mult[text[-1].upper()]) if text[-1:].upper() in mult else int(text)


def _qemu_objects(argv: list[str]) -> tuple[set[str], set[int], set[int]]:
    """From QEMU's argv: the main memory backend's file(s) (a clone's template RAM), the size of an anonymous main
    memory backend (a cold-booted VM), and the sizes of the other memory-backend-ram objects (virtio-mem)."""
    ram_files, main_sizes, hot_sizes = set(), set(), set()
    for arg in argv:
        if not arg.startswith(("memory-backend-file,", "memory-backend-ram,")):
            continue
        props = dict(p.split("=", 1) for p in arg.split(",")[1:] if "=" in p)
        if arg.startswith("memory-backend-file,"):
            if props.get("id") == "mem" and "mem-path" in props:
                ram_files.add(props["mem-path"])
        elif "size" in props:
            (main_sizes if props.get("id") == "mem" else hot_sizes).add(_size(props["size"]))
    return ram_files, main_sizes, hot_sizes


def _path_base(path: str) -> str:
    return path[:-len(" (deleted)")] if path.endswith(" (deleted)") else path


def qemu_categories(pid: int) -> dict[str, dict[str, int]]:
    ram_files, main_sizes, hot_sizes = _qemu_objects(cmdline(pid))
    cats: dict[str, dict[str, int]] = {}

    def add(cat: str, m: Mapping, pss: int | None = None) -> None:
        c = cats.setdefault(cat, {"pss": 0, "rss": 0, "private_dirty": 0})
        c["pss"] += m.kib.get("Pss", 0) if pss is None else pss
        c["rss"] += m.kib.get("Rss", 0) if pss is None else 0
        c["private_dirty"] += m.kib.get("Private_Dirty", 0) if pss is None else 0

    for m in smaps(pid):
        path = _path_base(m.path)
        if path in ram_files or "/rund-templates/" in path and path.endswith("/memory"):
            cow = m.kib.get("Anonymous", 0)          # CoW'd pages of a MAP_PRIVATE file mapping are anonymous
            cow_pss = _anon_pss_kib(pid, m) if cow and _ksm_on() else cow   # KSM may share some of them
            add("guest RAM, CoW copies", m, pss=cow_pss)
            cats["guest RAM, CoW copies"]["private_dirty"] += cow
            cats["guest RAM, CoW copies"]["rss"] += cow
            add("guest RAM, template share", m, pss=m.kib.get("Pss", 0) - cow_pss)
            cats["guest RAM, template share"]["rss"] += m.kib.get("Rss", 0) - cow
        elif not path and m.size in main_sizes:
            add("guest RAM (anonymous: cold boot)", m)
        elif not path and m.size in hot_sizes:
            add("hotplug RAM (virtio-mem)", m)
        elif not path and "x" in m.perms and "w" in m.perms:
            add("TCG code buffer", m)
        elif path and m.perms[3] == "s" and path.endswith((".erofs", ".img")):
            add("rootfs images (pmem)", m)
        elif path == "[heap]":
            add("heap", m)
        elif not path:
            add("other anon", m)
        elif path.startswith("/"):
            add("binaries and libraries", m)
        else:
            add("other", m)
    return cats


def _ksm_on() -> bool:
    try:
        with open("/sys/kernel/mm/ksm/pages_sharing") as f:
            return int(f.read()) > 0
    except OSError:
        return False


def _anon_pss_kib(pid: int, m: Mapping) -> int:
    """The PSS of a mapping's anonymous pages, from pagemap (anon: bit 61 clear) and kpagecount (how many map each
    page): what smaps cannot split once KSM merged CoW copies across processes (needs root)."""
    n = m.size // (PAGE_KIB * 1024)
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(m.start // (PAGE_KIB * 1024) * 8)
        entries = struct.unpack(f"{n}Q", f.read(n * 8))
    total = 0.0
    with open("/proc/kpagecount", "rb") as counts:
        for e in entries:
            if e >> 63 & 1 and not e >> 61 & 1:
                counts.seek((e & ((1 << 55) - 1)) * 8)
                total += 1 / max(1, struct.unpack("Q", counts.read(8))[0])
    return int(total * PAGE_KIB)


def process_categories(pid: int) -> dict[str, dict[str, int]]:
    """Any process (a Python shim, a runc shim, pause): heap, other anon, binaries and libraries, other."""
    cats: dict[str, dict[str, int]] = {}
    for m in smaps(pid):
        path = _path_base(m.path)
        cat = ("heap" if path == "[heap]" else "other anon" if not path
               else "binaries and libraries" if path.startswith("/") else "other")
        c = cats.setdefault(cat, {"pss": 0, "rss": 0, "private_dirty": 0})
        c["pss"] += m.kib.get("Pss", 0)
        c["rss"] += m.kib.get("Rss", 0)
        c["private_dirty"] += m.kib.get("Private_Dirty", 0)
    return cats


def breakdown(pid: int) -> dict[str, dict[str, int]]:
    """PSS, RSS and private dirty (KiB) of one process by mapping category."""
    return qemu_categories(pid) if is_qemu(pid) else process_categories(pid)


def main(argv: list[str]) -> int:
    for arg in argv:
        pid = int(arg)
        cats = breakdown(pid)
        total = rollup(pid)
        print(f"{pid} {comm(pid)}: PSS {total['Pss'] / 1024:.1f} MiB (rollup), RSS {total['Rss'] / 1024:.1f} MiB")
        print(f"  {'':30} {'PSS MiB':>8} {'RSS MiB':>8} {'priv dirty':>10}")
        for cat, c in sorted(cats.items(), key=lambda kv: -kv[1]["pss"]):
            print(f"  {cat:30} {c['pss'] / 1024:8.1f} {c['rss'] / 1024:8.1f} {c['private_dirty'] / 1024:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
