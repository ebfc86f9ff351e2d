"""What the guest agent enforces inside the VM, seen through a real containerd 1.6 and `ctr run`, as runc would:
the device allowlist (linux.resources.devices), the seccomp profile (linux.seccomp), and privileged containers.
Each run costs a VM (a template clone once the template exists)."""
from __future__ import annotations

import json

import pytest

from integration.test_ctr_run import assert_gone, run

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]


def test_a_guest_disk_can_be_mknoded_but_not_read(rund_containerd):
    """runc allows mknod of any node (`b *:* m`) and refuses its use: vda (254:0) and pmem0 (259:0) hold the
    guest's images, the agent's among them. /dev holds only the allowed nodes."""
    script = ("for d in '254 0' '259 0'; do mknod /tmp/b b $d && head -c1 /tmp/b >/dev/null 2>/tmp/e "
              "&& echo READ $d || cat /tmp/e; dd if=/dev/zero of=/tmp/b bs=1 count=1 2>/tmp/e && echo WROTE $d "
              "|| cat /tmp/e; rm /tmp/b; done; find /dev -type b | wc -l; head -c1 /dev/urandom | wc -c")
    res = run(rund_containerd, "devices", "sh", "-c", script)
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode() + rund_containerd.log_tail()
    assert "READ" not in out and "WROTE" not in out, out
    assert out.count("Operation not permitted") == 4, out
    assert out.splitlines()[-2:] == ["0", "1"], out            # no block node in /dev; the allowed ones work
    assert_gone(rund_containerd, "devices")


def test_seccomp_default_profile_is_applied(rund_containerd):
    show = "grep Seccomp: /proc/self/status; unshare -U true 2>&1 || :"
    res = run(rund_containerd, "seccomp", "sh", "-c", show, opts=("--seccomp",))
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode() + rund_containerd.log_tail()
    assert out.splitlines()[0] == "Seccomp:\t2", out
    assert "Operation not permitted" in out, out               # unshare is not in the default profile
    assert_gone(rund_containerd, "seccomp")
    res = run(rund_containerd, "noseccomp", "grep", "Seccomp:", "/proc/self/status")
    assert res.stdout.decode() == "Seccomp:\t0\n", res
    assert_gone(rund_containerd, "noseccomp")


def test_a_custom_seccomp_profile_with_errno_ret(rund_containerd, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    res = run(rund_containerd, "custom", "sh", "-c", "mkdir /tmp/x 2>&1; echo done",
              opts=("--seccomp", "--seccomp-profile", str(profile)))
    out = res.stdout.decode()
    assert res.returncode == 0 and "Permission denied" in out and out.endswith("done\n"), (
        res, rund_containerd.log_tail())
    assert_gone(rund_containerd, "custom")


def test_privileged_runs_with_all_devices_caps_and_a_writable_sys(rund_containerd):
    script = ("ls -l /dev/ptmx; grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              "grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1")
    res = run(rund_containerd, "privileged", "sh", "-c", script, opts=("--privileged",))
    out = res.stdout.decode().splitlines()
    assert res.returncode == 0, res.stderr.decode() + rund_containerd.log_tail()
    assert out[0].endswith("/dev/ptmx -> pts/ptmx"), out
    caps = dict(line.split(":\t") for line in out[1:3])
    assert caps["Seccomp"] == "0" and int(caps["CapEff"], 16) >> 21 & 1, out   # containerd's own set: CAP_SYS_ADMIN
    assert out[3] == "rw", out
    assert_gone(rund_containerd, "privileged")
