"""Per-sandbox rootfs preparation with the image cache against a per-sandbox image, and guest page cache with DAX
against without, side by side in one run.

    python3 hack/bench_rootfs.py [--sandboxes 50] [--concurrency 10] [--bulk-mib 20] [--rounds 3] [--no-vm]

1. Host: a three-layer image (busybox, odd inodes, whiteouts, --bulk-mib of data) on a private ext4 file system
   (a loop device, so that every byte written to it, metadata and journal included, is counted). The cache entry is
   built once, untimed. Then --sandboxes sandboxes prepare their rootfs, --concurrency at a time, each in a process
   of its own (one shim per sandbox): cache = RootfsCache.acquire on a hit; baseline = a per-sandbox erofs image of
   the same chain (what preparing without a cache costs: format a layer per sandbox). Each process times its own
   call. Bytes written per sandbox = sectors written to the loop device across the run (after sync) / sandboxes;
   the process's own /proc/self/io write_bytes is shown beside it.
2. Guest (q35, TCG): the cached image on two pmem slots; a container reads every /bulk file through a DAX mount,
   another through a plain mount, after dropping caches; page cache growth = Cached+Buffers after - before.
   --rounds of each, alternating; medians.

Last line, one JSON object:
{"prep_ms_p50", "bytes_written_per_sandbox", "dax_cache_growth_ratio", "nodax_cache_growth_ratio", ...baseline}
Needs root. Removes the loop device, mounts, files and VM it made, also when interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hack.spec import print_aims  # noqa: E402
from rund.agent import LayeredRootfs  # noqa: E402
from rund.resources.rootfs import RootfsCache, SnapshotMount, plan_source  # noqa: E402
from rund.resources.rootfs.build import build_image  # noqa: E402
from rund.resources.rootfs.scratch import Scratch  # noqa: E402
from rund.tests.rootfs_guest import RootfsGuest, page_cache_growth_script, parse_growth  # noqa: E402
from rund.tests.rootfs_trees import bulk_layer, lower_layer, upper_layer  # noqa: E402

MiB = 1 << 20
SLOT = 64 * MiB

_worker: dict = {}


def _init_worker(cache_dir: str, mounts: list[SnapshotMount]) -> None:
    _worker["cache_dir"] = cache_dir
    _worker["mounts"] = mounts


def _write_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))


def prep_cached(owner: str) -> tuple[float, int]:
    cache = RootfsCache(_worker["cache_dir"], slot_bytes=SLOT, max_bytes=4 << 30)  # what a shim does at start
    written = _write_bytes()
    started = time.perf_counter()
    image = cache.acquire(_worker["mounts"], owner)
    elapsed = time.perf_counter() - started
    assert image.cached and not image.built
    return elapsed, _write_bytes() - written


def prep_baseline(owner: str) -> tuple[float, int]:
    cache_dir = _worker["cache_dir"]
    written = _write_bytes()
    started = time.perf_counter()
    source = plan_source(_worker["mounts"])
    with Scratch(f"{cache_dir}/tmp", owner) as scratch:
        out = f"{cache_dir}/baseline/{owner}.erofs"
        build_image(source, f"{scratch.path}/image.erofs", scratch.path, SLOT)
        os.rename(f"{scratch.path}/image.erofs", out)
    elapsed = time.perf_counter() - started
    return elapsed, _write_bytes() - written


def sectors_written(device: str) -> int:
    os.sync()
    with open(f"/sys/block/{os.path.basename(device)}/stat") as f:
        return int(f.read().split()[6])


def run_side(name: str, fn, device: str, cache_dir: str, mounts, sandboxes: int, concurrency: int) -> dict:
    before = sectors_written(device)
    samples: list[tuple[float, int]] = []
    with ProcessPoolExecutor(concurrency, initializer=_init_worker, initargs=(cache_dir, mounts)) as pool:
        list(pool.map(_noop, range(concurrency)))  # workers exist before the clock starts
        for wave in range(0, sandboxes, concurrency):
            owners = [f"{name}-{i}" for i in range(wave, min(sandboxes, wave + concurrency))]
            samples += list(pool.map(fn, owners))  # one wave: `concurrency` sandboxes at the same moment
    device_bytes = (sectors_written(device) - before) * 512
    times = sorted(t * 1000 for t, _ in samples)
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9) - 1],
            "device_bytes_per_sandbox": device_bytes / sandboxes,
            "task_write_bytes_per_sandbox": sum(w for _, w in samples) / sandboxes}


def _noop(_: int) -> None:
    return None


def host_part(top: str, sandboxes: int, concurrency: int, bulk_mib: int) -> tuple[dict, dict, float, str, list]:
    backing, mnt = f"{top}/fs.img", f"{top}/fs"
    os.makedirs(mnt)
    with open(backing, "wb") as f:
        f.truncate(3 << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", backing], check=True)
    device = subprocess.run(["losetup", "--find", "--show", backing], check=True, capture_output=True,
                            text=True).stdout.strip()
    cleanups = [lambda: subprocess.run(["losetup", "-d", device], check=False)]
    subprocess.run(["mount", device, mnt], check=True)
    cleanups.append(lambda: subprocess.run(["umount", mnt], check=False))
    layers = [f"{mnt}/layers/{n}/fs" for n in (3, 2, 1)]
    for path in layers:
        os.makedirs(path)
    bulk_layer(layers[2], bulk_mib * MiB)
    lower_layer(layers[1])
    upper_layer(layers[0])
    cache_dir = f"{mnt}/cache"
    os.makedirs(f"{cache_dir}/baseline")
    mounts = [SnapshotMount("overlay", "overlay", (f"lowerdir={':'.join(layers)}",))]
    cache = RootfsCache(cache_dir, slot_bytes=SLOT, max_bytes=4 << 30)
    started = time.perf_counter()
    image = cache.acquire(mounts, "warm-up")  # the one build; untimed in the comparison
    build_s = time.perf_counter() - started
    cached = run_side("cached", prep_cached, device, cache_dir, mounts, sandboxes, concurrency)
    baseline = run_side("baseline", prep_baseline, device, cache_dir, mounts, sandboxes, concurrency)
    stats = cache.statistics()
    assert stats.entries == 1 and stats.pinned == sandboxes + 1, stats
    copy = f"{top}/image.erofs"  # the guest part maps it after the loop fs is gone
    subprocess.run(["cp", "--sparse=always", str(image.path), copy], check=True)
    return cached, baseline, build_s, copy, cleanups


def guest_part(top: str, image: str, rounds: int) -> tuple[list[float], list[float]]:
    base = Path(top) / "vm"
    base.mkdir()
    guest = RootfsGuest(base, [(Path(image), SLOT), (Path(image), SLOT)])
    dax_rootfs = LayeredRootfs(base_device="/dev/pmem1", base_fstype="erofs", dax=True, upper_size_bytes=8 * MiB)
    plain_rootfs = LayeredRootfs(base_device="/dev/pmem2", base_fstype="erofs", dax=False, upper_size_bytes=8 * MiB)
    dax, plain = [], []
    try:
        print(f"guest ready in {guest.start():.1f} s", file=sys.stderr)
        for _ in range(rounds):
            for rootfs, ratios in ((dax_rootfs, dax), (plain_rootfs, plain)):
                code, out = guest.sh(rootfs, page_cache_growth_script("/bulk/*"), timeout=300)
                growth, read = parse_growth(out)
                ratios.append(growth / read)
    finally:
        guest.stop()
    return dax, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sandboxes", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--bulk-mib", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-vm", action="store_true", help="skip the guest page cache part")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (loop device, overlay and erofs mounts)")
    top = tempfile.mkdtemp(prefix="rund-bench-rootfs-", dir="/tmp")
    cleanups: list = []
    try:
        cached, baseline, build_s, image, cleanups = host_part(top, args.sandboxes, args.concurrency, args.bulk_mib)
        for cleanup in reversed(cleanups):
            cleanup()
        cleanups = []
        print(f"image: {args.bulk_mib} MiB of bulk data + busybox, 3 layers; first build {build_s * 1000:.0f} ms")
        print(f"{args.sandboxes} sandboxes, {args.concurrency} at a time, each in its own process")
        print(f"{'':<28}{'p50 ms':>10}{'p90 ms':>10}{'disk bytes/sb':>16}{'task write_bytes/sb':>22}")
        for name, side in (("cache hit (acquire)", cached), ("baseline (per-sandbox mkfs)", baseline)):
            print(f"{name:<28}{side['p50_ms']:>10.3f}{side['p90_ms']:>10.3f}"
                  f"{side['device_bytes_per_sandbox']:>16.0f}{side['task_write_bytes_per_sandbox']:>22.0f}")
        print(f"ratio baseline/cache: p50 {baseline['p50_ms'] / cached['p50_ms']:.0f}x, bytes "
              f"{baseline['device_bytes_per_sandbox'] / max(cached['device_bytes_per_sandbox'], 1):.0f}x")
        dax: list[float] = []
        plain: list[float] = []
        if not args.no_vm:
            dax, plain = guest_part(top, image, args.rounds)
            print(f"guest page cache growth / bytes read ({args.bulk_mib} MiB, {args.rounds} rounds): "
                  f"DAX {[f'{r:.4f}' for r in dax]}  without DAX {[f'{r:.4f}' for r in plain]}")
        result = {
            "prep_ms_p50": round(cached["p50_ms"], 4),
            "bytes_written_per_sandbox": round(cached["device_bytes_per_sandbox"]),
            "dax_cache_growth_ratio": round(statistics.median(dax), 5) if dax else None,
            "nodax_cache_growth_ratio": round(statistics.median(plain), 5) if plain else None,
            "baseline_prep_ms_p50": round(baseline["p50_ms"], 3),
            "baseline_bytes_written_per_sandbox": round(baseline["device_bytes_per_sandbox"]),
        }
        print_aims("rootfs", result)
        print(json.dumps(result))
    finally:
        for cleanup in reversed(cleanups):
            cleanup()
        subprocess.run(["rm", "-rf", "--one-file-system", top], check=False)


if __name__ == "__main__":
    main()
