"""Agent test harness: busybox rootfs dirs and a real agent subprocess (async tests run through the root conftest)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from .agent_process import AgentProcess

def make_busybox_rootfs(path: str) -> str:
    """A minimal container rootfs: Debian's static busybox and its applets, /etc/passwd, empty mount points."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    for sub in ("bin", "proc", "dev", "sys", "tmp", "etc", "root", "home/user"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    shutil.copy2("/bin/busybox", os.path.join(path, "bin", "busybox"))
    applets = os.popen("/bin/busybox --list").read().split()
    for applet in applets:
        link = os.path.join(path, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write("root:x:0:\nuser:x:1000:\n")
    return path


@pytest.fixture(scope="session")
def busybox_rootfs() -> str:
    """Shared read-mostly rootfs; tests that write into it use their own (fresh_rootfs)."""
    top = tempfile.mkdtemp(prefix="agent-rootfs-", dir="/tmp")
    yield make_busybox_rootfs(os.path.join(top, "rootfs"))
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def fresh_rootfs() -> str:
    top = tempfile.mkdtemp(prefix="agent-rootfs-", dir="/tmp")
    yield make_busybox_rootfs(os.path.join(top, "rootfs"))
    shutil.rmtree(top, ignore_errors=True)


def _root_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts)")


@pytest.fixture(scope="module")
def agent() -> AgentProcess:
    """One agent per test module, in its own mount/uts/net namespaces, without cgroups."""
    _root_or_skip()
    with AgentProcess() as process:
        yield process


@pytest.fixture
def own_agent() -> AgentProcess:
    """An agent for one test (sandbox identity, network: state that tests must not share)."""
    _root_or_skip()
    with AgentProcess() as process:
        yield process
