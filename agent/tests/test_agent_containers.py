"""The agent as a real process on the host (root, namespaces, no VM), driven through rund.agent.AgentClient."""
import asyncio
import os
import signal
import time

import pytest

from rund import errors
from rund.agent import AgentClient, AgentFailed, FileCopy, PathRootfs, StdioConfig

from .helpers import process, read_all, read_until, spec

pytestmark = pytest.mark.root
OUT = StdioConfig(stdout=True, stderr=True)


async def run(client: AgentClient, cid: str, rootfs: str, args: list[str], **kw) -> tuple[int, bytes, bytes]:
    """Create, start, read both streams, wait, remove: (exit status, stdout, stderr)."""
    await client.create_container(cid, spec(args, **kw), PathRootfs(rootfs), OUT)
    await client.start_container(cid)
    out, err = await asyncio.gather(read_all(client, cid), read_all(client, cid, stream="stderr"))
    status = await client.wait_process(cid)
    await client.remove_container(cid)
    return status.code, out, err


async def test_echo_output_and_exit_code_come_back(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        code, out, err = await run(client, "echo", busybox_rootfs, ["sh", "-c", "echo hello; echo oops >&2"])
    assert (code, out, err) == (0, b"hello\n", b"oops\n")


async def test_exit_code_3(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        code, _, _ = await run(client, "exit3", busybox_rootfs, ["sh", "-c", "exit 3"])
    assert code == 3


async def test_copied_host_files_are_bind_mounted_and_removed_with_the_container(agent, busybox_rootfs):
    s = spec(["sh", "-c", "cat /etc/greeting; stat -c %a /etc/greeting; echo x > /etc/greeting || echo ro"])
    s["mounts"] = [{"destination": "/etc/greeting", "type": "bind", "source": "rund-file:0",
                    "options": ["rbind", "ro"]}]
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("files", s, PathRootfs(busybox_rootfs), StdioConfig(stdout=True),
                                      files=[FileCopy(b"hello from the host\n", 0o640)])
        await client.start_container("files")
        out = (await read_all(client, "files")).decode().splitlines()
        assert out[:2] == ["hello from the host", "640"] and out[-1] == "ro"
        assert (await client.wait_process("files")).code == 0
        await client.remove_container("files")
        assert not os.listdir(os.path.join(agent.state_dir, "files"))
        s["mounts"][0]["source"] = "rund-file:1"          # names no file of the request
        with pytest.raises(errors.InvalidArgument) as info:
            await client.create_container("files", s, PathRootfs(busybox_rootfs),
                                          files=[FileCopy(b"only one\n")])
        assert "mounts[0].source" in str(info.value)


async def test_exec_has_its_own_output_and_exit_code(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("ex", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        await client.start_container("ex")
        await client.exec_process("ex", "e1", process(["sh", "-c", "echo from exec $(hostname); exit 7"]),
                                  StdioConfig(stdout=True))
        assert await read_all(client, "ex", "e1") == b"from exec box\n"
        assert (await client.wait_process("ex", "e1")).code == 7
        with pytest.raises(errors.AlreadyExists):
            await client.exec_process("ex", "e1", process(["true"]))
        await client.remove_process("ex", "e1")          # forgotten: the id may be used again
        with pytest.raises(errors.NotFound):
            await client.wait_process("ex", "e1")
        await client.exec_process("ex", "e1", process(["sleep", "600"]))
        with pytest.raises(errors.FailedPrecondition):
            await client.remove_process("ex", "e1")      # still running
        await client.remove_container("ex", force=True)


async def test_sigterm_and_sigkill_give_143_and_137(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("sig", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        await client.start_container("sig")
        # A pid namespace's init ignores signals it has no handler for, so SIGTERM goes to an exec.
        await client.exec_process("sig", "term", process(["sleep", "600"]))
        await client.signal_process("sig", "term", signal.SIGTERM)
        assert (await client.wait_process("sig", "term")).code == 143
        await client.signal_process("sig", "", signal.SIGKILL)
        status = await client.wait_process("sig")
        assert status.code == 137
        assert abs(status.exited_at.timestamp() - time.time()) < 60
        await client.remove_container("sig")


async def test_tty_process_sees_its_window_size_and_a_resize(agent, busybox_rootfs):
    tty = StdioConfig(terminal=True, stdin=True, stdout=True)
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("tty", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        await client.start_container("tty")
        args = ["sh", "-c", "stty size; tty; read line; stty size"]
        await client.exec_process("tty", "t", process(args, terminal=True, consoleSize={"height": 24, "width": 80}),
                                  tty)
        first = await read_until(client, "tty", "t", b"/dev/pts/")
        assert b"24 80" in first
        await client.resize_tty("tty", "t", 40, 120)
        await client.write_stdin("tty", "t", b"go\n")
        rest = await read_all(client, "tty", "t")
        assert b"40 120" in rest
        assert (await client.wait_process("tty", "t")).code == 0
        await client.remove_container("tty", force=True)


async def test_container_init_on_a_terminal(agent, busybox_rootfs):
    tty = StdioConfig(terminal=True, stdout=True)
    async with await AgentClient.connect_unix(agent.socket) as client:
        s = spec(["sh", "-c", "stty size; test -t 0 && test -t 1 && test -t 2 && echo all-tty"],
                 terminal=True, consoleSize={"height": 50, "width": 132})
        await client.create_container("ttyinit", s, PathRootfs(busybox_rootfs), tty)
        await client.start_container("ttyinit")
        out = await read_all(client, "ttyinit")
        assert b"50 132" in out and b"all-tty" in out
        assert (await client.wait_process("ttyinit")).code == 0
        await client.remove_container("ttyinit")


async def test_stdin_round_trip_through_cat(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("cat", spec(["cat"]), PathRootfs(busybox_rootfs),
                                      StdioConfig(stdin=True, stdout=True))
        await client.start_container("cat")
        payload = os.urandom(300_000)  # more than a pipe holds: needs the write/read interleaving
        writer = asyncio.create_task(client.write_stdin("cat", "", payload))
        reader = asyncio.create_task(read_all(client, "cat"))
        assert await writer == len(payload)
        await client.close_stdin("cat", "")
        assert await reader == payload
        assert (await client.wait_process("cat")).code == 0
        await client.remove_container("cat")


async def test_invalid_spec_is_invalid_argument_naming_the_field(agent, busybox_rootfs):
    rootfs = PathRootfs(busybox_rootfs)
    bad = spec(["true"])
    del bad["process"]["cwd"]
    caps = spec(["true"], capabilities={"bounding": ["CAP_CHOWN", "CAP_FLY"]})
    mount = spec(["true"])
    mount["mounts"] = [{"destination": "relative/path", "type": "tmpfs", "source": "tmpfs"}]
    async with await AgentClient.connect_unix(agent.socket) as client:
        for document, field in ((bad, "process.cwd"), (caps, "process.capabilities.bounding[1]"),
                                (mount, "mounts[0].destination"), (b"{not json", "oci_spec_json")):
            with pytest.raises(errors.InvalidArgument) as info:
                await client.create_container("bad", document, rootfs)
            assert field in str(info.value)
        with pytest.raises(errors.InvalidArgument) as info:
            await client.create_container("bad", spec(["no-such-binary"]), rootfs)
        assert "process.args[0]" in str(info.value)
        with pytest.raises(errors.InvalidArgument) as info:
            await client.create_container("bad", spec(["true"]), PathRootfs("/nonexistent/rootfs"))
        assert "rootfs.path" in str(info.value)
        with pytest.raises(errors.NotFound):
            await client.start_container("bad")  # nothing was left behind


async def test_unknown_ids_are_not_found(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        calls = [client.start_container("ghost"), client.wait_process("ghost"),
                 client.read_stdout("ghost"), client.signal_process("ghost", "", 9),
                 client.remove_container("ghost"), client.stats_container("ghost"),
                 client.exec_process("ghost", "e", process(["true"]))]
        for call in calls:
            with pytest.raises(errors.NotFound):
                await call
        await client.create_container("known", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        with pytest.raises(errors.NotFound):
            await client.wait_process("known", "no-such-exec")
        await client.remove_container("known")


async def test_wrong_states_and_duplicates(agent, busybox_rootfs):
    rootfs = PathRootfs(busybox_rootfs)
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("st", spec(["sleep", "600"]), rootfs)
        with pytest.raises(errors.AlreadyExists):
            await client.create_container("st", spec(["sleep", "600"]), rootfs)
        with pytest.raises(errors.FailedPrecondition):
            await client.exec_process("st", "e", process(["true"]))  # not started yet
        await client.start_container("st")
        with pytest.raises(errors.FailedPrecondition):
            await client.start_container("st")
        await client.exec_process("st", "e", process(["sleep", "600"]))
        with pytest.raises(errors.AlreadyExists):
            await client.exec_process("st", "e", process(["true"]))
        with pytest.raises(errors.FailedPrecondition):
            await client.remove_container("st")  # running, no force
        with pytest.raises(errors.FailedPrecondition):
            await client.resize_tty("st", "e", 10, 10)  # no terminal
        await client.remove_container("st", force=True)


async def test_flooding_process_does_not_stall_the_agent(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("flood", spec(["sh", "-c", "while :; do echo xxxxxxxxxxxxxxxxxxxxxxxx; done"]),
                                      PathRootfs(busybox_rootfs), StdioConfig(stdout=True))
        await client.start_container("flood")
        chunk = await client.read_stdout("flood")
        assert chunk.data.startswith(b"xxxx")
        await asyncio.sleep(0.3)  # nobody reads now: the flooder fills the pipe and blocks on its write
        latencies = []
        for _ in range(20):
            start = time.monotonic()
            await client.health()
            latencies.append(time.monotonic() - start)
        assert max(latencies) < 0.5, latencies
        got = 0
        for _ in range(50):  # and the stream still flows when the host pulls again
            got += len((await client.read_stdout("flood")).data)
        assert got > 50_000
        await client.remove_container("flood", force=True)


async def test_output_is_fully_drained_before_wait_returns(agent, busybox_rootfs):
    size = 1 << 20
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("drain", spec(["head", "-c", str(size), "/dev/urandom"]),
                                      PathRootfs(busybox_rootfs), StdioConfig(stdout=True))
        await client.start_container("drain")
        waiter = asyncio.create_task(client.wait_process("drain"))
        first = await client.read_stdout("drain", max_length=4096)
        await asyncio.sleep(0.5)
        assert not waiter.done()  # the process cannot have exited: 1 MiB does not fit in a pipe
        rest = await read_all(client, "drain")
        assert len(first.data) + len(rest) == size
        assert (await waiter).code == 0
        await client.remove_container("drain")


async def test_wait_returns_after_exit_once_output_is_read(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("late", spec(["sh", "-c", "echo bye"]), PathRootfs(busybox_rootfs),
                                      StdioConfig(stdout=True))
        await client.start_container("late")
        waiter = asyncio.create_task(client.wait_process("late"))
        await asyncio.sleep(0.5)  # exited long ago, but its output is still in the pipe
        assert not waiter.done()
        assert await read_all(client, "late") == b"bye\n"
        assert (await waiter).code == 0
        await client.remove_container("late")


async def test_namespaces_are_new(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        code, out, _ = await run(client, "ns", busybox_rootfs,
                                 ["sh", "-c", "echo $$; hostname; ps -o pid | wc -l"], hostname="inside")
        assert code == 0
        pid, hostname, ps_lines = out.decode().split()
        assert (pid, hostname) == ("1", "inside")
        assert int(ps_lines) <= 4  # header, sh, ps, wc: nothing of the host or the agent

        pid = await client.create_container("ns2", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        for name in ("pid", "mnt", "uts", "ipc"):
            assert os.readlink(f"/proc/{pid}/ns/{name}") != os.readlink(f"/proc/{agent.pid}/ns/{name}"), name
        assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{agent.pid}/ns/net")  # the pod's
        await client.remove_container("ns2")


async def test_a_new_network_namespace_has_loopback_up_as_under_runc(agent, busybox_rootfs):
    netns = spec(["sh", "-c", "ip -o link show lo"])
    netns["linux"]["namespaces"].append({"type": "network"})
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("lo", netns, PathRootfs(busybox_rootfs), OUT)
        await client.start_container("lo")
        out, err = await asyncio.gather(read_all(client, "lo"), read_all(client, "lo", stream="stderr"))
        assert (await client.wait_process("lo")).code == 0, err
        await client.remove_container("lo")
    (link,) = out.decode().splitlines()
    assert "UP" in link.split("<", 1)[1].split(">", 1)[0].split(","), link


async def test_containers_of_a_pod_share_its_dev_shm_of_the_size_given(agent, busybox_rootfs):
    def with_pod_shm(args):
        s = spec(args)
        s["mounts"] = [{"destination": "/dev/shm", "type": "bind", "source": "rund-pod-shm:8388608",
                        "options": ["rbind", "rw"]}]
        return s
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("shm1", with_pod_shm(["sh", "-c", "echo hi > /dev/shm/note; df -k /dev/shm"]),
                                      PathRootfs(busybox_rootfs), OUT)
        await client.start_container("shm1")
        out, err = await asyncio.gather(read_all(client, "shm1"), read_all(client, "shm1", stream="stderr"))
        assert (await client.wait_process("shm1")).code == 0, err
        await client.remove_container("shm1")
        assert out.decode().splitlines()[-1].split()[1] == "8192"          # 1K-blocks: the size the host gave
        await client.create_container("shm2", with_pod_shm(["cat", "/dev/shm/note"]), PathRootfs(busybox_rootfs), OUT)
        await client.start_container("shm2")
        out, err = await asyncio.gather(read_all(client, "shm2"), read_all(client, "shm2", stream="stderr"))
        assert (await client.wait_process("shm2")).code == 0, err
        await client.remove_container("shm2")
        assert out == b"hi\n"


async def test_user_env_cwd_rlimits_capabilities_no_new_privs(agent, busybox_rootfs):
    script = ("id; pwd; echo $FOO $HOME; ulimit -n; umask; "
              "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    args = ["sh", "-c", script]
    async with await AgentClient.connect_unix(agent.socket) as client:
        code, out, err = await run(
            client, "who", busybox_rootfs, args,
            user={"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o027},
            env=["PATH=/bin", "FOO=bar"], cwd="/tmp",
            rlimits=[{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}],
            capabilities={"bounding": ["CAP_KILL", "CAP_NET_BIND_SERVICE"], "effective": [], "permitted": []},
            noNewPrivileges=True)
    assert code == 0, err
    lines = out.decode().splitlines()
    assert lines[0].startswith("uid=1000(user) gid=1000(user) groups=")
    assert "10" in lines[0] and "20" in lines[0]
    assert lines[1:5] == ["/tmp", "bar /home/user", "123", "0027"]
    status = dict(line.split(":\t") for line in lines[5:])
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapBnd"], 16) == (1 << 5) | (1 << 10)  # CAP_KILL, CAP_NET_BIND_SERVICE
    assert status["NoNewPrivs"] == "1"


async def test_mounts_masked_and_readonly_paths(agent, fresh_rootfs, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "file").write_text("from the host\n")
    s = spec(["sh", "-c", "cat /data/file; touch /data/new 2>/dev/null && echo data-writable; "
                          "touch /scratch/x && echo scratch-writable; "
                          "touch /etc/x 2>/dev/null && echo etc-writable; "
                          "wc -c < /proc/timer_list; ls /sys/kernel | wc -l; "
                          "touch /x 2>/dev/null && echo root-writable; exit 0"])
    s["mounts"] = [{"destination": "/data", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]},
                   {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}]
    s["linux"]["maskedPaths"] = ["/proc/timer_list", "/sys/kernel", "/proc/does-not-exist"]
    s["linux"]["readonlyPaths"] = ["/etc"]
    s["root"] = {"path": "rootfs", "readonly": True}
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("mnt", s, PathRootfs(fresh_rootfs), StdioConfig(stdout=True))
        await client.start_container("mnt")
        out = await read_all(client, "mnt")
        assert (await client.wait_process("mnt")).code == 0
        await client.remove_container("mnt")
    assert out.decode().split("\n") == ["from the host", "scratch-writable", "0", "0", ""]
    assert not (shared / "new").exists()
    # The container's mounts lived in its own mount namespace: none leaked into the agent's.
    assert not any(m.startswith(fresh_rootfs) for m in agent.mounts())


async def test_signal_all_and_list_processes(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        init = await client.create_container("all", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        await client.start_container("all")
        e1 = await client.exec_process("all", "e1", process(["sleep", "600"]))
        e2 = await client.exec_process("all", "e2", process(["sleep", "600"]))
        assert set(await client.list_processes("all")) == {init, e1, e2}
        await client.signal_process("all", "", signal.SIGKILL, all=True)
        codes = {(await client.wait_process("all", e)).code for e in ("", "e1", "e2")}
        assert codes == {137}
        await client.remove_container("all")


async def test_a_failure_inside_one_request_leaves_the_agent_serving(agent, busybox_rootfs):
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("crash", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        await client.start_container("crash")
        with pytest.raises(AgentFailed):  # execve refuses an argument with a NUL byte
            await client.exec_process("crash", "nul", process(["echo", "a\u0000b"]))
        assert (await client.health()).agent_version
        await client.exec_process("crash", "ok", process(["true"]))
        assert (await client.wait_process("crash", "ok")).code == 0
        await client.remove_container("crash", force=True)


async def test_stopping_the_agent_removes_its_containers(own_agent, busybox_rootfs):
    async with await AgentClient.connect_unix(own_agent.socket) as client:
        pid = await client.create_container("left", spec(["sleep", "600"]), PathRootfs(busybox_rootfs))
        await client.start_container("left")
    assert own_agent.stop() == 0
    assert not os.path.exists(f"/proc/{pid}")


async def test_seccomp_applies_to_init_and_execs_with_and_without_no_new_privs(agent, busybox_rootfs):
    from .test_seccomp import CONTAINERD_DEFAULT
    show = ["sh", "-c", "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\\t'; unshare -U true || :"]
    # containerd's default set: no CAP_SYS_ADMIN, so without no_new_privs the filter must go in before the drop.
    names = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
             "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
             "CAP_AUDIT_WRITE"]
    caps = {"bounding": names, "effective": names, "permitted": names}
    async with await AgentClient.connect_unix(agent.socket) as client:
        for nnp in (False, True):
            s = spec(["sleep", "600"], noNewPrivileges=nnp, capabilities=caps)
            s["linux"]["seccomp"] = CONTAINERD_DEFAULT
            await client.create_container("sc", s, PathRootfs(busybox_rootfs))
            await client.start_container("sc")
            await client.exec_process("sc", "e", process(show, noNewPrivileges=nnp, capabilities=caps), OUT)
            out, err = await asyncio.gather(read_all(client, "sc", "e"), read_all(client, "sc", "e", "stderr"))
            assert out.decode().split() == [f"NoNewPrivs:{int(nnp)}", "Seccomp:2"]
            assert b"Operation not permitted" in err           # unshare is not in the default profile
            assert (await client.wait_process("sc", "e")).code == 0
            with open(f"/proc/{(await client.list_processes('sc'))[0]}/status") as f:
                assert "Seccomp:\t2\n" in f.read()            # the init too
            await client.remove_container("sc", force=True)
        bad = spec(["true"])
        bad["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}
        with pytest.raises(errors.InvalidArgument) as info:
            await client.create_container("sc", bad, PathRootfs(busybox_rootfs))
        assert "linux.seccomp.architectures[0]" in str(info.value)


async def test_a_privileged_spec_runs_with_its_devices_all_capabilities_and_a_writable_sys(agent, busybox_rootfs):
    """What `ctr run --privileged` sends: every host device (/dev/ptmx among them), all capabilities, /sys rw."""
    from agent.linux.capabilities import NAMES
    s = spec(["sh", "-c", "ls -l /dev/ptmx; test -c /dev/net/tun && echo tun; grep -c CapEff /proc/self/status; "
                          "grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1"])
    held = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("CapBnd:")), 16)
    current = [name for i, name in enumerate(NAMES) if held >> i & 1]  # containerd: WithAllCurrentCapabilities
    s["process"]["capabilities"] = {k: current for k in ("bounding", "effective", "permitted")}
    s["mounts"] = [{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                    "options": ["nosuid", "noexec", "nodev", "rw"]}]
    s["linux"]["devices"] = [{"path": p, "type": "c", "major": ma, "minor": mi, "fileMode": 0o666}
                             for p, ma, mi in (("/dev/ptmx", 5, 2), ("/dev/net/tun", 10, 200), ("/dev/null", 1, 3))]
    s["linux"]["resources"] = {"devices": [{"allow": True, "access": "rwm"}]}
    async with await AgentClient.connect_unix(agent.socket) as client:
        await client.create_container("priv", s, PathRootfs(busybox_rootfs), OUT)
        await client.start_container("priv")
        out, err = await asyncio.gather(read_all(client, "priv"), read_all(client, "priv", stream="stderr"))
        assert (await client.wait_process("priv")).code == 0, err
        await client.remove_container("priv")
    lines = out.decode().splitlines()
    assert lines[0].endswith("/dev/ptmx -> pts/ptmx") and lines[1:4] == ["tun", "1", "rw"], out
