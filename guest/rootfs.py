"""The rootfs image: stage a tree (busybox, python3.11 and its stdlib subset, libs, protobuf, proto/, agent/, the
non-initramfs modules), precompile .pyc against preserved mtimes, check it imports, and pack it as erofs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from guest import elf, pysubset, sources, spec
from guest.errors import ElfError, StdlibTraceError
from guest.kmod import ModuleTree, strip_signature
from guest.tools import run

_PYC_MAGIC_3_11 = (3495).to_bytes(2, "little") + b"\r\n"

# Runs in Debian's python3.11: compile each "src\tguest_path" line to a timestamp pyc beside the source.
_COMPILE_CHILD = r"""
import sys, py_compile, importlib.util
for line in sys.stdin.read().splitlines():
    src, dfile = line.split("\t")
    py_compile.compile(src, cfile=importlib.util.cache_from_source(src), dfile=dfile, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
"""


@dataclass(frozen=True)
class Rootfs:
    path: Path
    size: int  # padded
    content_size: int  # before padding
    stdlib_modules: int
    modules: list[str]  # kernel modules in /etc/rund/modules.list order
    files: int


def build(*, sysroot: Path, wheel_dir: Path, tree: ModuleTree, kernel_release: str, info: dict, work: Path,
          out: Path, repo: Path = sources.REPO, progress: Callable[[str], None]) -> Rootfs:
    stage = work / "stage"
    stage.mkdir()
    shipped = {pkg: sources.shipped_files(pkg, repo) for pkg in spec.SHIPPED_PACKAGES}
    our_modules = [m for files in shipped.values() for m in sources.module_names(files, repo)]
    required = [*spec.STDLIB_ROOTS, *spec.EXTRA_ROOTS, *our_modules]

    progress("tracing the stdlib imports of agent/ and proto/ in Debian's python3.11")
    ours = [f for files in shipped.values() for f in files]
    traced = pysubset.trace(
        sysroot,
        required=required,
        optional=pysubset.stdlib_only(pysubset.imported_names(ours)),
        path=[wheel_dir, repo],
    )

    progress(f"staging the tree ({len(traced.modules)} stdlib modules)")
    _make_dirs(stage)
    _stage_busybox(sysroot, stage)
    _copy_from(sysroot, spec.PYTHON_BIN.lstrip("/"), stage)
    os.symlink("python3.11", stage / "usr/bin/python3")
    for mod_file in sorted(set(traced.modules.values())):
        _copy_from(sysroot, str(mod_file.relative_to(sysroot.resolve())), stage)
    (stage / spec.PYTHON_LIB.lstrip("/") / "lib-dynload").mkdir(exist_ok=True)  # a landmark for sys.exec_prefix

    opt = stage / spec.OPT_DIR.lstrip("/")
    for files in shipped.values():
        for f in files:
            _write(opt / f.relative_to(repo), f.read_bytes(), f.stat().st_mode & 0o777)
    for f in sorted(wheel_dir.rglob("*")):
        if f.is_file():
            _write(opt / f.relative_to(wheel_dir), f.read_bytes(), f.stat().st_mode & 0o777)
    _write(stage / spec.SITE_PTH.lstrip("/"), (spec.OPT_DIR + "\n").encode())

    _stage_libraries(sysroot, stage)
    modules = _stage_modules(tree, kernel_release, stage)
    _stage_etc(stage, info)
    _write(stage / spec.INIT.lstrip("/"), init_script().encode(), 0o755)

    progress("compiling .pyc")
    _normalize_times(stage)
    _compile(sysroot, stage)
    stale = stale_pycs(stage)
    if stale:
        raise StdlibTraceError(f"{len(stale)} .pyc do not match their sources, e.g. {stale[0]}")

    progress("checking the staged tree in a chroot: imports, and the agent's command line")
    pysubset.check_in_chroot(stage, required, agent_module=spec.AGENT_MODULE if _has_module(opt, spec.AGENT_MODULE)
                             else None, dlopen=spec.DLOPENED_LIBRARIES)

    progress("packing erofs")
    _normalize_times(stage)  # compiling touched __pycache__ dirs
    run(["mkfs.erofs", "--quiet", "--all-root", "--preserve-mtime", "-Enoinline_data",
         f"-T{spec.SOURCE_DATE_EPOCH}", f"-U{uuid.uuid5(uuid.NAMESPACE_URL, 'rund:' + info['key'])}",
         str(out), str(stage)])
    content_size = out.stat().st_size
    padded = -(-content_size // spec.ROOTFS_ALIGN) * spec.ROOTFS_ALIGN
    os.truncate(out, padded)
    nfiles = sum(1 for _ in stage.rglob("*"))
    return Rootfs(out, padded, content_size, len(traced.modules), modules, nfiles)


def init_script() -> str:
    """/sbin/init of the image: exec the agent as PID 1 (/proc, /sys, /dev are already mounted by the initramfs)."""
    argv = " ".join(spec.AGENT_ARGV)
    return f"#!/bin/sh\n# rund guest init: the agent is PID 1.\nexec {argv}\n"


def stale_pycs(root: Path) -> list[Path]:
    """Sources under root whose __pycache__ pyc is missing or was compiled against another mtime or size."""
    stale = []
    for src in root.rglob("*.py"):
        if src.is_symlink():
            continue
        pyc = src.parent / "__pycache__" / f"{src.stem}.cpython-311.pyc"
        if not pyc.exists():
            stale.append(src)
            continue
        header = pyc.read_bytes()[:16]
        flags, mtime, size = struct.unpack_from("<III", header, 4)
        st = src.stat()
        if header[:4] != _PYC_MAGIC_3_11 or flags != 0 or mtime != int(st.st_mtime) & 0xFFFFFFFF \
                or size != st.st_size & 0xFFFFFFFF:
            stale.append(src)
    return sorted(stale)


def _has_module(root: Path, dotted: str) -> bool:
    return (root / (dotted.replace(".", "/") + ".py")).is_file()


def _make_dirs(stage: Path) -> None:
    for d in (*spec.MOUNT_POINTS, "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/etc/rund", "/lib64",
              "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        (stage / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (stage / "tmp").chmod(0o1777)


def _stage_busybox(sysroot: Path, stage: Path) -> None:
    _copy_from(sysroot, "bin/busybox", stage)
    applets = run([str(sysroot / "bin/busybox"), "--list-full"]).split()
    for rel in applets:
        link = stage / rel
        if rel in (spec.INIT.lstrip("/"), "linuxrc") or link.exists() or link.is_symlink():
            continue  # our /sbin/init, not busybox's
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)


def _stage_libraries(sysroot: Path, stage: Path) -> None:
    """Every shared library that an ELF in the stage needs, transitively, plus the dynamic loader and the
    libraries the agent dlopens."""
    _copy_from(sysroot, "lib64/ld-linux-x86-64.so.2", stage)
    seen: set[str] = set(spec.DLOPENED_LIBRARIES)
    for soname in spec.DLOPENED_LIBRARIES:
        _copy_from(sysroot, _find_library(sysroot, soname), stage)
    pending = [p for p in stage.rglob("*") if p.is_file() and not p.is_symlink() and _is_elf(p)]
    while pending:
        path = pending.pop()
        for soname in elf.needed_libraries(path.read_bytes()):
            if soname in seen:
                continue
            seen.add(soname)
            rel = _find_library(sysroot, soname)
            _copy_from(sysroot, rel, stage)
            pending.append(_real_path(stage, rel))


def _find_library(sysroot: Path, soname: str) -> str:
    for d in pysubset.LIB_DIRS:
        if (sysroot / d / soname).exists() or (sysroot / d / soname).is_symlink():
            return f"{d}/{soname}"
    raise ElfError(f"library {soname} is not in the image's packages (add its Debian package to guest/spec.py)")


def _stage_modules(tree: ModuleTree, kernel_release: str, stage: Path) -> list[str]:
    """The non-initramfs modules under /lib/modules/<release>/, listed in load order (MODULES_LIST) and with a
    modules.dep restricted to themselves (their other dependencies are in the initramfs "core" group)."""
    from guest.initramfs import module_groups

    # A module the rootfs list names is shipped even if an initramfs group has it: /init loads only its machine's
    # groups (virtio_blk: microvm's root, a hotplugged disk's driver on q35).
    initrd = {m for names in module_groups(tree).values() for m in names} - set(spec.ROOTFS_MODULES)
    names = tree.order(spec.ROOTFS_MODULES, already=initrd)
    moddir = stage / "lib/modules" / kernel_release
    rel = {name: str(tree.path(name).relative_to(tree.root)) for name in names}
    for name in names:
        _write(moddir / rel[name], strip_signature(tree.path(name).read_bytes()))
    _write(stage / spec.MODULES_LIST.lstrip("/"), "".join(rel[n] + "\n" for n in names).encode())
    dep_lines = []
    for name in names:
        deps = tree.order([name], already=initrd)[:-1]
        # modules.dep lists the deepest dependency last (modprobe loads the list back to front)
        dep_lines.append(f"{rel[name]}: {' '.join(rel[d] for d in reversed(deps))}".rstrip() + "\n")
    _write(moddir / "modules.dep", "".join(dep_lines).encode())
    return names


def _stage_etc(stage: Path, info: dict) -> None:
    _write(stage / "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    _write(stage / "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    _write(stage / "etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    _write(stage / spec.IMAGE_INFO.lstrip("/"), (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def _compile(sysroot: Path, stage: Path) -> None:
    lines = []
    for src in sorted(stage.rglob("*.py")):
        if not src.is_symlink():
            lines.append(f"{src}\t/{src.relative_to(stage)}")
    run(pysubset.interpreter_argv(sysroot) + ["-I", "-c", _COMPILE_CHILD], input="\n".join(lines).encode())


def _normalize_times(stage: Path) -> None:
    """Every file, link and directory gets SOURCE_DATE_EPOCH: the image is reproducible, and the pyc headers
    (compiled after this) match what erofs stores, because mkfs.erofs -T stamps that same time on everything."""
    t = spec.SOURCE_DATE_EPOCH
    for p in sorted(stage.rglob("*"), reverse=True):
        os.utime(p, (t, t), follow_symlinks=False)
    os.utime(stage, (t, t))


def _copy_from(sysroot: Path, rel: str, stage: Path) -> None:
    """Copy sysroot/rel into the stage, keeping symlinks as symlinks (and copying what they point to)."""
    src, dst = sysroot / rel, stage / rel
    if dst.exists() or dst.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        target = _resolve_in(sysroot, rel)
        _copy_from(sysroot, str(target.relative_to(sysroot)), stage)
    else:
        shutil.copy2(src, dst)


def _resolve_in(sysroot: Path, rel: str) -> Path:
    """Follow one symlink inside sysroot, treating absolute targets as relative to sysroot."""
    link = sysroot / rel
    target = os.readlink(link)
    resolved = sysroot / target.lstrip("/") if target.startswith("/") else link.parent / target
    return Path(os.path.normpath(resolved))


def _real_path(root: Path, rel: str) -> Path:
    path = root / rel
    while path.is_symlink():
        path = _resolve_in(root, str(path.relative_to(root)))
    return path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return elf.is_elf(f.read(4))
