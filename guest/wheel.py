"""The protobuf runtime for the guest: the host's protobuf version, as the cp311 manylinux wheel from PyPI."""

from __future__ import annotations

import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from guest import spec
from guest.errors import PackageResolveError
from guest.hashing import file_sha256
from guest.tools import run


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: Path

    def sha256(self) -> str:
        return file_sha256(self.path)


def host_version(dist: str = spec.PROTOBUF_DIST) -> str:
    """The version installed on the host: the guest must speak the same protobuf runtime."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise PackageResolveError(f"{dist} is not installed on the host") from None


def download(dist: str, version: str, cache: Path) -> Wheel:
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{dist.replace('-', '_')}-{version}-"
    cached = sorted(p for p in cache.glob(stem + "*.whl") if _fits(p.name))
    if cached:
        return Wheel(dist, version, cached[0])
    with tempfile.TemporaryDirectory(dir=cache, prefix=".dl-") as tmp:
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--platform", spec.WHEEL_PLATFORM, "--python-version", spec.WHEEL_PYTHON_VERSION,
             "--implementation", "cp", "-d", tmp, f"{dist}=={version}"])
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise PackageResolveError(f"pip download {dist}=={version} produced {len(wheels)} wheels")
        final = cache / wheels[0].name
        wheels[0].rename(final)
    return Wheel(dist, version, final)


def unpack(wheel: Path, dest: Path) -> list[Path]:
    """Unpack a wheel's files into dest (a wheel is a zip laid out as site-packages); returns what was written."""
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = dest / info.filename
            if not target.resolve().is_relative_to(dest.resolve()):
                raise PackageResolveError(f"{wheel.name}: entry {info.filename!r} escapes the target")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode or 0o644)
            out.append(target)
    return out


def _fits(filename: str) -> bool:
    """cp311 or abi3 wheels for x86_64 linux only (a cache may hold others)."""
    return "x86_64" in filename and "linux" in filename and ("cp311" in filename or "abi3" in filename)
