"""The agent as PID 1 of the real guest (QEMU microvm, TCG): virtio-serial channel, reconnects, containers on
a layered erofs rootfs, cgroup v2 limits, stats and OOM events, PostRestore's clock. Boots one VM per module."""
import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from rund import errors
from rund.agent import AgentClient, LayeredRootfs, StdioConfig

from .helpers import process, read_all, spec

pytestmark = pytest.mark.vm
MACHINE = "microvm"
BOOT_TIMEOUT = 240.0


class GuestVM:
    def __init__(self):
        from guest import bootcheck, cmdline
        from guest.build import ensure_built
        art = ensure_built()
        root, flags = bootcheck.root_params(MACHINE)
        append = cmdline.kernel_cmdline(root=root, rootflags=flags, tsc_khz=cmdline.host_tsc_khz())
        self.dir = tempfile.mkdtemp(prefix="agent-vm-", dir="/tmp")
        self.socket = os.path.join(self.dir, "agent.sock")
        self.console_path = os.path.join(self.dir, "console.log")
        self.argv = bootcheck.qemu_argv(art, MACHINE, append) + bootcheck.agent_channel_argv(MACHINE, self.socket)
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        with open(self.console_path, "wb") as console:
            start = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT)
        asyncio.run(asyncio.wait_for(self._first_health(), BOOT_TIMEOUT))
        return time.monotonic() - start

    async def _first_health(self) -> None:
        while not os.path.exists(self.socket):
            assert self.proc.poll() is None, self.console()
            await asyncio.sleep(0.01)
        async with await AgentClient.connect_unix(self.socket) as client:
            while True:  # a request waits in the socket until the agent opens its port
                assert self.proc.poll() is None, self.console()
                try:
                    await client.health(timeout=2.0)
                    return
                except errors.Unavailable:
                    continue

    def console(self) -> str:
        with open(self.console_path, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def vm():
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs QEMU")
    guest = GuestVM()
    try:
        seconds = guest.start()
        print(f"guest agent ready {seconds:.1f} s after QEMU exec")
        yield guest
    finally:
        guest.stop()


LAYERED = LayeredRootfs(base_device="/dev/vda", base_fstype="erofs", upper_size_bytes=16 << 20)


async def test_reconnecting_hosts_get_a_working_connection(vm):
    for _ in range(3):
        async with await AgentClient.connect_unix(vm.socket, timeout=30.0) as client:
            health = await client.health()
            assert health.kernel_release.endswith("cloud-amd64")
    # A host that vanishes with calls in flight, and the next one right behind it.
    client = await AgentClient.connect_unix(vm.socket, timeout=30.0)
    pending = asyncio.ensure_future(client.get_oom_event())
    await asyncio.sleep(0.1)
    await client.close()
    with pytest.raises(errors.Unavailable):
        await pending
    async with await AgentClient.connect_unix(vm.socket, timeout=30.0) as client:
        assert (await client.health()).agent_version


async def test_setup_sandbox_checks_kernel_modules_in_the_guest(vm):
    async with await AgentClient.connect_unix(vm.socket, timeout=60.0) as client:
        with pytest.raises(errors.InvalidArgument) as info:
            await client.setup_sandbox("sb", hostname="guest-sb", kernel_modules=("overlay", "no_such_module"))
        assert "kernel_modules[1]" in str(info.value)
        await client.setup_sandbox("sb", hostname="guest-sb", kernel_modules=("overlay", "virtio_net"))
        await client.destroy_sandbox("sb")


async def test_container_on_a_layered_erofs_rootfs_in_the_guest(vm):
    async with await AgentClient.connect_unix(vm.socket, timeout=60.0) as client:
        args = ["sh", "-c", "echo $$ $(hostname); grep ' / ' /proc/mounts; echo x > /written; cat /written; exit 5"]
        await client.create_container("guest1", spec(args, hostname="g1"), LAYERED, StdioConfig(stdout=True))
        await client.start_container("guest1")
        out = (await read_all(client, "guest1")).decode().splitlines()
        assert out[0] == "1 g1"
        assert out[1].startswith("overlay / overlay") and out[2] == "x"
        assert (await client.wait_process("guest1")).code == 5
        await client.remove_container("guest1")


async def test_guest_cgroups_limit_account_and_report_oom(vm):
    async with await AgentClient.connect_unix(vm.socket, timeout=60.0) as client:
        s = spec(["sleep", "600"])
        s["linux"]["resources"] = {"memory": {"limit": 16 << 20}, "pids": {"limit": 20}}
        await client.create_container("limited", s, LAYERED)
        await client.start_container("limited")
        stats = await client.stats_container("limited")
        assert stats.memory.limit_bytes == 16 << 20 and stats.pids.limit == 20 and stats.pids.current == 1
        await client.update_container("limited", {"pids": {"limit": 30}})
        assert (await client.stats_container("limited")).pids.limit == 30
        oom = asyncio.ensure_future(client.get_oom_event())
        try:
            # busybox tail buffers a line that never ends: it grows until the limit kills it.
            await client.exec_process("limited", "hog", process(["tail", "/dev/zero"]))
            assert await asyncio.wait_for(oom, 120) == "limited"
        finally:
            oom.cancel()
        assert (await client.wait_process("limited", "hog")).code == 137
        assert (await client.stats_container("limited")).memory.oom_events >= 1
        await client.remove_container("limited", force=True)
        with pytest.raises(errors.NotFound):
            await client.stats_container("limited")


async def test_post_restore_sets_the_guest_clock(vm):
    async with await AgentClient.connect_unix(vm.socket, timeout=60.0) as client:
        target = time.time_ns() + 3600 * 10**9  # an hour ahead: impossible to get right by accident
        await client.post_restore(target, os.urandom(64))
        await client.create_container("clock", spec(["date", "+%s"]), LAYERED, StdioConfig(stdout=True))
        await client.start_container("clock")
        guest_seconds = int(await read_all(client, "clock"))
        await client.wait_process("clock")
        await client.remove_container("clock")
        assert abs(guest_seconds - target / 1e9) < 30
        await client.post_restore(time.time_ns(), os.urandom(64))


def test_a_fatal_error_as_pid1_says_why_and_powers_off():
    """PID 1 must never just exit (the kernel would panic): it prints a last word and powers the guest off."""
    import base64

    from guest.build import ensure_built
    from rund.hypervisor import BlockDevice, Machine, QemuVM, host_tsc_khz
    from rund.hypervisor.testing import VMDirs, minimal_spec, scratch_dir

    art = ensure_built()
    script = base64.b64encode(b"exec /usr/bin/python3.11 -I -m agent.main --pid1 --listen bogus:1").decode()
    with scratch_dir() as base:
        spec_ = minimal_spec(VMDirs(base), Machine.MICROVM, memory_mib=256, kernel=art.vmlinux, initrd=art.initrd,
                             cmdline=f"console=ttyS0 panic=-1 rund.root=/dev/vda rund.initcmd={script}",
                             tsc_khz=host_tsc_khz(), disks=(BlockDevice(art.rootfs, serial="root"),))

        async def boot() -> int:
            vm = QemuVM(spec_)
            await vm.start()
            try:
                return await asyncio.wait_for(vm.wait(), BOOT_TIMEOUT)
            finally:
                if vm.returncode is None:
                    await vm.stop()

        assert asyncio.run(boot()) == 0  # powered off, not a panic
        console = spec_.console_log.read_text(errors="replace")
    assert "rund-agent: fatal: ValueError: unknown listen address 'bogus:1'" in console
    assert "Attempted to kill init" not in console


async def test_guest_enforces_the_device_allowlist_and_seccomp_and_runs_privileged(vm):
    """In the real guest (cgroup v2, its own kernel): the raw disk holding the agent's image (vda, 254:0) can be
    mknod'ed (runc's `b *:* m`) but not read; the default seccomp profile is on; a privileged spec runs."""
    from .test_device_filter import CONTAINERD_DEFAULT as DEVICES, PRIVILEGED
    from .test_seccomp import CONTAINERD_DEFAULT as SECCOMP
    probe = ("mknod /tmp/b b 254 0 && echo mknod-ok; head -c1 /tmp/b >/dev/null 2>/tmp/e && echo read-ok || "
             "cat /tmp/e; grep Seccomp: /proc/self/status | tr -d '\\t'")
    async with await AgentClient.connect_unix(vm.socket, timeout=60.0) as client:
        s = spec(["sh", "-c", probe])
        s["linux"]["resources"] = {"devices": DEVICES}
        s["linux"]["seccomp"] = SECCOMP
        await client.create_container("hardened", s, LAYERED, StdioConfig(stdout=True))
        await client.start_container("hardened")
        out = (await read_all(client, "hardened")).decode().splitlines()
        assert out == ["mknod-ok", "head: /tmp/b: Operation not permitted", "Seccomp:2"], out
        await client.wait_process("hardened")
        await client.remove_container("hardened")

        s = spec(["sh", "-c", probe])
        s["linux"]["resources"] = {"devices": PRIVILEGED}
        s["linux"]["devices"] = [{"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2},
                                 {"path": "/dev/vda", "type": "b", "major": 254, "minor": 0, "fileMode": 0o600}]
        s["mounts"] = [{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "rw"]}]
        await client.create_container("privileged", s, LAYERED, StdioConfig(stdout=True))
        await client.start_container("privileged")
        out = (await read_all(client, "privileged")).decode().splitlines()
        assert out == ["mknod-ok", "read-ok", "Seccomp:0"], out
        assert (await client.wait_process("privileged")).code == 0
        await client.remove_container("privileged")
