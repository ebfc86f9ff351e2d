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
