"""Sandbox identity on a real network namespace (the agent's own, with a veth as its eth0): SetupSandbox,
PostRestore (entropy + reseed, new MAC/IP, hostname), DestroySandbox; and a layered rootfs on erofs."""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from rund import errors
from rund.agent import (
    AgentClient, Interface, IPAddress, LayeredRootfs, NetworkConfig, PathRootfs, Route, StdioConfig,
)

from .agent_process import AgentProcess
from .helpers import read_all, spec

pytestmark = pytest.mark.root


def in_agent_ns(agent: AgentProcess, *argv: str, ns: str = "--net") -> str:
    return subprocess.run(["nsenter", f"--target={agent.pid}", ns, *argv], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def net_agent():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with AgentProcess(setup_shell="ip link add eth0 type veth peer name peer0") as agent:
        yield agent


NETWORK = NetworkConfig(
    interfaces=(Interface("eth0", "02:00:0a:58:00:05", 1400, (IPAddress("10.88.0.5", 16),)),),
    routes=(Route("default", "10.88.0.1"), Route("10.99.0.0/16", "", "eth0")),
    dns_servers=("10.88.0.2",), dns_searches=("pod.local",))


async def test_setup_sandbox_gives_the_guest_its_identity(net_agent, busybox_rootfs):
    async with await AgentClient.connect_unix(net_agent.socket) as client:
        await client.setup_sandbox("sb1", hostname="pod-a", network=NETWORK)
        with pytest.raises(errors.AlreadyExists):
            await client.setup_sandbox("sb1", hostname="pod-a")
        assert in_agent_ns(net_agent, "hostname", ns="--uts").strip() == "pod-a"
        link = in_agent_ns(net_agent, "ip", "-o", "link", "show", "eth0")
        assert "02:00:0a:58:00:05" in link and "mtu 1400" in link
        assert "10.88.0.5/16" in in_agent_ns(net_agent, "ip", "-o", "addr", "show", "eth0")
        routes = in_agent_ns(net_agent, "ip", "route")
        assert "default via 10.88.0.1 dev eth0" in routes and "10.99.0.0/16 dev eth0" in routes
        with open(os.path.join(net_agent.state_dir, "resolv.conf")) as f:
            assert f.read() == "nameserver 10.88.0.2\nsearch pod.local\n"

        # Containers share the pod's network (the guest's), not its hostname.
        await client.create_container("c", spec(["sh", "-c", "ip -o addr show eth0; hostname"], hostname="c1"),
                                      PathRootfs(busybox_rootfs), StdioConfig(stdout=True))
        await client.start_container("c")
        out = (await read_all(client, "c")).decode()
        assert "10.88.0.5/16" in out and out.strip().endswith("c1")

        with pytest.raises(errors.NotFound):
            await client.destroy_sandbox("other")
        await client.destroy_sandbox("sb1")
        with pytest.raises(errors.NotFound):
            await client.wait_process("c")  # destroy removed the containers


async def test_post_restore_reseeds_and_takes_a_new_identity(net_agent):
    clone = NetworkConfig(interfaces=(Interface("eth0", "02:00:0a:58:00:09", 0, (IPAddress("10.88.0.9", 16),)),),
                          routes=(Route("", "10.88.0.1"),))
    async with await AgentClient.connect_unix(net_agent.socket) as client:
        await client.setup_sandbox("template", hostname="tmpl", network=NETWORK)
        before = await client.health()
        await client.post_restore(None, os.urandom(64), clone, hostname="clone-1")
        after = await client.health()
        assert after.uptime_ns > before.uptime_ns
        assert in_agent_ns(net_agent, "hostname", ns="--uts").strip() == "clone-1"
        # The network identity goes in place once the agent is idle (agent/idle.py).
        deadline = time.monotonic() + 10
        while "02:00:0a:58:00:09" not in in_agent_ns(net_agent, "ip", "-o", "link", "show", "eth0"):
            assert time.monotonic() < deadline, "PostRestore's network never went in place"
            time.sleep(0.01)
        addresses = in_agent_ns(net_agent, "ip", "-o", "-4", "addr", "show", "eth0")
        assert "10.88.0.9/16" in addresses and "10.88.0.5" not in addresses  # the template's is gone
        assert "default via 10.88.0.1" in in_agent_ns(net_agent, "ip", "route")
        with pytest.raises(errors.InvalidArgument) as info:
            await client.post_restore(None, b"", NetworkConfig(interfaces=(Interface("nope0"),)))
        assert "network.interfaces[0].name" in str(info.value)


async def test_a_container_made_right_after_post_restore_finds_the_new_network(net_agent, busybox_rootfs):
    """PostRestore answers before its network is in place; a container (or exec) made next waits for it, and gets
    its error should it fail."""
    clone = NetworkConfig(interfaces=(Interface("eth0", "02:00:0a:58:00:0b", 0, (IPAddress("10.88.0.11", 16),)),),
                          routes=(Route("", "10.88.0.1"),))
    async with await AgentClient.connect_unix(net_agent.socket) as client:
        await client.post_restore(None, os.urandom(64), clone, hostname="clone-2")
        await client.create_container("c", spec(["sh", "-c", "ip -o addr show eth0; ip route"]),
                                      PathRootfs(busybox_rootfs), StdioConfig(stdout=True))
        await client.start_container("c")
        out = (await read_all(client, "c")).decode()
        assert "10.88.0.11/16" in out and "default via 10.88.0.1" in out
        await client.wait_process("c")      # its output's end can come before its exit
        await client.remove_container("c")
        # A route the kernel refuses (its gateway is on no link) fails the next container, not PostRestore.
        await client.post_restore(None, os.urandom(64), NetworkConfig(routes=(Route("", "192.0.2.1"),)))
        with pytest.raises(errors.RundError) as info:
            await client.create_container("d", spec(["true"]), PathRootfs(busybox_rootfs), StdioConfig())
        assert "network.routes[0]" in str(info.value)


@pytest.fixture
def erofs_device(busybox_rootfs):
    if not shutil.which("mkfs.erofs") or not shutil.which("losetup"):
        pytest.skip("needs erofs-utils and losetup")
    workdir = tempfile.mkdtemp(prefix="agent-erofs-", dir="/tmp")
    device = None
    try:
        image = os.path.join(workdir, "base.erofs")
        subprocess.run(["mkfs.erofs", "--quiet", "--all-root", "-Enoinline_data", image, busybox_rootfs],
                       check=True)
        device = subprocess.run(["losetup", "--find", "--show", "--read-only", image], check=True,
                                capture_output=True, text=True).stdout.strip()
        yield device
    finally:
        if device:
            subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_layered_rootfs_is_assembled_and_removal_cleans_up_its_mounts(agent, erofs_device):
    rootfs = LayeredRootfs(base_device=erofs_device, base_fstype="erofs", upper_size_bytes=8 << 20)
    state = os.path.join(agent.state_dir, "containers", "layered")
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container(
            "layered", spec(["sh", "-c", "echo hi > /tmp/new && cat /tmp/new && grep ' / ' /proc/mounts"]),
            rootfs, StdioConfig(stdout=True))
        mine = [m for m in agent.mounts() if m.startswith(state)]
        assert sorted(mine) == sorted(os.path.join(state, d) for d in ("base", "upper", "rootfs"))
        await client.start_container("layered")
        out = (await read_all(client, "layered")).decode()
        assert out.startswith("hi\noverlay / overlay")
        assert (await client.wait_process("layered")).code == 0
        await client.remove_container("layered")
    assert not [m for m in agent.mounts() if m.startswith(state)]
    assert not os.path.exists(state)
