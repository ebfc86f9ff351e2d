"""Spare VMs through CRI ([templates] spare_vms): the first pod clones and starts the template's keeper; a later pod
takes a spare the keeper made ahead of time. That pod is a pod like any other: its IP answers from the host, its
containers see its hostname, its QEMU runs in its own cgroup at normal priority; removed, nothing of it is left
(QEMU, mounts, the spare's directory, its tap). The keeper makes another spare, and stops them when it exits."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from integration.rund_leaks import STATE_DIR, leftovers
from integration.test_cri_network import _try_fetch, url, web_pod
from integration.test_cri_pod_behaviour import sh
from integration.test_cri_pods import wait_for
from rund import config as rund_config
from rund.procfs import state_and_start
from rund.runtime import spares
from rund.templates import Launcher, shape_from_config

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUND_CONFIG = "[templates]\nspare_vms = 1\n"      # the rund handler's ConfigPath (conftest)


def _trace_label(ctd, sid: str) -> str:
    lines = [ln for ln in ctd.log_path.read_text(errors="replace").splitlines() if f"trace create {sid}" in ln]
    assert lines, f"no create trace for {sid}"
    return lines[-1].split(" vm=", 1)[1].split()[0]


def _qemu_pid(sid: str) -> int:
    return json.loads((STATE_DIR / "k8s.io" / sid / "sandbox.json").read_text())["qemu_pid"]


def _niceness(pid: int) -> set[int]:
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def _cgroup(pid: int, controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return ""


def _ready_logged(root: Path, keeper: int) -> bool:
    """Whether keeper `keeper` logged a spare ready (the log is the root's, kept across keepers)."""
    return any(f"keeper[{keeper}]" in line and " ready " in line
               for line in (root / spares.KEEPER_LOG).read_text().splitlines())


def _spare_qemus(root: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"{root}/spare-"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_pod_takes_a_spare_vm_serves_its_network_and_leaves_nothing(cri, cri_containerd):
    ctd = cri_containerd
    build = subprocess.run([sys.executable, "-m", "rund.cli", "--config", ctd.rund_config_path, "templates", "build"],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-2000:]
    cfg = rund_config.load(ctd.rund_config_path)
    launcher = Launcher(shape_from_config(cfg), work_dir=Path(cfg.state_dir), templates_dir=Path(cfg.templates.dir))
    root = spares.root_for(Path(cfg.state_dir), launcher.template_key().key)
    keeper = spares.keeper_pid(root)
    if keeper:                                  # a keeper of an earlier run: this test starts its own
        os.kill(keeper, signal.SIGTERM)
        wait_for(lambda: spares.keeper_pid(root) is None, 30, "the earlier keeper to exit")
    try:
        with web_pod(cri, ctd, "rund", "spare-first") as (sid, _, _, step):
            with step("the first pod clones and starts the keeper"):
                assert _trace_label(ctd, sid) == "clone"
                keeper = wait_for(lambda: spares.keeper_pid(root), 30, "the spare VM keeper")
                wait_for(lambda: _ready_logged(root, keeper), 60, "a ready spare VM")  # made, not only started
                [spare_pid] = _spare_qemus(root)
                assert _niceness(spare_pid) == {spares.SPARE_NICE}     # made with what CPU pods leave
        with web_pod(cri, ctd, "rund", "spare-second") as (sid, cid, ips, step):
            with step("the second pod's VM is the spare, now the pod's"):
                assert _trace_label(ctd, sid) == "spare"
                qemu = _qemu_pid(sid)
                assert qemu == spare_pid
                assert _niceness(qemu) == {0}
                assert _cgroup(qemu, "memory") != _cgroup(keeper, "memory")   # moved into the pod's VMM cgroup
            with step("its IP answers from the host, its containers have its hostname"):
                assert wait_for(lambda: _try_fetch(url(ips[0])), 30, f"{url(ips[0])} to answer")
                assert sh(cri, cid, "hostname") == "spare-second"
                assert "tentative" not in sh(cri, cid, "ip -o addr show eth0")
            with step("the keeper made another spare"):
                wait_for(lambda: [p for p in _spare_qemus(root) if p != spare_pid], 60, "a new spare VM")
        with step("nothing of the pod is left: QEMU, its directory, mounts and cgroups"):
            wait_for(lambda: state_and_start(qemu) is None or state_and_start(qemu)[0] == b"Z", 30, "QEMU to exit")
            wait_for(lambda: not leftovers(sid, "k8s.io"), 30, f"the pod's leftovers to go: {leftovers(sid, 'k8s.io')}")
            assert spare_pid not in _spare_qemus(root)
    finally:
        keeper = spares.keeper_pid(root)
        if keeper:
            os.kill(keeper, signal.SIGTERM)
    wait_for(lambda: spares.keeper_pid(root) is None, 30, "the keeper to exit on SIGTERM")
    wait_for(lambda: not _spare_qemus(root), 30, "the keeper's spares to stop with it")
    assert not list(root.glob(spares.SPARE_PREFIX + "*"))
