"""What the agent prepares ahead of time (at its start, so that a template carries it to every clone): a spare pod
holder, a spare init, the pod's /dev/shm; and the work it puts off until idle (agent/idle.py)."""
import asyncio
import os

import pytest

from rund import errors
from rund.agent import AgentClient, PathRootfs, StdioConfig

from agent.idle import IdleWork

from .helpers import read_all, spec

OUT = StdioConfig(stdout=True)


def holder_spec(hostname: str) -> dict:
    s = spec(["/pause"], hostname=hostname)
    if not hostname:
        s.pop("hostname")
    s["annotations"] = {"io.rund.pod-holder": "true"}
    s["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    return s


DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
                "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
                "CAP_AUDIT_WRITE"]


def with_caps(s: dict, names: list[str]) -> dict:
    s["process"]["capabilities"] = {k: names for k in ("bounding", "effective", "permitted")}
    return s


def cap_mask(names: list[str]) -> int:
    from agent.linux.capabilities import NUMBER
    return sum(1 << NUMBER[n] for n in set(names))


def member_spec(args: list[str], holder_pid: int) -> dict:
    s = spec(args)
    s.pop("hostname")
    s["linux"]["namespaces"] = [{"type": "mount"}, *({"type": t, "path": f"/proc/{holder_pid}/ns/{t}"}
                                                     for t in ("pid", "ipc", "uts"))]
    return s


@pytest.mark.root
async def test_pod_holders_the_spare_one_first_hold_their_pods_namespaces(own_agent, busybox_rootfs):
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        for n, pod in enumerate(("pod-one", "pod-two")):
            holder = await client.create_container(pod, holder_spec(pod), PathRootfs("/"))
            await client.start_container(pod)
            member = f"{pod}-app"
            await client.create_container(member, member_spec(["sh", "-c", "hostname; echo $$"], holder),
                                          PathRootfs(busybox_rootfs), OUT)
            await client.start_container(member)
            name, pid = (await read_all(client, member)).decode().split()
            assert name == pod and pid != "1"      # the holder is the pod's pid 1
            await client.wait_process(member)
            await client.remove_container(member)
            spare = f"container {pod}: the spare holder (pid {holder}) holds the pod" in own_agent.log()
            assert spare == (n == 0)               # one spare: the second pod's holder is forked
        for pod in ("pod-one", "pod-two"):
            await client.signal_process(pod, "", 15)
            assert (await client.wait_process(pod)).code == 0
            await client.remove_container(pod)


@pytest.mark.root
async def test_a_spare_holder_without_a_hostname_starts_with_the_vms(own_agent, busybox_rootfs):
    """A new UTS namespace starts with a copy of the hostname: the spare holder's, made long before, must start with
    the one of the moment (PostRestore's), as a holder forked now would."""
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        await client.post_restore(None, os.urandom(64), hostname="node-1")
        holder = await client.create_container("pod", holder_spec(""), PathRootfs("/"))
        assert "the spare holder" in own_agent.log()
        await client.start_container("pod")
        await client.create_container("app", member_spec(["hostname"], holder), PathRootfs(busybox_rootfs), OUT)
        await client.start_container("app")
        assert (await read_all(client, "app")) == b"node-1\n"


@pytest.mark.root
async def test_the_spare_init_reports_setup_errors_and_is_replaced_after_a_removal(own_agent, busybox_rootfs):
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        with pytest.raises(errors.InvalidArgument) as info:
            await client.create_container("bad", with_caps(spec(["true"], cwd="/no/such/dir"), DEFAULT_CAPS),
                                          PathRootfs(busybox_rootfs))
        assert "process.cwd" in str(info.value)
        assert "container bad: set up by the spare init" in own_agent.log()
        for name in ("forked", "spare"):           # the spare went with the failure; a removal makes a new one
            await client.create_container(name, with_caps(spec(["sh", "-c", "echo $$; grep CapBnd /proc/self/status"]),
                                                          DEFAULT_CAPS), PathRootfs(busybox_rootfs), OUT)
            await client.start_container(name)
            pid, _, bounding = (await read_all(client, name)).decode().split()
            assert pid == "1" and int(bounding, 16) == cap_mask(DEFAULT_CAPS)
            assert (await client.wait_process(name)).code == 0
            await client.remove_container(name)
        log = own_agent.log()
        assert "container forked: set up by the spare init" not in log
        assert "container spare: set up by the spare init" in log


