"""Suite-wide test plumbing: ``async def`` tests run in a fresh event loop, bounded in time, and a test that
leaves tasks behind fails."""
from __future__ import annotations

import asyncio
import inspect

import pytest

ASYNC_TEST_TIMEOUT = 30.0

# VM fixtures by stage (vm_factory, booted, template, clone) for every test tree.
pytest_plugins = ["rund.tests.vm_fixtures"]


async def _run_bounded(coro) -> None:
    limit = asyncio.timeout(ASYNC_TEST_TIMEOUT)
    try:
        async with limit:
            await coro
    except TimeoutError:
        if limit.expired():
            pytest.fail(f"test did not finish within {ASYNC_TEST_TIMEOUT}s (a hang)")
        raise
    await asyncio.sleep(0)  # let just-finished tasks run their last step
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    for task in left:
        task.cancel()
    assert not left, f"tasks left running: {left}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(_run_bounded(pyfuncitem.obj(**args)))
    return True


@pytest.fixture(scope="session", autouse=True)
def _no_fork_servers_left(tmp_path_factory):
    """Shim fork servers started for the tests' own state dirs (under pytest's temp root) end with the session; a
    server outlives its starts by design (rund/shim/forkserver.py), a test run should not."""
    yield
    import os
    import signal
    from rund.procfs import argvs
    root = os.fsencode(tmp_path_factory.getbasetemp().parent)
    for pid, argv in argvs():
        if b"rund.shim.forkserver" in argv and any(a.startswith(root) for a in argv):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
