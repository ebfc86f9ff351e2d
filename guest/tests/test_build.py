"""The real build: outputs, manifest, caching by input hash (vm: needs apt's mirror once, then the cache)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from guest import artifacts, build, manifest, spec, vmlinux
from guest.artifacts import OUT_DIR
from guest.kmod import SIGNATURE_MAGIC
from guest.sources import REPO

pytestmark = pytest.mark.vm


def test_outputs_match_the_manifest_and_current_points_at_them(built):
    m = manifest.load(built.directory)
    manifest.verify(built.directory, m, deep=True)
    assert artifacts.current() == built
    assert built.rootfs_size % spec.ROOTFS_ALIGN == 0
    assert built.rootfs_content_size <= built.rootfs_size < built.rootfs_content_size + spec.ROOTFS_ALIGN
    kinds = {d["kind"] for d in m["downloads"].values()}
    assert kinds == {"deb", "wheel"}
    assert {d["name"] for d in m["downloads"].values()} >= {"busybox-static", "protobuf", f"linux-image-{built.kernel_release}"}
    assert all(len(d["sha256"]) == 64 for d in m["downloads"].values())


def test_vmlinux_is_an_elf_with_a_pvh_entry(built):
    data = built.vmlinux.read_bytes()
    assert data[:4] == b"\x7fELF" and vmlinux.has_pvh_entry(data)


def test_initramfs_holds_init_busybox_and_unsigned_modules_in_groups(built, tmp_path):
    subprocess.run(["cpio", "-idm", "--quiet"], stdin=open(built.initrd, "rb"), cwd=tmp_path, check=True)
    assert (tmp_path / "init").read_bytes().startswith(b"#!/bin/busybox sh")
    assert os.access(tmp_path / "bin/busybox", os.X_OK)
    groups = manifest.load(built.directory)["initrd"]["groups"]
    assert groups["pmem"] == ["libnvdimm", "nd_virtio", "virtio_pmem", "nd_btt", "nd_pmem"]
    assert groups["core"] == ["virtio_ring", "virtio"]
    for group, names in groups.items():
        listed = (tmp_path / f"lib/modules/{group}.list").read_text().split()
        assert listed == [f"/lib/modules/{n}.ko" for n in names]
        for n in names:
            assert not (tmp_path / f"lib/modules/{n}.ko").read_bytes().endswith(SIGNATURE_MAGIC)


@pytest.fixture
def repo_copy(tmp_path):
    """A frozen copy of the sources (the real tree changes under parallel work)."""
    repo = tmp_path / "repo"
    for pkg in ("proto", "agent", "guest"):
        shutil.copytree(REPO / pkg, repo / pkg, ignore=shutil.ignore_patterns("out", "__pycache__", ".pytest_cache"))
    return repo


def test_same_inputs_build_once_changed_sources_build_anew_and_move_current(built, repo_copy, tmp_path):
    out = tmp_path / "out"
    first = build.build(out_dir=out, repo=repo_copy, cache=OUT_DIR / "cache")
    stamp = first.manifest.stat().st_mtime_ns
    t = time.monotonic()
    assert build.build(out_dir=out, repo=repo_copy, cache=OUT_DIR / "cache") == first
    assert first.manifest.stat().st_mtime_ns == stamp  # nothing was rebuilt
    assert time.monotonic() - t < 10

    with open(repo_copy / "agent" / "__init__.py", "a") as f:
        f.write("# changed\n")
    second = build.build(out_dir=out, repo=repo_copy, cache=OUT_DIR / "cache")
    assert second.key != first.key
    m1, m2 = manifest.load(first.directory), manifest.load(second.directory)
    assert m2["outputs"]["rootfs.erofs"]["sha256"] != m1["outputs"]["rootfs.erofs"]["sha256"]
    assert m2["outputs"]["vmlinux"] == m1["outputs"]["vmlinux"]
    assert m2["outputs"]["initrd.cpio"] == m1["outputs"]["initrd.cpio"]
    assert os.readlink(out / "current") == second.key
    assert first.directory.exists()  # older builds stay until pruned
    assert build.prune(out) == [first.directory]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(["current", second.key])


def test_the_build_is_reproducible(built, repo_copy, tmp_path):
    first = build.build(out_dir=tmp_path / "a", repo=repo_copy, cache=OUT_DIR / "cache")
    second = build.build(out_dir=tmp_path / "b", repo=repo_copy, cache=OUT_DIR / "cache")
    assert manifest.load(first.directory)["outputs"] == manifest.load(second.directory)["outputs"]


@pytest.fixture(scope="module")
def image_tree(built, tmp_path_factory):
    """The rootfs extracted by erofs-utils' own fsck (which also checks the image's integrity)."""
    out = tmp_path_factory.mktemp("rootfs") / "x"
    subprocess.run(["fsck.erofs", f"--extract={out}", str(built.rootfs)], check=True, capture_output=True)
    return out


def test_image_pycs_match_their_sources_as_stored_in_erofs(image_tree):
    from guest.rootfs import stale_pycs

    assert stale_pycs(image_tree) == []
    assert (image_tree / "usr/lib/python3.11/__pycache__/os.cpython-311.pyc").is_file()


def test_image_starts_the_agent_and_finds_opt_rund(image_tree):
    init = (image_tree / "sbin/init").read_text()
    assert init.startswith("#!/bin/sh") and "exec /usr/bin/python3.11 -I -m agent.main --pid1" in init
    assert os.access(image_tree / "sbin/init", os.X_OK)
    assert (image_tree / "usr/lib/python3/dist-packages/rund.pth").read_text() == "/opt/rund\n"
    for pkg in ("opt/rund/proto/ttrpc", "opt/rund/agent", "opt/rund/google/protobuf", "opt/rund/google/_upb"):
        assert (image_tree / pkg).is_dir(), pkg
    assert not list(image_tree.glob("opt/rund/*/tests"))
    assert os.readlink(image_tree / "bin/sh") == "/bin/busybox"
    for d in spec.MOUNT_POINTS:
        assert (image_tree / d.lstrip("/")).is_dir()


def test_image_carries_the_libraries_the_agent_dlopens(image_tree):
    """libseccomp: no ELF needs it, the agent loads it with ctypes to compile linux.seccomp profiles."""
    for soname in spec.DLOPENED_LIBRARIES:
        dirs = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
        assert any((image_tree / d / soname).exists() for d in dirs), soname


def test_image_leaves_out_what_the_guest_does_not_need(image_tree):
    dynload = {p.name.split(".")[0] for p in (image_tree / "usr/lib/python3.11/lib-dynload").iterdir()}
    assert "_ctypes" in dynload
    assert not dynload & {"_hashlib", "_ssl", "_sqlite3", "_bz2", "_lzma", "_decimal"}
    assert not list(image_tree.rglob("libssl*")) and not list(image_tree.rglob("libcrypto*"))
    assert not (image_tree / "usr/lib/python3.11/unittest").exists()


def test_image_modules_list_and_dep_agree_and_every_file_is_there(built, image_tree):
    moddir = image_tree / "lib/modules" / built.kernel_release
    listed = (image_tree / spec.MODULES_LIST.lstrip("/")).read_text().split()
    assert listed[0].endswith("/virtio_console.ko")  # the agent's channel first
    assert {p.rsplit("/", 1)[1] for p in listed} >= {"vsock.ko", "vmw_vsock_virtio_transport.ko", "virtio_net.ko",
                                                      "overlay.ko", "fuse.ko", "virtiofs.ko"}
    for rel in listed:
        assert not (moddir / rel).read_bytes().endswith(SIGNATURE_MAGIC)
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    assert set(deps) == set(listed)
    for rel, needs in deps.items():  # every dependency is listed (and so loaded) before the module
        assert all(listed.index(d) < listed.index(rel) for d in needs)
