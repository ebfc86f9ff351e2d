"""A service whose coroutine methods each run between two hooks: the idle watch counts the calls in flight
(idle.py), a group shim runs every call as its sandbox's (group.py). Register the wrapper with the ttrpc server."""
from __future__ import annotations

import inspect
from collections.abc import Callable


class Hooked:
    def __init__(self, service: object, enter: Callable[[], None], leave: Callable[[], None] | None = None):
        self._service, self._enter, self._leave = service, enter, leave

    def __getattr__(self, name: str):
        target = getattr(self._service, name)
        if not inspect.iscoroutinefunction(target):
            return target
        enter, leave = self._enter, self._leave

        async def call(ctx, request):
            enter()
            try:
                return await target(ctx, request)
            finally:
                if leave is not None:
                    leave()
        call.__name__ = name
        return call
