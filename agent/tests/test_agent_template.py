"""Template save/restore with the real agent: the template's host leaves right before the save; each clone's
host connects after restore and gets a working agent (even if the guest never saw the template's host leave),
then PostRestore gives every clone its own clock and RNG state.

The `template`, `clone` and `vm_factory` fixtures (rund/tests/vm_fixtures.py) save and clone as rund does."""
import asyncio

import pytest

from rund.agent import AgentClient, StdioConfig
from rund.hypervisor import Machine
from rund.tests.vm_factory import os_rootfs

from .helpers import read_all, spec

pytestmark = pytest.mark.vm
ROOTFS = os_rootfs(Machine.MICROVM)


async def random_bytes(client: AgentClient, cid: str) -> bytes:
    await client.create_container(cid, spec(["head", "-c", "32", "/dev/urandom"]), ROOTFS, StdioConfig(stdout=True))
    await client.start_container(cid)
    data = await read_all(client, cid)
    await client.wait_process(cid)
    await client.remove_container(cid)
    return data


def test_clones_of_a_template_serve_and_diverge(template, clone, vm_factory):
    # Each clone: restored, Health answered, PostRestore(hostname=its name) done.
    clones = (clone, vm_factory.clone(template, name="clone2"))
    samples = []
    for guest in clones:
        print(f"{guest.spec.name}: QEMU exec -> restored, Health, PostRestore {guest.ready_s:.3f} s")

        async def sample() -> bytes:
            async with await guest.connect() as client:
                return await random_bytes(client, "rng")

        samples.append(asyncio.run(sample()))
    assert len(samples) == 2 and all(len(s) == 32 for s in samples)
    assert samples[0] != samples[1]
