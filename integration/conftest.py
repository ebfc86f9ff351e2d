import os
import tempfile
from pathlib import Path

import pytest

from integration.containerd_daemon import PrivateContainerd

REPO = Path(__file__).resolve().parent.parent


def _require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def containerd():
    """A private containerd 1.6 with this checkout's entry points first on its PATH."""
    _require_root()
    work = Path(tempfile.mkdtemp(prefix="rund-ctd-", dir="/tmp"))
    venv_bin = REPO / ".venv" / "bin"
    d = PrivateContainerd(work, path_prefix=[str(venv_bin)] if venv_bin.is_dir() else [])
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory):
    """A locally built busybox OCI image (no registry is reachable here)."""
    from hack.busybox_image import build
    path = tmp_path_factory.mktemp("images") / "busybox.tar"
    return path, build(path)


@pytest.fixture(scope="module")
def rund_containerd(busybox_tar):
    from hack.busybox_image import IMAGE_NAME, build
    """A private containerd with the busybox image imported, shared by a module's end-to-end tests."""
    _require_root()
    work = Path(tempfile.mkdtemp(prefix="rund-ctd-", dir="/tmp"))
    venv_bin = REPO / ".venv" / "bin"
    d = PrivateContainerd(work, path_prefix=[str(venv_bin)] if venv_bin.is_dir() else [], log_level="info")
    d.start()
    try:
        d.ctr("images", "import", str(busybox_tar[0]))
        d.image = busybox_tar[1]
        other = work / "other.tar"      # a second image (other content, other layer chain)
        d.other_image = build(other, IMAGE_NAME.replace("rund-local", "rund-other"),
                              extra_files={"etc/rund-image": "other\n"})
        d.ctr("images", "import", str(other))
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def pause_tar(tmp_path_factory):
    """A locally built pause image (hack/pause_image.py), CRI's sandbox_image."""
    from hack.pause_image import build
    path = tmp_path_factory.mktemp("images") / "pause.tar"
    return path, build(path)


@pytest.fixture(scope="module")
def cri_containerd(request, busybox_tar, pause_tar):
    """A private containerd serving CRI: runtime handlers `runc` and `rund`, a bridge network of its own
    (integration/cri/network.py), our pause image as sandbox_image and busybox (`.image`) imported into k8s.io.
    Shared by a module's tests; `.log_dir` is a directory for pod logs. A module's RUND_CONFIG (TOML text), if it
    has one, is the rund handler's config (its ConfigPath, `.rund_config_path`)."""
    _require_root()
    work = Path(tempfile.mkdtemp(prefix="rund-cri-", dir="/tmp"))
    venv_bin = REPO / ".venv" / "bin"
    rund_config = getattr(request.module, "RUND_CONFIG", None)
    if rund_config is not None:
        (work / "rund.toml").write_text(rund_config)
    d = PrivateContainerd(work, path_prefix=[str(venv_bin)] if venv_bin.is_dir() else [], log_level="info",
                          cri=True, sandbox_image=pause_tar[1],
                          rund_config_path=str(work / "rund.toml") if rund_config is not None else None)
    try:
        d.start()
        d.cri_import(pause_tar[0])
        d.cri_import(busybox_tar[0])
        d.image = busybox_tar[1]
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def cri(cri_containerd):
    """A CRI client (integration/cri/client.py) on `cri_containerd`, ready: CNI loaded, both images known."""
    from integration.cri.client import CriClient
    with CriClient(cri_containerd.address) as client:
        client.wait_ready()
        client.wait_image(cri_containerd.sandbox_image)
        client.wait_image(cri_containerd.image)
        yield client
