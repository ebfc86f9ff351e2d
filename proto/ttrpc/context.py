"""What a server handler learns about the call it is serving."""
from __future__ import annotations

import asyncio


class Context:
    """``metadata`` holds every value sent for a key, in order; ``deadline`` is in event-loop time."""

    __slots__ = ("service", "method", "metadata", "deadline", "_loop")

    def __init__(
        self,
        service: str,
        method: str,
        metadata: dict[str, list[str]],
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.service = service
        self.method = method
        self.metadata = metadata
        self.deadline = deadline
        self._loop = loop

    @property
    def timeout(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline.

        Pass it on as the timeout of calls made on behalf of this one.
        """
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._loop.time())

    def __repr__(self) -> str:
        return f"Context({self.service}/{self.method}, deadline={self.deadline}, metadata={self.metadata})"
