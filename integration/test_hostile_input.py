"""Hostile input through a real containerd 1.6 (issue 13): what a user can send through `ctr` must be refused
cleanly, without touching anything outside rund's own state, and without leaving a shim behind.

One section per kind of input; keep each test self-contained (its own ids, its own cleanup)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from integration.rund_leaks import STATE_DIR, leftovers
from rund.shim import address, idle, peer

pytestmark = [pytest.mark.e2e, pytest.mark.root]

RUNTIME = "io.containerd.rund.v2"
TIMEOUT = 300
SHIM = Path(sys.executable).parent / "containerd-shim-rund-v2"


def shim_socket(ctd, group: str, namespace: str = "default") -> str:
    return address.socket_path(address.socket_address(ctd.address, namespace, group))


def remove_container(ctd, cid: str) -> None:
    ctd.ctr("task", "kill", "-s", "KILL", cid, check=False)
    ctd.ctr("task", "rm", "-f", cid, check=False)
    ctd.ctr("containers", "rm", cid, check=False)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# ---- ids that would become paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["../../../tmp/{victim}", ".", ".."], ids=["dotdot-path", "dot", "dotdot"])
def test_a_sandbox_id_annotation_that_is_a_path_is_refused(rund_containerd, value):
    ctd = rund_containerd
    victim = Path(f"/tmp/rund-victim-{uuid.uuid4().hex[:8]}")
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "precious").write_text("keep me")
    state_before = tree(STATE_DIR / "default")
    cid = f"hostile-{uuid.uuid4().hex[:6]}"
    annotation = f"io.kubernetes.cri.sandbox-id={value.format(victim=victim.name)}"
    try:
        res = ctd.ctr("run", "--rm", "--runtime", RUNTIME, "--annotation", annotation, ctd.image, cid, "true",
                      check=False, timeout=TIMEOUT)
        err = res.stderr.decode(errors="replace")
        assert res.returncode != 0 and "not a valid identifier" in err, err + ctd.log_tail()
        assert (victim / "sub" / "precious").read_text() == "keep me"
        assert tree(STATE_DIR / "default") == state_before
        assert leftovers(cid) == {}
        assert not os.path.exists(shim_socket(ctd, cid))
    finally:
        remove_container(ctd, cid)
        shutil.rmtree(victim, ignore_errors=True)


# ---- stale shims --------------------------------------------------------------------------------------------------


@pytest.mark.vm
def test_a_stale_shim_of_a_cancelled_start_is_not_adopted_by_a_later_run(rund_containerd, tmp_path):
    """A `start` containerd gave up on left a daemon for its id, and containerd removed that bundle. A later run
    with the same id gets a shim of its own (the stale one is retired), and the socket is 0600."""
    ctd = rund_containerd
    cid = f"stale-{uuid.uuid4().hex[:6]}"
    gone_bundle = tmp_path / "cancelled-bundle"
    gone_bundle.mkdir()
    (gone_bundle / "config.json").write_text('{"ociVersion": "1.0.2"}')
    res = subprocess.run([str(SHIM), "-namespace", "default", "-address", ctd.address, "-publish-binary",
                          "/bin/true", "-id", cid, "start"], cwd=gone_bundle, capture_output=True, timeout=60,
                         env={**os.environ, idle.ENV: "600"})
    assert res.returncode == 0, res.stderr.decode()
    path = shim_socket(ctd, cid)
    stale = peer.probe(path).pid
    shutil.rmtree(gone_bundle)
    try:
        res = ctd.ctr("run", "-d", "--runtime", RUNTIME, ctd.image, cid, "sleep", "300", check=False,
                      timeout=TIMEOUT)
        assert res.returncode == 0, res.stderr.decode() + ctd.log_tail()
        serving = peer.probe(path)
        assert serving is not None and serving.pid != stale
        deadline = time.monotonic() + 10                # it stopped listening first; it exits soon after
        while os.path.exists(f"/proc/{stale}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{stale}")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.readlink(f"/proc/{serving.pid}/cwd").endswith(f"/default/{cid}")   # containerd's bundle
        out = ctd.ctr("task", "exec", "--exec-id", "e1", cid, "echo", "served", check=False, timeout=TIMEOUT)
        assert out.stdout.decode().strip() == "served", out.stderr.decode()
    finally:
        remove_container(ctd, cid)
        try:
            os.kill(stale, 9)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30        # the shim removes its socket once containerd's Shutdown came
    while ((left := leftovers(cid)) or os.path.exists(path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == {} and not os.path.exists(path)
