"""A busybox OCI image built locally (no registry is reachable): Debian's static busybox plus its applet links,
as one gzip layer in an OCI image-layout tar that `ctr images import` takes.

    python3 -m hack.busybox_image /tmp/busybox.tar     # prints the image name
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
IMAGE_NAME = "docker.io/library/busybox:rund-local"
EPOCH = 1700000000            # fixed mtimes: the same inputs give the same digests


def _layer(busybox: Path, extra_files: dict[str, str]) -> bytes:
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, EPOCH
            tar.addfile(info)
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev", "var"):
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        data = busybox.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, EPOCH
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(set(applets)):
            if path == "bin/busybox" or path.count("/") != 1 and not path.startswith("usr/"):
                continue
            link = tarfile.TarInfo(path)
            link.type, link.linkname, link.mtime, link.mode = tarfile.SYMTYPE, "/bin/busybox", EPOCH, 0o777
            tar.addfile(link)
        files = {"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
                 "etc/group": "root:x:0:\nnogroup:x:65534:\n", **extra_files}
        for name, text in sorted(files.items()):
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(raw), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
    info.size, info.mtime = len(data), EPOCH
    tar.addfile(info, io.BytesIO(data))
    return digest, len(data)


def build(out: Path, name: str = IMAGE_NAME, busybox: Path = BUSYBOX, extra_files: dict[str, str] | None = None) -> str:
    """extra_files: path in the image (no leading /) -> text, e.g. to make a second, different image."""
    layer = _layer(busybox, extra_files or {})
    return write_image(out, name, layer, {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]})


def write_image(out: Path, name: str, layer: bytes, image_config: dict) -> str:
    """One uncompressed layer tar and the image's runtime config (Env, Entrypoint, Cmd, User ...) as an OCI
    image-layout tar named `name`; the same inputs give the same digests."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    gz = gzip.compress(layer, mtime=EPOCH)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        layer_digest, layer_size = _blob(tar, gz)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH)),
        }, sort_keys=True).encode()
        config_digest, config_size = _blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": layer_size}],
        }, sort_keys=True).encode()
        manifest_digest, manifest_size = _blob(tar, manifest)
        index = json.dumps({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                           "size": manifest_size, "platform": {"architecture": "amd64", "os": "linux"},
                           "annotations": {"io.containerd.image.name": name,
                                           "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}],
        }, sort_keys=True).encode()
        for fname, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)):
            info = tarfile.TarInfo(fname)
            info.size, info.mtime = len(data), EPOCH
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return name


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "busybox-oci.tar")))
