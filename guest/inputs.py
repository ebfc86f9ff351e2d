"""Everything a guest build is made from, and the key derived from it (the output directory name).

Inputs and its key are pure; resolve() asks apt, dpkg and the host's protobuf, and hashes the repo sources.
It needs no network: a build whose inputs did not change is found without downloading anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from guest import apt, sources, spec, wheel
from guest.hashing import tree_sha256

SCHEMA = 1
KEY_LENGTH = 16  # hex digits of the sha256 used as the directory name


@dataclass(frozen=True)
class Inputs:
    kernel_package: str  # linux-image-<release>
    kernel_version: str
    packages: tuple[tuple[str, str], ...]  # (package, version) of the rootfs packages
    wheels: tuple[tuple[str, str], ...]  # (distribution, version)
    sources: tuple[tuple[str, str], ...]  # (name, tree sha256): proto, agent, guest (the recipe)
    host_tools: tuple[tuple[str, str], ...]  # (host package, version)

    @property
    def kernel_release(self) -> str:
        return self.kernel_package.removeprefix("linux-image-")

    def as_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "kernel": {"package": self.kernel_package, "version": self.kernel_version},
            "packages": dict(sorted(self.packages)),
            "wheels": dict(sorted(self.wheels)),
            "sources": dict(sorted(self.sources)),
            "host_tools": dict(sorted(self.host_tools)),
        }

    def key(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_LENGTH]


def source_hashes(repo: Path = sources.REPO) -> tuple[tuple[str, str], ...]:
    out = [(pkg, tree_sha256(repo, sources.shipped_files(pkg, repo))) for pkg in spec.SHIPPED_PACKAGES]
    out.append(("guest", tree_sha256(repo, sources.recipe_files(repo / "guest"))))
    return tuple(sorted(out))


def resolve(repo: Path = sources.REPO) -> Inputs:
    versions = apt.candidate_versions([spec.KERNEL_METAPACKAGE, *spec.ROOTFS_PACKAGES])
    kernel_package, kernel_version = apt.exact_dependency(
        spec.KERNEL_METAPACKAGE, versions[spec.KERNEL_METAPACKAGE], "linux-image-")
    return Inputs(
        kernel_package=kernel_package,
        kernel_version=kernel_version,
        packages=tuple((p, versions[p]) for p in spec.ROOTFS_PACKAGES),
        wheels=((spec.PROTOBUF_DIST, wheel.host_version()),),
        sources=source_hashes(repo),
        host_tools=tuple((p, apt.installed_version(p)) for p in spec.HOST_TOOL_PACKAGES),
    )
