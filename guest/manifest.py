"""manifest.json of a build: every input with version and sha256, every output with size and sha256."""

from __future__ import annotations

import json
from pathlib import Path

from guest.errors import ManifestError
from guest.hashing import file_sha256

SCHEMA = 1
FILENAME = "manifest.json"
OUTPUTS = ("vmlinux", "initrd.cpio", "rootfs.erofs")


def make(*, key: str, inputs: dict, downloads: dict[str, dict], outputs_dir: Path, details: dict) -> dict:
    """downloads: {filename: {"kind", "name", "version", "sha256"}}; outputs are hashed from outputs_dir."""
    return {
        "schema": SCHEMA,
        "key": key,
        "inputs": inputs,
        "downloads": downloads,
        "outputs": {name: describe(outputs_dir / name) for name in OUTPUTS},
        **details,
    }


def describe(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def write(directory: Path, manifest: dict) -> Path:
    path = directory / FILENAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def load(directory: Path) -> dict:
    path = directory / FILENAME
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise ManifestError(f"{path} has schema {manifest.get('schema') if isinstance(manifest, dict) else None}, "
                            f"expected {SCHEMA}")
    for field in ("key", "kernel_release", "outputs", "inputs"):
        if field not in manifest:
            raise ManifestError(f"{path} has no {field!r}")
    for name in OUTPUTS:
        if name not in manifest["outputs"]:
            raise ManifestError(f"{path} lists no output {name!r}")
    return manifest


def verify(directory: Path, manifest: dict, deep: bool = False) -> None:
    """Raise ManifestError unless every output exists with the recorded size (and sha256, if deep)."""
    for name, recorded in manifest["outputs"].items():
        path = directory / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ManifestError(f"{path} is missing") from None
        if size != recorded["size"]:
            raise ManifestError(f"{path} is {size} bytes, manifest says {recorded['size']}")
        if deep and file_sha256(path) != recorded["sha256"]:
            raise ManifestError(f"{path} does not match its sha256 in the manifest")
