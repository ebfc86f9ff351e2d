"""Templates with real QEMU and the real agent: two processes build once, clones serve containers with their own
RNG and clock, a killed clone fails typed, a damaged template is detected, rebuilt, and served cold meanwhile.

One template is built for the module (every TCG cold boot costs 15-30 s here) in a private tmpfs dir.
"""
from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.tests.helpers import read_all
from rund import config, errors
from rund.agent import AgentClient, LayeredRootfs, StdioConfig
from rund.hypervisor.testing import leak_checked_dirs
from rund.templates import LaunchRequest, Launcher, shape_from_config
from rund.templates.store import TemplateStore

pytestmark = pytest.mark.vm

BUILD_TIMEOUT = 600
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Env:
    base: Path
    cfg: config.Config
    config_file: Path
    outcomes: list[str]

    def launcher(self) -> Launcher:
        return Launcher(shape_from_config(self.cfg), work_dir=Path(self.cfg.state_dir),
                        templates_dir=Path(self.cfg.templates.dir))

    def request(self, name: str) -> LaunchRequest:
        d = self.base / name
        d.mkdir()
        return LaunchRequest(name=name, dir=d, hostname=name)


@pytest.fixture(scope="module")
def env():
    from guest.build import ensure_built
    ensure_built()
    with leak_checked_dirs(with_shm=True) as (base, shm):
        config_file = base / "config.toml"
        config_file.write_text(f'state_dir = "{base / "state"}"\n[templates]\ndir = "{shm / "templates"}"\n')
        # Two processes ask for the same template at once: one builds it, the other waits for the lock and finds it.
        cmd = [sys.executable, "-m", "rund.cli", "--config", str(config_file), "templates", "build"]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=BUILD_TIMEOUT)
            assert p.returncode == 0, err[-2000:]
            outs.append(out.split()[0])
        yield Env(base, config.load(config_file), config_file, outs)


def guest_os_rootfs(launcher: Launcher) -> LayeredRootfs:
    """A container rootfs on the guest OS image itself (pmem0 with DAX on q35)."""
    shape = launcher.shape
    return LayeredRootfs(base_device="/dev/pmem0" if shape.dax else "/dev/vda", base_fstype="erofs", dax=shape.dax,
                         upper_size_bytes=4 << 20)


def container_spec(script: str) -> dict:
    return {"ociVersion": "1.0.2", "hostname": "box",
            "process": {"args": ["/bin/sh", "-c", script], "cwd": "/", "user": {"uid": 0, "gid": 0},
                        "env": [PATH_ENV]},
            "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts")]}}


async def run_container(agent: AgentClient, rootfs: LayeredRootfs, cid: str, script: str) -> bytes:
    await agent.create_container(cid, container_spec(script), rootfs, StdioConfig(stdout=True))
    await agent.start_container(cid)
    out = await read_all(agent, cid)
    status = await agent.wait_process(cid)
    await agent.remove_container(cid)
    assert status.code == 0, out
    return out


async def shut(launched) -> None:
    await launched.agent.close()
    await launched.vm.stop(timeout=2.0)


def test_two_processes_build_the_template_once(env):
    assert sorted(env.outcomes) == ["built", "present"]
    store = TemplateStore(Path(env.cfg.templates.dir))
    [key] = store.keys()
    store.get(key, samples=None)
    r = subprocess.run([sys.executable, "-m", "rund.cli", "--config", str(env.config_file), "templates", "list"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(f"{key} current"), r.stdout + r.stderr


def test_three_clones_run_containers_with_their_own_rng_and_clock(env):
    async def scenario():
        launcher = env.launcher()
        rootfs = guest_os_rootfs(launcher)
        randoms = []
        for i in range(3):
            launched = await launcher.launch(env.request(f"clone{i}"))
            try:
                assert launched.how == "clone" and launched.template == launcher.template_key().key
                assert launched.timings["ready"] < 10
                before = time.time()
                out = await run_container(launched.agent, rootfs, "c",
                                          "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s")
                after = time.time()
            finally:
                await shut(launched)
            rand, guest_seconds = out.decode().split()
            randoms.append(rand)
            # `date +%s` truncates: the guest clock is within 1 s of the host's if it lies in this window
            assert before - 2 < int(guest_seconds) <= after + 1, (before, guest_seconds, after)
        assert len(set(randoms)) == 3 and all(len(r) == 32 for r in randoms)

    asyncio.run(scenario())


def test_killing_a_clones_qemu_mid_request_fails_unavailable(env):
    async def scenario():
        launcher = env.launcher()
        launched = await launcher.launch(env.request("victim"))
        try:
            assert launched.how == "clone"
            agent = launched.agent
            await agent.create_container("sleeper", container_spec("sleep 600"), guest_os_rootfs(launcher))
            await agent.start_container("sleeper")
            waiting = asyncio.create_task(agent.wait_process("sleeper"))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            launched.vm.kill()
            with pytest.raises(errors.Unavailable):
                await asyncio.wait_for(waiting, timeout=15)
            with pytest.raises(errors.Unavailable):
                await asyncio.wait_for(agent.health(), timeout=15)
            assert await launched.vm.wait() == -9
        finally:
            await shut(launched)

    asyncio.run(scenario())


def test_damaged_template_is_rebuilt_while_the_request_boots_cold(env, caplog):
    store = TemplateStore(Path(env.cfg.templates.dir))
    [key] = store.keys()
    old = store.get(key)
    state = store.path(key) / "state"
    os.chmod(state, 0o644)
    with open(state, "r+b") as f:   # one flipped byte, mtime put back: only the checksum can tell
        f.seek(4096)
        b = f.read(1)
        f.seek(4096)
        f.write(bytes([b[0] ^ 0xFF]))
    os.utime(state, ns=(old.manifest.state.mtime_ns, old.manifest.state.mtime_ns))

    async def scenario():
        launcher = env.launcher()
        with caplog.at_level(logging.WARNING, logger="rund.templates"):
            launched = await launcher.launch(env.request("after-damage"))
        try:
            assert launched.how == "cold"
            out = await run_container(launched.agent, guest_os_rootfs(launcher), "c", "echo cold-ok")
            assert out == b"cold-ok\n"
        finally:
            await shut(launched)
        assert any("template unusable" in r.message and "sha256 does not match" in r.message
                   for r in caplog.records), [r.message for r in caplog.records]
        assert launcher.builder is not None and launcher.builder_exit is not None
        # the launcher's loop reaps the builder (no one calls wait): no zombie left in a long-lived shim
        assert await asyncio.wait_for(launcher.builder_exit.exited, BUILD_TIMEOUT) == 0
        assert not Path(f"/proc/{launcher.builder.pid}").exists()
        log_text = (store.root / f"{key}.build.log").read_text()
        assert "removing template" in log_text and "sha256 does not match" in log_text, log_text[-2000:]
        rebuilt = store.get(key, samples=None)
        assert rebuilt.manifest.created_unix > old.manifest.created_unix

        again = await launcher.launch(env.request("after-rebuild"))
        try:
            assert again.how == "clone"
        finally:
            await shut(again)

    asyncio.run(scenario())
