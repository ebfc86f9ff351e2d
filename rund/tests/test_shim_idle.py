"""idle.py: a shim serving nothing (no container, no call) for its timeout asks to stop; any call or container
keeps it alive."""
from __future__ import annotations

import asyncio

import pytest

from rund.errors import InvalidArgument
from rund.shim import idle


class Service:
    def __init__(self):
        self.release = asyncio.Event()

    async def Slow(self, ctx, req):
        await self.release.wait()
        return req

    async def Fast(self, ctx, req):
        return req

    def plain(self):
        return "not a call"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_nobody_calling_means_idle_after_the_timeout():
    async def go():
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        began = loop.time()
        watch = idle.IdleWatch(0.2, lambda: False, stopped.set)
        await watch.run()
        return stopped.is_set(), loop.time() - began
    stopped, took = run(go())
    assert stopped and 0.2 <= took < 1.0


def test_a_call_in_flight_or_a_container_keeps_the_shim():
    async def go():
        containers = [True]
        stopped = asyncio.Event()
        watch = idle.IdleWatch(0.1, lambda: containers[0], stopped.set)
        service = Service()
        tracked = watch.track(service)
        assert tracked.plain() == "not a call"
        watching = asyncio.create_task(watch.run())
        await asyncio.sleep(0.35)
        assert not stopped.is_set()                         # a container
        containers[0] = False
        slow = asyncio.create_task(tracked.Slow(None, "r"))
        await asyncio.sleep(0.35)
        assert not stopped.is_set()                         # a call in flight
        service.release.set()
        assert await slow == "r"
        assert await tracked.Fast(None, "f") == "f"
        loop = asyncio.get_running_loop()
        ended = loop.time()
        await watching
        return stopped.is_set(), loop.time() - ended
    stopped, took = run(go())
    assert stopped and took >= 0.09


def test_the_timeout_comes_from_the_environment():
    assert idle.timeout_from_env({}) == idle.IDLE_TIMEOUT
    assert idle.timeout_from_env({idle.ENV: "2.5"}) == 2.5
    for bad in ("x", "0", "-1", "nan"):
        with pytest.raises(InvalidArgument):
            idle.timeout_from_env({idle.ENV: bad})


def test_a_shim_with_a_container_sets_no_timer():
    """An idle pod's shim sleeps in epoll without a timeout: nothing scheduled on its loop while a container
    exists and no call runs; the first call that ends starts the idle clock again."""
    async def go():
        containers = [True]
        stopped = asyncio.Event()
        watch = idle.IdleWatch(0.05, lambda: containers[0], stopped.set)
        tracked = watch.track(Service())
        watching = asyncio.create_task(watch.run())
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        timers = [h.when() - loop.time() for h in loop._scheduled if not h.cancelled()]
        containers[0] = False
        assert not stopped.is_set()
        await asyncio.sleep(0.2)
        assert not stopped.is_set()                         # nothing woke the watch: no call yet
        await tracked.Fast(None, "f")
        await asyncio.wait_for(watching, 2)
        return timers, stopped.is_set()
    timers, stopped = run(go())
    assert stopped
    assert all(left > 5 for left in timers), timers      # only run()'s own 10 s guard


def test_the_end_of_a_burst_of_calls_runs_on_quiet_once():
    """The shim trims its heap once calls stop (trim.py): one callback per burst, none while calls keep coming,
    none after close."""
    async def go():
        quiet = []
        watch = idle.IdleWatch(30, lambda: True, lambda: None, on_quiet=lambda: quiet.append(1), quiet_after=0.1)
        tracked = watch.track(Service())
        for _ in range(5):                                  # a burst: calls closer together than quiet_after
            await tracked.Fast(None, "r")
            await asyncio.sleep(0.02)
        assert quiet == []
        await asyncio.sleep(0.2)
        assert quiet == [1]                                 # once, after the burst
        await asyncio.sleep(0.2)
        assert quiet == [1]                                 # and no timer after it
        await tracked.Fast(None, "r")
        watch.close()
        await asyncio.sleep(0.2)
        return quiet
    assert run(go()) == [1]


def test_a_failing_on_quiet_is_not_the_shims_failure():
    async def go():
        def boom():
            raise RuntimeError("boom")
        watch = idle.IdleWatch(30, lambda: True, lambda: None, on_quiet=boom, quiet_after=0.01)
        await watch.track(Service()).Fast(None, "r")
        await asyncio.sleep(0.1)
    run(go())
