"""The kernel command line contract with guest/init.sh (rund.hypervisor.cmdline)."""

from __future__ import annotations

import base64

import pytest

from rund.hypervisor import Machine, cmdline
from rund.hypervisor.cmdline import CmdlineError


def _params(line):
    return dict(w.split("=", 1) if "=" in w else (w, None) for w in line.split())


def test_pmem_root_with_dax_and_the_tcg_flags():
    p = _params(cmdline.kernel_cmdline(root=cmdline.PMEM_ROOT, rootflags=cmdline.DAX_FLAGS, tsc_khz=2299998))
    assert p["rund.root"] == "/dev/pmem0"
    assert p["rund.rootflags"] == "dax=always"
    assert p["tsc_early_khz"] == "2299998" and p["tsc"] == "reliable"
    assert p["console"] == "ttyS0" and p["panic"] == "-1" and "quiet" in p
    assert "rund.initcmd" not in p and "rund.trace" not in p


def test_initcmd_travels_as_base64():
    script = "echo 'a b'; poweroff -f"
    p = _params(cmdline.kernel_cmdline(root=cmdline.BLK_ROOT, initcmd=script, trace=True))
    assert base64.b64decode(p["rund.initcmd"]).decode() == script
    assert p["rund.trace"] == "1"
    assert "tsc_early_khz" not in p


@pytest.mark.parametrize("kwargs", [{"root": "/dev/vda x"}, {"root": ""}, {"root": "/dev/vda", "init": '/a"b'},
                                    {"root": "/dev/vda", "extra": ["a b"]}])
def test_values_that_would_split_are_rejected(kwargs):
    with pytest.raises(CmdlineError):
        cmdline.kernel_cmdline(**kwargs)


def test_too_long_is_rejected():
    with pytest.raises(CmdlineError, match="limit"):
        cmdline.kernel_cmdline(root="/dev/vda", initcmd="x" * 1600)


def test_the_guest_root_per_machine():
    assert cmdline.guest_root(Machine.Q35) == ("/dev/pmem0", "dax=always")
    assert cmdline.guest_root(Machine.MICROVM) == ("/dev/vda", "")


def test_start_params_are_valid_words():
    p = _params(cmdline.kernel_cmdline(root=cmdline.PMEM_ROOT, extra=cmdline.START_PARAMS))
    assert p["rcupdate.rcu_expedited"] == "1"


def test_idle_params_are_valid_words():
    line = cmdline.kernel_cmdline(root=cmdline.PMEM_ROOT, extra=cmdline.IDLE_PARAMS)
    p = _params(line)
    assert "nowatchdog" in p and p["psi"] == "0"
    assert p["sysctl.vm.compaction_proactiveness"] == "0" and p["sysctl.vm.stat_interval"] == "30"
