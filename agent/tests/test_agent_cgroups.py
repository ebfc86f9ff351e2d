"""Per-container cgroup v2 groups, on whatever v2 hierarchy this host has (hybrid: /sys/fs/cgroup/unified,
which carries no controllers, so limits are skipped with a warning; placement, stats, kill and removal are real)."""
import asyncio
import os

import pytest

from rund import errors
from rund.agent import AgentClient, PathRootfs, StdioConfig

from .agent_process import AgentProcess
from .helpers import process, read_all, read_until, spec

pytestmark = pytest.mark.root


def _v2_mount() -> str | None:
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    return None


@pytest.fixture
def cgroup_agent():
    mount = _v2_mount()
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and a cgroup v2 hierarchy")
    root = os.path.join(mount, f"rund-agent-test-{os.getpid()}")
    try:
        with AgentProcess(cgroup_root=root) as agent:
            yield agent, root
    finally:
        if os.path.isdir(root):
            os.rmdir(root)


def cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))


async def test_containers_get_their_own_group_with_stats_and_cleanup(cgroup_agent, busybox_rootfs):
    agent, root = cgroup_agent
    relative = "/" + os.path.basename(root)
    async with await AgentClient.connect_unix(agent.socket) as client:
        init = await client.create_container("cg", spec(["sh", "-c", "i=0; while [ $i -lt 200000 ]; do "
                                                                     "i=$((i+1)); done; sleep 600"]),
                                             PathRootfs(busybox_rootfs))
        group = cgroup_of(init)     # the first container takes the group made ahead (.spare-1), later ones their id
        assert group in (f"{relative}/cg", f"{relative}/.spare-1")
        await client.start_container("cg")
        pid = await client.exec_process("cg", "e", process(["sleep", "600"]))
        assert cgroup_of(pid) == group
        assert set(await client.list_processes("cg")) == {init, pid}
        await asyncio.sleep(0.5)
        stats = await client.stats_container("cg")
        assert stats.cpu.usage_total_ns > 0
        assert stats.cpu.usage_total_ns >= stats.cpu.usage_user_ns
        with pytest.raises(errors.InvalidArgument) as info:
            await client.update_container("cg", {"unified": {"no.such_file": "1"}})
        assert "resources_json.unified.no.such_file" in str(info.value)
        await client.update_container("cg", {"pids": {"limit": 50}})  # no pids controller here: logged, skipped
        await client.remove_container("cg", force=True)
    assert not os.path.exists(os.path.join(root, os.path.basename(group)))


async def test_forced_removal_kills_every_process_of_the_group(cgroup_agent, busybox_rootfs):
    agent, root = cgroup_agent
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("tree", spec(["sh", "-c", "sleep 600 & sleep 600 & echo started; wait"]),
                                      PathRootfs(busybox_rootfs), StdioConfig(stdout=True))
        await client.start_container("tree")
        assert (await client.read_stdout("tree")).data == b"started\n"
        pids = await client.list_processes("tree")
        assert len(pids) == 3
        group = cgroup_of(pids[0])
        await client.remove_container("tree", force=True)
    assert not any(os.path.exists(f"/proc/{pid}") and _alive(pid) for pid in pids)
    assert not os.path.exists(os.path.join(root, os.path.basename(group)))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_the_device_allowlist_holds_for_init_and_execs_and_can_be_replaced(cgroup_agent, busybox_rootfs):
    """runc's rules: mknod of any node works (CAP_MKNOD, `b *:* m`), using one the list lacks is EPERM."""
    agent, _ = cgroup_agent
    # loop0: a block device this host lets root read (an unbound one reads as empty)
    probe = ("mknod /tmp/b b 7 0 && echo mknod-ok; "
             "head -c1 /tmp/b >/dev/null 2>/tmp/err && echo read-ok || cat /tmp/err; rm -f /tmp/b; "
             "echo x > /dev/null && echo null-ok")
    s = spec(["sh", "-c", probe + "; sleep 600"])
    s["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("dev", s, PathRootfs(busybox_rootfs), StdioConfig(stdout=True))
        await client.start_container("dev")
        out = await read_until(client, "dev", "", b"null-ok\n")
        assert out.decode().splitlines() == ["mknod-ok", "head: /tmp/b: Operation not permitted", "null-ok"], out
        await client.exec_process("dev", "e", process(["sh", "-c", probe]), StdioConfig(stdout=True))
        assert b"Operation not permitted" in await read_all(client, "dev", "e")
        # An update that allows the device swaps the program.
        await client.update_container("dev", {"devices": [
            {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}]})
        await client.exec_process("dev", "e2", process(["sh", "-c", probe]), StdioConfig(stdout=True))
        assert b"read-ok" in await read_all(client, "dev", "e2")
        await client.remove_container("dev", force=True)