@pytest.mark.root
async def test_a_warm_up_container_leaves_the_spare_init_for_the_pod_after_it(own_agent, busybox_rootfs):
    """A spare VM is warmed by a container after its PostRestore, when the agent keeps no more spares: the warm-up
    (the host's io.rund.warm-up annotation) takes the spare init, and its removal forks a new one for the pod; an
    ordinary container's removal does not."""
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        await client.setup_sandbox("sb", hostname="sb")          # a sandbox now: spares are not made again
        for name, warm_up in (("warm", True), ("pod", False), ("after", False)):
            s = with_caps(spec(["true"]), DEFAULT_CAPS)
            s.pop("hostname")
            if warm_up:
                s["annotations"] = {"io.rund.warm-up": "true"}
            await client.create_container(name, s, PathRootfs(busybox_rootfs))
            await client.start_container(name)
            assert (await client.wait_process(name)).code == 0
            await client.remove_container(name)
        log = own_agent.log()
        assert "container warm: set up by the spare init" in log
        assert "container pod: set up by the spare init" in log
        assert "container after: set up by the spare init" not in log


@pytest.mark.root
async def test_a_container_with_more_capabilities_than_the_spare_kept_is_forked(own_agent, busybox_rootfs):
    more = [*DEFAULT_CAPS, "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        for name, s in (("full", spec(["grep", "CapBnd", "/proc/self/status"])),     # no capabilities: all of them
                        ("more", with_caps(spec(["grep", "CapBnd", "/proc/self/status"]), more))):
            await client.create_container(name, s, PathRootfs(busybox_rootfs), OUT)
            await client.start_container(name)
            bounding = int((await read_all(client, name)).decode().split()[1], 16)
            await client.wait_process(name)
            await client.remove_container(name)
            assert f"container {name}: set up by the spare init" not in own_agent.log()
            if name == "more":
                assert bounding == cap_mask(more)
            else:
                assert bounding & cap_mask(["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE"])


async def test_idle_work_waits_for_the_agent_to_be_idle_and_runs_at_once_when_needed():
    idle = IdleWork(idle_s=0.05)
    ran = []
    idle.enter()                                    # a request in progress
    job = idle.defer("first", lambda: ran.append("first"))
    await asyncio.sleep(0.1)
    assert ran == []
    idle.leave()
    await asyncio.sleep(0.02)
    assert ran == []                                # not idle long enough yet
    await asyncio.sleep(0.1)
    assert ran == ["first"] and job.done
    idle.enter()
    second = idle.defer("second", lambda: ran.append("second"))
    idle.finish(second)                             # needed now: runs at once, busy or not
    assert ran == ["first", "second"]
    idle.leave()

    def fail():
        raise OSError(5, "nope")
    failed = idle.defer("failing", fail)
    for _ in range(2):                              # its error goes to everyone who needs its effect
        with pytest.raises(OSError):
            idle.finish(failed)
    idle.finish(None)
    idle.close()


@pytest.mark.root
async def test_the_pods_dev_shm_is_mounted_at_start_and_sized_by_its_first_container(own_agent, busybox_rootfs):
    shm = os.path.join(own_agent.state_dir, "pod-shm")
    assert shm in own_agent.mounts()
    s = spec(["sh", "-c", "df -k /dev/shm"])
    s["mounts"] = [{"destination": "/dev/shm", "type": "bind", "source": "rund-pod-shm:4194304",
                    "options": ["rbind", "rw"]}]
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        await client.create_container("shm", s, PathRootfs(busybox_rootfs), OUT)
        await client.start_container("shm")
        out = (await read_all(client, "shm")).decode()
        await client.wait_process("shm")
        await client.remove_container("shm")
    assert out.splitlines()[-1].split()[1] == "4096"


@pytest.mark.root
async def test_a_spare_made_while_a_container_runs_does_not_hold_its_stdin_open(own_agent, busybox_rootfs):
    """A spare init forked after a removal (while another container runs) holds none of the agent's fds: the running
    container's stdin still reaches EOF when the host closes it."""
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        await client.create_container("cat", with_caps(spec(["cat"]), DEFAULT_CAPS), PathRootfs(busybox_rootfs),
                                      StdioConfig(stdin=True, stdout=True))     # takes the spare made at start
        await client.start_container("cat")
        await client.create_container("short", spec(["true"]), PathRootfs(busybox_rootfs))
        await client.start_container("short")
        await client.wait_process("short")
        await client.remove_container("short")       # forks a new spare init while "cat" runs
        await client.write_stdin("cat", "", b"hello\n")
        await client.close_stdin("cat")
        assert await asyncio.wait_for(read_all(client, "cat"), 10) == b"hello\n"
        assert (await asyncio.wait_for(client.wait_process("cat"), 10)).code == 0
        await client.remove_container("cat")
