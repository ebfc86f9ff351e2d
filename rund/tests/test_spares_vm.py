"""Spare VMs (rund/runtime/spares.py) with real QEMU and the real agent: a taken spare is adopted (its QMP connection
and its process, not our child) and runs a container warm; the keeper makes another and stops its spares when it
exits; a keeper killed outright leaves its spares running (a spare has no death signal: once handed over it must
outlive the keeper), and the next keeper kills them. The CRI path is integration/test_cri_spares.py."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration.test_cri_pods import wait_for
from rund import config
from rund.hypervisor.paths import VMPaths
from rund.hypervisor.process import ADOPTED_EXIT
from rund.ops.metrics import NodeMetrics
from rund.procfs import state_and_start
from rund.runtime import spares
from rund.runtime.volumes import teardown
from rund.templates import Launcher, shape_from_config
from rund.tests.test_templates_vm import guest_os_rootfs, run_container

pytestmark = pytest.mark.vm


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a keeper unshares a netns; QEMU's taps)")


def _launcher() -> Launcher:
    cfg = config.load(None)
    return Launcher(shape_from_config(cfg), work_dir=Path(cfg.state_dir), templates_dir=Path(cfg.templates.dir),
                    build_templates=False)


def _spare_qemus(root: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"{root}/spare-"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    st = state_and_start(pid)
    return st is not None and st[0] != b"Z"


def test_no_keeper_no_spare(tmp_path):
    assert spares.take(tmp_path) is None
    assert spares.keeper_pid(tmp_path) is None
    assert not spares.keeper_running(tmp_path)


def test_a_taken_spare_is_adopted_runs_a_container_and_the_keeper_makes_another(tmp_path):
    _root()
    launcher = _launcher()
    asyncio.run(launcher.ensure_template())
    root = tmp_path / "spares"
    keeper = spares.spawn_keeper(launcher.spare_request(1, root), root)
    try:
        [first] = wait_for(lambda: _spare_qemus(root), 120, "a spare VM")
        spare = wait_for(lambda: spares.take(root), 60, "a ready spare")
        assert spare.pid == first
        sandbox = tmp_path / "sandbox"
        sandbox.mkdir()
        os.rename(spare.dir, sandbox / "spare-vm")

        async def use() -> None:
            fd, spare.qmp_fd = spare.qmp_fd, -1
            launched = await launcher.adopt(spare.name, sandbox / "spare-vm", spare.pid, fd, hostname="adopted")
            spare.close()
            try:
                assert launched.how == "spare" and launched.vm.pid == first
                assert await launched.vm.query_status() == "running"
                out = await run_container(launched.agent, guest_os_rootfs(launcher), "c1", "echo hi")
                assert out == b"hi\n"
                # Its warm-up took the first rootfs hotplug slot (a copy of the guest OS image): the pod's image
                # goes in the next, and the guest finds it where the slot layout says.
                shape = launcher.shape
                assert spare.plugged == 1 and shape.rootfs_hotplug_slots >= 2
                await launched.vm.hotplug_pmem(1, root / spares.WARM_IMAGE)
                device = shape.rootfs_device(shape.rootfs_slots + 1)
                rootfs = replace(guest_os_rootfs(launcher), base_device=device)
                assert await run_container(launched.agent, rootfs, "c2", "echo there") == b"there\n"
            finally:
                await launched.agent.close()
                assert await launched.vm.stop(timeout=5.0) == ADOPTED_EXIT    # its status is the keeper's
            assert not _alive(first)
            assert teardown(VMPaths(sandbox / "spare-vm").share)    # the keeper's self-bind, as a sandbox ends it

        asyncio.run(use())
        second = wait_for(lambda: [p for p in _spare_qemus(root) if p != first], 120, "another spare")
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(timeout=30) == 0
        assert not any(_alive(p) for p in second), "the keeper left its spare running"
        assert not list(root.glob(spares.SPARE_PREFIX + "*"))
    finally:
        if keeper.poll() is None:
            keeper.kill()
            keeper.wait()
        for pid in _spare_qemus(root):
            os.kill(pid, signal.SIGKILL)


def test_the_spares_of_a_killed_keeper_outlive_it_and_the_next_keeper_kills_them(tmp_path):
    _root()
    launcher = _launcher()
    asyncio.run(launcher.ensure_template())
    root = tmp_path / "spares"
    request = launcher.spare_request(1, root)
    first = spares.spawn_keeper(request, root)
    second = None
    try:
        wait_for(lambda: " ready " in (root / spares.KEEPER_LOG).read_text(), 120, "a ready spare")
        [orphan] = _spare_qemus(root)
        first.kill()
        first.wait()
        time.sleep(0.5)
        assert _alive(orphan)
        second = spares.spawn_keeper(request, root)
        wait_for(lambda: not _alive(orphan), 30, "the next keeper to kill the orphan")
        wait_for(lambda: (root / spares.KEEPER_LOG).read_text().count(" ready ") == 2, 120, "the next keeper's spare")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        assert not _spare_qemus(root)
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        for pid in _spare_qemus(root):
            os.kill(pid, signal.SIGKILL)


def test_rund_templates_spares_fills_the_pool_a_few_at_a_time_and_counts_takes(tmp_path):
    """`rund templates spares --wait` warms a class's pool before pods arrive: it starts the keeper (detached, as a
    pod's start would) and returns once every spare is ready; the keeper makes at most one per host CPU at a time,
    and its `stats` count what was taken."""
    _root()
    state = Path(tempfile.mkdtemp(prefix="rund-spares-"))     # short: the keeper's socket path is under it
    conf = tmp_path / "spares.toml"
    conf.write_text(f'state_dir = "{state}"\n[templates]\nspare_vms = 3\n')
    rund = [str(Path(sys.executable).with_name("rund")), "--config", str(conf), "templates", "spares"]
    cfg = config.load(str(conf))
    key = Launcher(shape_from_config(cfg), work_dir=Path(cfg.state_dir), templates_dir=Path(cfg.templates.dir),
                   build_templates=False).template_key().key
    root = spares.root_for(state, key)
    out = subprocess.run(rund, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith(": no keeper")
    waiter = subprocess.Popen([*rund, "--wait", "300"], stdout=subprocess.PIPE, text=True)
    most = 0
    try:
        while waiter.poll() is None:
            if (stats := spares.statistics(root)) is not None:
                most = max(most, stats["starting"])
            time.sleep(0.1)
        assert waiter.returncode == 0, waiter.stdout.read()
        assert "3/3 ready, 0 starting, 0 taken, 0 failed" in waiter.stdout.read()
        assert 1 <= most <= spares.PARALLEL_STARTS
        spare = spares.take(root)
        assert spare is not None
        spares.kill(spare)
        spare.close()
        assert teardown(VMPaths(spare.dir).share)       # the keeper's self-bind, as a sandbox ends it
        stats = spares.statistics(root)
        assert stats["taken"] == 1 and stats["ready"] == 2 and stats["count"] == 3
        metrics = NodeMetrics(cfg, claim_spool=False)     # `rund metrics serve` asks every keeper of its state dir
        try:
            samples = {(s.name, s.labels.get("state")): s.value
                       for f in text_string_to_metric_families(metrics.exposition()[0].decode())
                       for s in f.samples if s.labels.get("template") == key}
        finally:
            metrics.close()
        assert samples[("rund_spare_vms", "ready")] == 2 and samples[("rund_spare_vms_target", None)] == 3
        assert samples[("rund_spare_vms_taken_total", None)] == 1
    finally:
        if waiter.poll() is None:
            waiter.kill()
        if (pid := spares.keeper_pid(root)) is not None:
            os.kill(pid, signal.SIGTERM)        # not our child: the CLI that started it has exited
            wait_for(lambda: spares.keeper_pid(root) is None and not _spare_qemus(root), 60, "the keeper to stop")
    assert not _spare_qemus(root)
    assert str(state) not in Path("/proc/self/mountinfo").read_text()
    shutil.rmtree(state)
