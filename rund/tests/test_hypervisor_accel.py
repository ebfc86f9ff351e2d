"""Accelerator detection and the host TSC rate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from rund.hypervisor.accel import KvmFacts, Reason, decide, detect_accel, probe_kvm
from rund.hypervisor.spec import Accel
from rund.hypervisor.tsc import TscUnknown, host_tsc_khz, parse_tsc_khz

GOOD = KvmFacts(device_exists=True, device_openable=True, api_version=12, create_vm_ok=True,
                modules=frozenset({"kvm_intel"}), cpu_flags=frozenset({"fpu", "vmx"}))


def test_a_real_kvm_host_gets_kvm():
    assert decide(GOOD).accel is Accel.KVM
    assert decide(replace(GOOD, modules=frozenset({"kvm_amd"}), cpu_flags=frozenset({"svm"}))).accel is Accel.KVM


@pytest.mark.parametrize("change, reason", [
    (dict(device_exists=False), Reason.NO_DEVICE),
    (dict(device_openable=False), Reason.NOT_OPENABLE),
    (dict(api_version=11), Reason.BAD_API),
    # A PVM host answers every ioctl, KVM_CREATE_VM included, and still cannot run a standard guest.
    (dict(modules=frozenset({"kvm_pvm"})), Reason.PVM_ONLY),
    (dict(modules=frozenset()), Reason.NO_VENDOR_MODULE),
    (dict(cpu_flags=frozenset({"fpu"})), Reason.NO_HW_VIRT),
    (dict(create_vm_ok=False), Reason.CREATE_VM_FAILED),
])
def test_anything_less_gets_tcg(change, reason):
    decision = decide(replace(GOOD, **change))
    assert decision.accel is Accel.TCG
    assert decision.reason is reason


def test_this_machine_probes_honestly():
    facts = probe_kvm()
    assert facts.device_exists == Path("/dev/kvm").exists()
    assert ("kvm_pvm" in facts.modules) == Path("/sys/module/kvm_pvm").exists()
    decision = detect_accel()
    assert decision == decide(facts)
    if Path("/sys/module/kvm_pvm").exists() and not facts.modules & {"kvm_intel", "kvm_amd"}:
        assert decision.accel is Accel.TCG and decision.reason is Reason.PVM_ONLY


def test_probe_with_no_device(tmp_path):
    facts = probe_kvm(dev=tmp_path / "kvm", sys_module=tmp_path, cpuinfo=tmp_path / "cpuinfo")
    assert not facts.device_exists and facts.modules == frozenset() and facts.cpu_flags == frozenset()
    assert decide(facts).reason is Reason.NO_DEVICE


def test_parse_tsc_khz():
    assert parse_tsc_khz("processor\t: 0\ncpu MHz\t\t: 2299.998\n") == 2299998
    assert parse_tsc_khz("cpu MHz : 2596.000\ncpu MHz : 1200.000\n") == 2596000
    with pytest.raises(TscUnknown):
        parse_tsc_khz("processor : 0\n")
    with pytest.raises(TscUnknown):
        parse_tsc_khz("cpu MHz : fast\n")


def test_host_tsc_khz_here_matches_cpuinfo():
    khz = host_tsc_khz()
    assert khz == parse_tsc_khz(Path("/proc/cpuinfo").read_text()) or Path(
        "/sys/devices/system/cpu/cpu0/tsc_freq_khz").exists()
    assert 100_000 < khz < 10_000_000
