"""VM fixtures by lifecycle stage, for every test tree (the root conftest loads this plugin); see vm_factory.py.

    vm_factory   per test: any stage, any shape (vm_factory.vm(...) is the `vm` stage: specified, not started)
    booted       the built guest (microvm) booted once per session; tests connect with `await booted.connect()`
    template     a saved template (microvm) per module
    clone        a clone of the module's template, per test
"""
from __future__ import annotations

import shutil

import pytest

from rund.tests.vm_factory import Guest, SavedTemplate, VMFactory


def _need_qemu() -> None:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("needs QEMU")


@pytest.fixture
def vm_factory():
    """A VMFactory for this test: any stage, any shape; every VM it made is stopped after the test."""
    _need_qemu()
    with VMFactory.scratch(with_shm=True) as factory:
        yield factory


@pytest.fixture(scope="session")
def booted() -> Guest:
    """The built guest (microvm) booted once for the session; connect with `await booted.connect()`."""
    # Shared: every user leaves the guest as it found it (containers removed, clock put back).
    _need_qemu()
    with VMFactory.scratch() as factory:
        guest = factory.booted(name="booted")
        print(f"guest agent ready {guest.ready_s:.1f} s after QEMU exec")
        yield guest


@pytest.fixture(scope="module")
def template() -> SavedTemplate:
    """A template (microvm) saved once per module, as rund's builder saves one."""
    _need_qemu()
    with VMFactory.scratch(with_shm=True) as factory:
        yield factory.template()


@pytest.fixture
def clone(vm_factory: VMFactory, template: SavedTemplate) -> Guest:
    """A clone of the module's template: restored, Health answered, PostRestore done."""
    return vm_factory.clone(template)
