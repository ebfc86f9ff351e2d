"""Build the guest: `python3 -m guest.build` (progress on stderr). Rebuilds only when an input changed.

Output: guest/out/<key>/{vmlinux, initrd.cpio, rootfs.erofs, manifest.json} and the symlink guest/out/current.
Downloads are cached in guest/out/cache/. A build is assembled in a temp dir and renamed into place, so a reader
never sees half an output; a lock file serializes concurrent builds.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from guest import apt, initramfs, inputs, manifest, rootfs, source_modules, spec, vmlinux, wheel
from guest.artifacts import CURRENT, OUT_DIR, GuestArtifacts, from_dir
from guest.errors import GuestError, ManifestError
from guest.kmod import ModuleTree
from guest.progress import Progress, silent
from guest.sources import REPO


def ensure_built(progress: Callable[[str], None] = silent, out_dir: Path = OUT_DIR) -> GuestArtifacts:
    """The guest build for the current inputs, building it first if needed."""
    return build(progress=progress, out_dir=out_dir)


def build(progress: Callable[[str], None] = silent, out_dir: Path = OUT_DIR, force: bool = False,
          repo: Path = REPO, cache: Path | None = None) -> GuestArtifacts:
    """Build (or find) the guest for the current inputs; repo and cache are for tests (default: this repo,
    out_dir/cache)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir):
        progress("resolving inputs (apt-cache, host protobuf, source hashes)")
        ins = inputs.resolve(repo)
        key = ins.key()
        final = out_dir / key
        if not force and _usable(final):
            progress(f"up to date: {final}")
        else:
            if final.exists():
                shutil.rmtree(final)
            _build_into(final, ins, key, out_dir, cache or out_dir / "cache", repo, progress)
        _point_current(out_dir, key)
        return from_dir(final)


def _build_into(final: Path, ins: inputs.Inputs, key: str, out_dir: Path, cache: Path, repo: Path,
                progress: Callable[[str], None]) -> None:
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".build-{key}-"))
    try:
        result = work / "result"
        result.mkdir()
        downloads: dict[str, dict] = {}

        progress(f"building {key}: kernel {ins.kernel_package} {ins.kernel_version}")
        kdeb = _fetch_deb(ins.kernel_package, ins.kernel_version, cache, downloads, progress)
        kroot = work / "kernel"
        apt.extract(kdeb.path, kroot)
        release = ins.kernel_release
        vmlinuz = kroot / "boot" / f"vmlinuz-{release}"
        progress("extracting vmlinux (lz4)")
        (result / "vmlinux").write_bytes(vmlinux.extract(vmlinuz.read_bytes()))
        source_modules.build(release, ins.kernel_version, cache, work, kroot / "lib" / "modules" / release,
                             lambda p, v: _fetch_deb(p, v, cache, downloads, progress), progress)
        tree = ModuleTree(kroot / "lib" / "modules" / release)

        sysroot = work / "sysroot"
        for package, version in ins.packages:
            deb = _fetch_deb(package, version, cache, downloads, progress)
            apt.extract(deb.path, sysroot)
        wheel_dir = work / "wheel"
        for dist, version in ins.wheels:
            progress(f"fetching wheel {dist}=={version}")
            whl = wheel.download(dist, version, cache)
            downloads[whl.path.name] = {"kind": "wheel", "name": dist, "version": version, "sha256": whl.sha256()}
            wheel.unpack(whl.path, wheel_dir)

        progress("building initramfs")
        initrd = initramfs.build((sysroot / "bin/busybox").read_bytes(), tree)
        (result / "initrd.cpio").write_bytes(initrd.data)

        info = {"key": key, "kernel_release": release, "python": dict(ins.packages)["python3.11-minimal"],
                "protobuf": dict(ins.wheels)[spec.PROTOBUF_DIST], "sources": dict(ins.sources)}
        image = rootfs.build(sysroot=sysroot, wheel_dir=wheel_dir, tree=tree, kernel_release=release, info=info,
                             work=work, out=result / "rootfs.erofs", repo=repo, progress=progress)

        progress("writing manifest")
        details = {
            "kernel_release": release,
            "initrd": {"groups": initrd.groups},
            "rootfs": {"content_size": image.content_size, "files": image.files,
                       "stdlib_modules": image.stdlib_modules, "modules": image.modules,
                       "modules_list": spec.MODULES_LIST, "agent_argv": list(spec.AGENT_ARGV)},
        }
        manifest.write(result, manifest.make(key=key, inputs=ins.as_dict(), downloads=downloads,
                                             outputs_dir=result, details=details))
        os.rename(result, final)
        sizes = {p.name: p.stat().st_size for p in sorted(final.iterdir())}
        progress("done: " + ", ".join(f"{n} {s / 2**20:.1f} MiB" for n, s in sizes.items() if n != "manifest.json"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fetch_deb(package: str, version: str, cache: Path, downloads: dict, progress) -> apt.Deb:
    progress(f"fetching {package}={version}")
    deb = apt.download(package, version, cache)
    downloads[deb.path.name] = {"kind": "deb", "name": package, "version": version, "sha256": deb.sha256()}
    return deb


def _usable(directory: Path) -> bool:
    try:
        manifest.verify(directory, manifest.load(directory))
    except ManifestError:
        return False
    return True


def _point_current(out_dir: Path, key: str) -> None:
    """Repoint guest/out/current atomically (a new symlink renamed over the old one)."""
    link = out_dir / CURRENT
    if link.is_symlink() and os.readlink(link) == key:
        return
    tmp = out_dir / f".{CURRENT}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(key, tmp)
    os.replace(tmp, link)


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    with open(out_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prune(out_dir: Path = OUT_DIR) -> list[Path]:
    """Delete every build except the current one (and leftover temp dirs); the download cache stays."""
    removed = []
    with _locked(out_dir):
        keep = os.readlink(out_dir / CURRENT) if (out_dir / CURRENT).is_symlink() else None
        for p in sorted(out_dir.iterdir()):
            if p.is_dir() and not p.is_symlink() and p.name not in (keep, "cache"):
                shutil.rmtree(p)
                removed.append(p)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m guest.build", description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the inputs did not change")
    parser.add_argument("--prune", action="store_true", help="afterwards, delete all builds but the current one")
    args = parser.parse_args(argv)
    progress = Progress()
    try:
        art = build(progress=progress, force=args.force)
        if args.prune:
            for p in prune():
                progress(f"pruned {p}")
    except GuestError as exc:
        progress(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    print(art.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
