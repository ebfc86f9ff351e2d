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
