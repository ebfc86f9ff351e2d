"""Debian packages through the host's apt: candidate versions, downloads into a cache, extraction.

Nothing is installed on the host: packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`.
The parsers are pure; the rest runs apt-cache / apt-get / dpkg-deb.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from guest.errors import PackageResolveError
from guest.hashing import file_sha256
from guest.tools import run


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    path: Path

    def sha256(self) -> str:
        return file_sha256(self.path)


def parse_policy(text: str) -> dict[str, str | None]:
    """`apt-cache policy a b ...` output -> {package: candidate version, or None if apt has none}."""
    out: dict[str, str | None] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1].split(":")[0] if line.count(":") > 1 else line[:-1]
            out[current] = None
        elif current and line.strip().startswith("Candidate:"):
            value = line.split(":", 1)[1].strip()
            out[current] = None if value == "(none)" else value
    return out


_DEP = re.compile(r"^\s*([a-z0-9][a-z0-9+.\-]*)(?::\S+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?\s*$")


def parse_depends(field: str) -> list[tuple[str, str | None, str | None]]:
    """A Depends: field -> [(package, op, version)], taking the first choice of each `a | b` alternative."""
    out = []
    for clause in field.split(","):
        first = clause.split("|")[0]
        m = _DEP.match(first)
        if not m:
            raise PackageResolveError(f"cannot parse dependency {first.strip()!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def parse_control_field(text: str, field: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return None


def candidate_versions(packages: Iterable[str]) -> dict[str, str]:
    packages = list(packages)
    found = parse_policy(run(["apt-cache", "policy", *packages]))
    missing = [p for p in packages if not found.get(p)]
    if missing:
        raise PackageResolveError(f"apt has no candidate for {', '.join(missing)} (apt-get update?)")
    return {p: found[p] for p in packages}  # type: ignore[misc]


def exact_dependency(package: str, version: str, prefix: str) -> tuple[str, str]:
    """The dependency of package=version whose name starts with prefix, pinned with `(= v)`.

    Used to turn linux-image-cloud-amd64 into the concrete linux-image-<release> it pulls in.
    """
    show = run(["apt-cache", "show", f"{package}={version}"])
    stanza = show.split("\n\n")[0]
    depends = parse_control_field(stanza, "Depends") or ""
    for name, op, ver in parse_depends(depends):
        if name.startswith(prefix) and op == "=" and ver:
            return name, ver
    raise PackageResolveError(f"{package}={version} has no pinned dependency named {prefix}*")


def download(package: str, version: str, cache: Path) -> Deb:
    """package=version as a .deb in cache (apt verifies it against the signed index); cached by name+version."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{package}_{version.replace(':', '%3a')}_"
    cached = sorted(cache.glob(glob_escape(stem) + "*.deb"))
    if cached:
        return Deb(package, version, cached[0])
    with tempfile.TemporaryDirectory(dir=cache, prefix=".dl-") as tmp:
        run(["apt-get", "download", "-q", f"{package}={version}"], cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise PackageResolveError(f"apt-get download {package}={version} produced {len(debs)} files")
        final = cache / debs[0].name
        shutil.move(debs[0], final)
    return Deb(package, version, final)


def extract(deb: Path, dest: Path) -> None:
    run(["dpkg-deb", "-x", str(deb), str(dest)])


def installed_version(package: str) -> str:
    """The version of a package installed on the host (for host tools that shape the output)."""
    return run(["dpkg-query", "-W", "-f=${Version}", package]).strip()


def glob_escape(s: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", s)
