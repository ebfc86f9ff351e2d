"""Wait until a VM's agent answers Health over its channel."""
from __future__ import annotations

import asyncio
import time

from rund import errors
from rund.agent import AgentClient
from rund.hypervisor import QemuVM

HEALTH_POLL = 2.0


async def wait_for_agent(vm: QemuVM, timeout: float, poll: float = HEALTH_POLL) -> AgentClient:
    """Connect to the VM's agent port and return once Health answers (requests wait until the guest reads them)."""
    deadline = time.monotonic() + timeout
    path = str(vm.agent_address.path)
    agent = await AgentClient.connect_unix(path)
    try:
        while True:
            if vm.returncode is not None:
                raise errors.Unavailable(f"sandbox VM exited with {vm.returncode} before its agent answered: "
                                         f"{vm.log_tail()[-500:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.Unavailable(f"the agent of sandbox VM {vm.spec.name} did not answer in {timeout:.0f} s")
            try:
                await agent.health(timeout=min(poll, left))
                return agent
            except errors.Unavailable:
                if agent.closed:
                    await asyncio.sleep(0.05)
                    agent = await AgentClient.connect_unix(path)
    except BaseException:
        await agent.close()
        raise
