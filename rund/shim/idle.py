"""A shim that serves nothing exits: no container, no call in flight, and no call for IDLE_TIMEOUT seconds.

That covers a daemon containerd never connected to (its `start` was killed after the handshake, or containerd gave up)
and one whose tasks are gone and whose containerd went away without Shutdown. containerd sends Create right after
`start` prints the address and Shutdown after the last Delete, so a healthy shim is never idle that long.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from rund.errors import InvalidArgument
from rund.shim.call_hooks import Hooked

log = logging.getLogger("rund.shim")

IDLE_TIMEOUT = 30.0
ENV = "RUND_SHIM_IDLE_TIMEOUT"      # seconds; overrides IDLE_TIMEOUT (tests use a short one)


def timeout_from_env(environ: dict[str, str] | None = None) -> float:
    raw = (os.environ if environ is None else environ).get(ENV, "")
    if not raw:
        return IDLE_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"{ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise InvalidArgument(f"{ENV}={raw!r} must be positive")
    return value


class IdleWatch:
    """`on_quiet`: called once `quiet_after` s after a call ended with no call since (a burst of calls is over:
    the shim trims its heap then, trim.py); one timer per burst, none while nothing calls."""

    def __init__(self, timeout: float, has_containers: Callable[[], bool], on_idle: Callable[[], None],
                 on_quiet: Callable[[], object] | None = None, quiet_after: float = 2.0):
        self.timeout = timeout
        self._has_containers = has_containers
        self._on_idle = on_idle
        self._on_quiet = on_quiet
        self._quiet_after = quiet_after
        self._quiet: asyncio.TimerHandle | None = None
        self._busy = 0
        self._last = asyncio.get_running_loop().time()
        self._call_ended = asyncio.Event()

    def track(self, service: object) -> object:
        """`service` with every async method counted as activity (register this with the ttrpc server)."""
        return Hooked(service, self._enter, self._leave)

    async def run(self) -> None:
        """Returns after calling on_idle; cancel it to stop watching."""
        loop = asyncio.get_running_loop()
        while True:
            left = self._last + self.timeout - loop.time()
            if left > 0:
                await asyncio.sleep(left)
                continue
            if self._busy or self._has_containers():
                # Serving: only a call changes that (containers come and go by Create and Delete), so wait for
                # one to end instead of looking again every period: an idle pod's shim has no timer at all.
                self._call_ended.clear()
                await self._call_ended.wait()
                continue
            log.warning("no task and no call for %.0f s: nobody uses this shim, exiting", self.timeout)
            self._on_idle()
            return

    def _enter(self) -> None:
        self._busy += 1
        self._last = asyncio.get_running_loop().time()
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None

    def _leave(self) -> None:
        self._busy -= 1
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        self._call_ended.set()
        if self._busy == 0 and self._on_quiet is not None:
            if self._quiet is not None:
                self._quiet.cancel()
            self._quiet = loop.call_later(self._quiet_after, self._quieted)

    def _quieted(self) -> None:
        self._quiet = None
        try:
            self._on_quiet()
        except Exception:   # noqa: BLE001 - housekeeping: never the shim's failure
            log.exception("after a burst of calls")

    def close(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None
