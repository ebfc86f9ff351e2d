"""OOM events: inotify on each container's memory.events; an oom_kill increase queues the container id."""
import asyncio
import logging
import os

from ..linux import inotify
from .stats import flat_keyed

log = logging.getLogger(__name__)


class OomWatcher:
    def __init__(self):
        self._fd: int | None = None
        self._watches: dict[int, tuple[str, str]] = {}  # wd -> (container id, memory.events path)
        self._counts: dict[str, int] = {}
        self.events: asyncio.Queue[str] = asyncio.Queue()

    def watch(self, container_id: str, events_path: str) -> None:
        if not os.path.exists(events_path):
            log.info("no %s: OOM events for %s are not watched", events_path, container_id)
            return
        if self._fd is None:
            self._fd = inotify.init()
            asyncio.get_running_loop().add_reader(self._fd, self._on_events)
        wd = inotify.add_watch(self._fd, events_path, inotify.IN_MODIFY)
        self._watches[wd] = (container_id, events_path)
        self._counts[container_id] = self._oom_kills(events_path)

    def unwatch(self, container_id: str) -> None:
        for wd, (cid, _path) in list(self._watches.items()):
            if cid == container_id:
                del self._watches[wd]
                if self._fd is not None:
                    inotify.rm_watch(self._fd, wd)
        self._counts.pop(container_id, None)

    async def next(self) -> str:
        return await self.events.get()

    def close(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _on_events(self) -> None:
        try:
            wds = inotify.parse_events(os.read(self._fd, 65536))
        except BlockingIOError:
            return
        for wd in set(wds):
            if wd not in self._watches:
                continue
            container_id, path = self._watches[wd]
            count = self._oom_kills(path)
            if count > self._counts.get(container_id, 0):
                self._counts[container_id] = count
                self.events.put_nowait(container_id)

    @staticmethod
    def _oom_kills(path: str) -> int:
        try:
            with open(path) as f:
                return flat_keyed(f.read()).get("oom_kill", 0)
        except OSError:
            return 0
