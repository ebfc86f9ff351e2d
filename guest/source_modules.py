"""Kernel modules the Debian cloud kernel leaves out, built from Debian's own source against its own headers.

The cloud kernel has no 9p (`# CONFIG_NET_9P is not set`), and rund's pod volumes need virtio-9p: the one shared
filesystem a template clone can take after its restore (virtio-fs needs guest RAM shared with its daemon; a clone
maps its template's RAM privately). Building the few 9p files as external modules against the cloud kernel's
linux-headers gives modules made for exactly that kernel's config and symbol versions (nothing forced at load).

Everything comes from apt at the kernel's own version: linux-source-<x.y> (only the module's directories are
unpacked), linux-headers-<release> + its -common and linux-kbuild-<x.y> (extracted into the work dir, never
installed). The host's gcc-12 compiles (the version the kernel was built with; part of the build key). Paths are
mapped out of the objects and debug info stripped, so the bytes do not depend on the work dir.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from guest import apt
from guest.errors import ToolError
from guest.tools import run

# module directory in the kernel tree -> the CONFIG_ symbols that switch its files on
SOURCE_MODULES: dict[str, tuple[str, ...]] = {
    "net/9p": ("CONFIG_NET_9P", "CONFIG_NET_9P_VIRTIO"),
    "fs/9p": ("CONFIG_9P_FS",),
}


def package_names(release: str) -> dict[str, str]:
    """'6.1.0-57-cloud-amd64' -> the source, headers and kbuild packages of that kernel."""
    m = re.fullmatch(r"((\d+)\.(\d+)\.\d+-\d+)-(.+)", release)
    if m is None:
        raise ToolError(["source_modules"], 1, f"cannot parse kernel release {release!r}")
    abi, series = m.group(1), f"{m.group(2)}.{m.group(3)}"
    return {"source": f"linux-source-{series}", "headers": f"linux-headers-{release}",
            "common": f"linux-headers-{abi}-common", "kbuild": f"linux-kbuild-{series}"}


def build(release: str, version: str, cache: Path, work: Path, modules_root: Path,
          fetch: Callable[[str, str], apt.Deb], progress: Callable[[str], None]) -> list[Path]:
    """SOURCE_MODULES for `release` placed under modules_root/kernel/<dir>/; returns them. Compiled once per kernel
    version, compiler and recipe (kept in the download cache: every agent change rebuilds the image)."""
    recipe = hashlib.sha256(Path(__file__).read_bytes() + apt.installed_version("gcc-12").encode()).hexdigest()
    cached = cache / f"modules-{release}-{version}-{recipe[:12]}"
    if not cached.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".modules-"))
        try:
            _compile(release, version, work, tmp, fetch, progress)
            os.rename(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    built = []
    for ko in sorted(cached.rglob("*.ko")):
        dest = modules_root / ko.relative_to(cached)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ko, dest)
        built.append(dest)
    return built


def _compile(release: str, version: str, work: Path, out: Path, fetch: Callable[[str, str], apt.Deb],
             progress: Callable[[str], None]) -> None:
    names = package_names(release)
    root = work / "kbuild-root"
    for what in ("headers", "common", "kbuild"):
        apt.extract(fetch(names[what], version).path, root)
    headers = root / "usr/src" / names["headers"]
    # The flavour's Makefile includes the common tree by its absolute path: point it into our copy.
    makefile = headers / "Makefile"
    makefile.write_text(makefile.read_text().replace("/usr/src/", f"{root}/usr/src/"))
    src = work / "module-src"
    progress(f"unpacking {', '.join(SOURCE_MODULES)} from {names['source']}={version}")
    _unpack_dirs(fetch(names["source"], version).path, src)
    (src / "Kbuild").write_text("".join(f"obj-m += {d}/\n" for d in SOURCE_MODULES))
    configs = [f"{c}=m" for cs in SOURCE_MODULES.values() for c in cs]
    progress(f"compiling {', '.join(SOURCE_MODULES)} for {release}")
    prefix_map = f"-ffile-prefix-map={src}/= -ffile-prefix-map={root}/="
    run(["make", "-s", "-C", str(headers), f"M={src}", f"KCFLAGS={prefix_map}", f"-j{os.cpu_count() or 1}",
         *configs, "modules"])
    for directory in SOURCE_MODULES:
        for ko in sorted((src / directory).glob("*.ko")):
            dest = out / "kernel" / directory / ko.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            run(["strip", "--strip-debug", "-o", str(dest), str(ko)])


def _unpack_dirs(source_deb: Path, dest: Path) -> None:
    """Only SOURCE_MODULES' directories out of linux-source's tarball (the whole tree is ~1.4 GB)."""
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(source_deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=dpkg.stdout, mode="r|") as outer:
            for member in outer:
                if re.fullmatch(r"\./usr/src/linux-source-[\d.]+\.tar\.xz", member.name):
                    _unpack_inner(outer.extractfile(member), dest)
                    break
            else:
                raise ToolError(["dpkg-deb", str(source_deb)], 1, "no linux-source tarball in the package")
    finally:
        dpkg.stdout.close()
        dpkg.wait()


def _unpack_inner(stream, dest: Path) -> None:
    wanted = tuple(f"/{d}/" for d in SOURCE_MODULES)
    with tarfile.open(fileobj=stream, mode="r|xz") as inner:
        for member in inner:
            name = member.name.split("/", 1)[-1]          # drop linux-source-x.y/
            if member.isfile() and any(f"/{name}".startswith(w) for w in wanted):
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(inner.extractfile(member).read())
