"""A spare VM's network wiring runs alongside its adoption (Sandbox._start): awaited before the sandbox's Create
answers, and settled on a failed create or a stop so its network is detached."""
import asyncio

import pytest

from rund.resources.network import NetworkError
from rund.runtime.sandbox import Sandbox
from rund.runtime.trace import StepTrace


def bare_sandbox(wiring) -> Sandbox:
    sb = object.__new__(Sandbox)            # only what the wiring touches
    sb.id, sb._network, sb._wiring = "sb", None, wiring
    return sb


def test_create_waits_for_the_wiring_and_keeps_its_network():
    async def run():
        attached = object()

        async def wire():
            await asyncio.sleep(0.05)
            return attached
        sb = bare_sandbox(asyncio.create_task(wire()))
        trace = StepTrace("create")
        await sb._network_wired(trace)
        assert sb._network is attached and sb._wiring is None
        assert [name for name, _ in trace.steps] == ["network_wire"]
        await sb._network_wired(trace)      # nothing pending: nothing to wait for
        assert len(trace.steps) == 1
    asyncio.run(run())


def test_a_failed_wiring_fails_the_create_and_a_settle_only_logs_it():
    async def fail():
        raise NetworkError("the spare VM's tap did not arrive in the pod's netns")

    async def run():
        sb = bare_sandbox(asyncio.create_task(fail()))
        with pytest.raises(NetworkError, match="did not arrive"):
            await sb._network_wired(StepTrace("create"))
        sb = bare_sandbox(asyncio.create_task(fail()))
        await sb._settle_wiring()           # a failed create or a stop: the create's own error is reported
        assert sb._network is None and sb._wiring is None
    asyncio.run(run())
