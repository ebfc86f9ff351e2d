"""`rund templates spares [--wait SECONDS]`: the spare VM pool of the config's runtime class.

Without --wait: its keeper's counts (or that none runs). With --wait: the pool made ready before pods arrive, as an
operator warms a node before it takes traffic: the template built if missing, the keeper started if none runs (as
a CRI pod's start would; it exits once no spare was taken for its idle time), then waited for until every spare is
ready. Exit status 1 when the pool is not full in time.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rund.config import Config
from rund.runtime import spares
from rund.templates.admin import launcher_for

POLL_S = 0.5


def describe(key: str, stats: dict | None) -> str:
    if stats is None:
        return f"spares {key}: no keeper"
    return (f"spares {key}: {stats['ready']}/{stats['count']} ready, {stats['starting']} starting, "
            f"{stats['taken']} taken, {stats['failed']} failed")


def run(cfg: Config, wait: float | None) -> int:
    if not cfg.templates.spare_vms:
        print("spares: none ([templates] spare_vms = 0)")
        return 0
    launcher = launcher_for(cfg)
    key = launcher.template_key().key
    root = spares.root_for(Path(cfg.state_dir), key)
    stats = spares.statistics(root)
    if wait is None:
        print(describe(key, stats))
        return 0
    deadline = time.monotonic() + wait
    if stats is None:
        asyncio.run(launcher.ensure_template(wait=True))
        if not spares.keeper_running(root):
            spares.spawn_keeper(spares.keeper_request(cfg, launcher, root), root)   # detached: outlives us
    while (stats := spares.statistics(root)) is None or stats["ready"] < stats["count"]:
        if time.monotonic() > deadline:
            print(describe(key, stats) + f" (not full after {wait:.0f} s)")
            return 1
        time.sleep(POLL_S)
    print(describe(key, stats))
    return 0
