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
