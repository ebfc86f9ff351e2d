"""Container rootfs from the image cache in the real guest (q35, TCG): the guest OS on pmem0 with DAX, one cached
image of a three-layer chain bound to pmem1 (mounted with DAX) and to pmem2 (mounted without, for comparison).
One VM for the whole module."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from rund.agent import LayeredRootfs
from rund.resources.rootfs import RootfsCache, SnapshotMount

from .rootfs_guest import RootfsGuest, page_cache_growth_script, parse_growth
from .rootfs_trees import bulk_layer, erofs_view, lower_layer, overlay_view, upper_layer

pytestmark = [pytest.mark.vm, pytest.mark.root]
MiB = 1 << 20
SLOT = 64 * MiB
BULK = 20 * MiB
UPPER = 8 * MiB
DAX = LayeredRootfs(base_device="/dev/pmem1", base_fstype="erofs", dax=True, upper_size_bytes=UPPER)
NO_DAX = LayeredRootfs(base_device="/dev/pmem2", base_fstype="erofs", dax=False, upper_size_bytes=UPPER)
CHECKED = ("/data", "/opq", "/owned", "/xattrs", "/etc")  # what the agent does not mount over (/dev, /proc, /sys)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Setup:
    def __init__(self, top: str):
        self.top = top
        self.layers = [f"{top}/layers/{n}/fs" for n in (3, 2, 1)]  # lowerdir order: top first
        for path in self.layers:
            os.makedirs(path)
        bulk_layer(self.layers[2], BULK)
        lower_layer(self.layers[1])
        upper_layer(self.layers[0])
        self.cache = RootfsCache(f"{top}/cache", slot_bytes=SLOT, max_bytes=1 << 30)
        mounts = [SnapshotMount("overlay", "overlay", (f"lowerdir={':'.join(self.layers)}",))]
        self.images = [self.cache.acquire(mounts, owner) for owner in ("sandbox-a", "sandbox-b")]
        self.image = self.images[0].path
        self.sha256 = sha256(self.image)


@pytest.fixture(scope="module")
def setup():
    if os.geteuid() != 0 or not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs root and QEMU")
    top = tempfile.mkdtemp(prefix="rund-rootfs-vm-", dir="/tmp")
    try:
        yield Setup(top)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", top], check=False)


@pytest.fixture(scope="module")
def guest(setup):
    base = Path(setup.top) / "vm"
    base.mkdir()
    vm = RootfsGuest(base, [(setup.image, SLOT), (setup.image, SLOT)])
    try:
        print(f"guest agent ready in {vm.start():.1f} s")
        yield vm
    except BaseException:
        print(vm.console())
        raise
    finally:
        vm.stop()


def host_listing(root: str) -> dict[str, str]:
    """path -> 'mode uid gid rdev mtime [sha256]' for the CHECKED trees, as busybox's stat and sha256sum print it."""
    result = {}
    for top in CHECKED:
        for dirpath, dirnames, filenames in os.walk(root + top):
            for name in ["", *dirnames, *filenames] if dirpath == root + top else [*dirnames, *filenames]:
                full = os.path.join(dirpath, name) if name else dirpath
                st = os.lstat(full)
                line = (f"{st.st_mode:x} {st.st_uid} {st.st_gid} {os.major(st.st_rdev):x}:{os.minor(st.st_rdev):x} "
                        f"{int(st.st_mtime)}")
                if stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        line += " " + hashlib.sha256(f.read()).hexdigest()
                result[full[len(root):]] = line
    return result


GUEST_LISTING = (
    f"find {' '.join(CHECKED)} | while read p; do "
    "line=$(stat -c '%f %u %g %t:%T %Y' \"$p\"); "
    "if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then line=\"$line $(sha256sum \"$p\" | cut -d' ' -f1)\"; fi; "
    "echo \"$p $line\"; done")


def guest_listing(output: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("/")}


def test_two_sandboxes_of_one_image_share_one_cached_file(setup):
    a, b = setup.images
    assert a.path == b.path and a.cached and b.cached and a.built and not b.built
    stats = setup.cache.statistics()
    assert (stats.entries, stats.builds, stats.pinned) == (1, 1, 2)
    assert a.path.stat().st_size == SLOT


def test_files_in_the_container_match_the_image(setup, guest):
    code, out = guest.sh(DAX, GUEST_LISTING)
    assert code == 0, out
    with erofs_view(str(setup.image), f"{setup.top}/ef") as ef:
        expected = host_listing(ef)
    assert guest_listing(out) == expected


def test_deletions_and_opaque_dirs_behave_as_in_runc(setup, guest):
    script = "for d in / /data /opq; do echo \"$d: $(ls -a $d | tr '\\n' ' ')\"; done; test -e /data/gone; echo $?"
    code, out = guest.sh(DAX, script)
    with overlay_view(setup.layers, f"{setup.top}/ov") as ov:  # what runc's overlay rootfs shows
        for d in ("/", "/data", "/opq"):
            names = " ".join(sorted([".", "..", *os.listdir(ov + d)]))
            guest_names = " ".join(sorted(next(l for l in out.splitlines() if l.startswith(d + ":")).split()[1:]))
            assert guest_names == names, (d, out)
    assert out.splitlines()[-1] == "1"  # the whiteout hides the file; no 0/0 device shows through
    # The container deletes and re-creates things itself, as it would under runc.
    script = ("rm /data/keep && rm -r /opq && mkdir /opq && ls -a /opq | wc -l && "
              "test ! -e /data/keep && echo deleted; cat /data/hardlink")
    code, out = guest.sh(DAX, script)
    assert code == 0 and out.split() == ["2", "deleted", "kept"], out


def test_writes_land_only_in_the_capped_upper_and_the_image_is_unchanged(setup, guest):
    script = ("echo changed > /data/keep; dd if=/dev/zero of=/new bs=1M count=2 2>/dev/null; "
              "grep ' / ' /proc/mounts | grep -o 'upperdir=[^,]*'; df -k / | tail -1; "
              "cat /data/keep; dd if=/dev/zero of=/too-big bs=1M count=16 2>/dev/null; echo dd=$?")
    code, out = guest.sh(DAX, script)
    lines = out.splitlines()
    assert lines[0].startswith("upperdir=") and "changed" in lines and "dd=1" in lines, out
    total_kb = int(lines[1].split()[1])
    assert total_kb == UPPER // 1024  # df / is the upper: a tmpfs capped at the configured size
    code, out = guest.sh(DAX, "cat /data/keep; ls /new 2>&1")
    assert out.splitlines()[0] == "kept" and "No such file" in out  # a fresh container: the base is untouched
    assert sha256(setup.image) == setup.sha256


def test_reading_the_base_with_dax_does_not_grow_the_page_cache(setup, guest):
    code, out = guest.sh(DAX, page_cache_growth_script("/bulk/*"))
    dax_growth, read = parse_growth(out)
    code, out = guest.sh(NO_DAX, page_cache_growth_script("/bulk/*"))
    nodax_growth, nodax_read = parse_growth(out)
    print(f"page cache growth reading {read} bytes: DAX {dax_growth} bytes, without DAX {nodax_growth} bytes")
    assert read == nodax_read >= BULK * 0.99
    assert dax_growth < 0.01 * read
    assert nodax_growth > 0.9 * read
    assert sha256(setup.image) == setup.sha256
