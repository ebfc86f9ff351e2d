"""Shim groups through CRI (issue 17): the rund handler's config says `[shim] pods_per_shim = 4`, so the pods of a
private containerd 1.6 with CRI share one shim process. Each pod keeps its own socket (its containers' `start`
finds it there), its VM and its network; removing one pod leaves the others working and nothing of it behind;
killing the group shim takes all its pods down and containerd's cleanup leaves nothing of them behind."""
from __future__ import annotations

import contextlib
import os
import signal

import grpc
import pytest

from integration.cri.client import api, container_config, sandbox_config
from integration.rund_leaks import leftovers, qemu_processes_of
from integration.test_cri_pods import wait_for
from rund.shim import address, peer

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]

RUND_CONFIG = "[shim]\npods_per_shim = 4\n"       # the rund handler's ConfigPath (conftest)
NS = "k8s.io"



def shim_of(ctd, sid: str) -> int | None:
    shim = peer.probe(address.socket_path(address.socket_address(ctd.address, NS, sid)))
    return shim.pid if shim else None


def start_pod(cri, ctd, name: str) -> tuple[str, str]:
    pod = sandbox_config(name, log_directory=str(ctd.log_dir / name))
    sid = cri.run_pod_sandbox(pod, "rund")
    cid = cri.create_container(sid, container_config("app", ctd.image, ["sleep", "600"]), pod)
    cri.start_container(cid)
    return sid, cid


def echo(cri, cid: str, text: str) -> None:
    res = cri.exec_sync(cid, ["echo", text], timeout=60)
    assert (res.stdout, res.exit_code) == (f"{text}\n".encode(), 0)


@contextlib.contextmanager
def running(cri, ctd, names: list[str]):
    """One pod (a sleeping container) per name; every pod left is removed at the end and nothing of it may stay."""
    pods: dict[str, tuple[str, str]] = {}
    try:
        for name in names:
            pods[name] = start_pod(cri, ctd, name)
        yield pods
    finally:
        for sid, _ in pods.values():
            with contextlib.suppress(grpc.RpcError):
                cri.remove_pod(sid)
    for sid, _ in pods.values():
        wait_for(lambda: leftovers(sid, NS) == {}, 20, f"leftovers of {sid}: {leftovers(sid, NS)}")


def test_cri_pods_share_a_group_shim_and_one_pod_goes_alone(cri, cri_containerd):
    ctd = cri_containerd
    with running(cri, ctd, ["grp-a", "grp-b", "grp-c"]) as pods:
        shims = {name: shim_of(ctd, sid) for name, (sid, _) in pods.items()}
        assert len(set(shims.values())) == 1 and None not in shims.values(), shims
        for name, (_, cid) in pods.items():
            echo(cri, cid, f"hi from {name}")

        gone_sid, _ = pods.pop("grp-b")
        cri.remove_pod(gone_sid)                          # stop (kill its containers), remove: Shutdown, delete
        wait_for(lambda: leftovers(gone_sid, NS) == {}, 20, f"leftovers of {gone_sid}: {leftovers(gone_sid, NS)}")
        sock = address.socket_path(address.socket_address(ctd.address, NS, gone_sid))
        wait_for(lambda: not os.path.exists(sock), 10, f"the pod's socket {sock} to go")
        for name, (sid, cid) in pods.items():
            echo(cri, cid, f"{name} still here")
            assert cri.container_status(cid).status.state == api.CONTAINER_RUNNING
            assert shim_of(ctd, sid) == shims[name]
    shim = next(iter(shims.values()))
    wait_for(lambda: not os.path.exists(f"/proc/{shim}"), 20, f"the group shim {shim} to exit with no pod left")


def test_killing_a_cri_group_shim_takes_its_pods_down_and_leaves_nothing(cri, cri_containerd):
    ctd = cri_containerd
    with running(cri, ctd, ["grpk-a", "grpk-b"]) as pods:
        shim = shim_of(ctd, pods["grpk-a"][0])
        assert shim is not None and shim_of(ctd, pods["grpk-b"][0]) == shim
        vmms = [p for sid, _ in pods.values() for p in qemu_processes_of(sid, NS)]
        assert len(vmms) == 2
        os.kill(shim, signal.SIGKILL)
        for sid, cid in pods.values():                    # containerd: the task exited, the pod is not ready
            wait_for(lambda: cri.container_status(cid).status.state == api.CONTAINER_EXITED, 60,
                     f"container {cid} to be reported exited")
            wait_for(lambda: cri.pod_sandbox_status(sid).status.state == api.SANDBOX_NOTREADY, 60,
                     f"pod {sid} to be reported not ready")
        for pid in vmms:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 20, f"QEMU {pid} to die with its shim")
