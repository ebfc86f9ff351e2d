"""`rund templates list|build|verify|remove|prune`: look after the template store by hand."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from rund.config import Config
from rund.errors import FailedPrecondition, RundError
from rund.templates.errors import TemplateCorrupt, TemplateError
from rund.templates.launch import Launcher
from rund.templates.shape import shape_from_config
from rund.templates.store import TemplateStore, dir_bytes, mapped_templates


def _store(cfg: Config) -> TemplateStore:
    return TemplateStore(Path(cfg.templates.dir))


def launcher_for(cfg: Config) -> Launcher:
    """The launcher of the config's runtime class, as its shims make it; FailedPrecondition with templates off."""
    if not cfg.templates.enabled:
        raise FailedPrecondition("templates are disabled in the config ([templates] enabled = false)")
    return Launcher(shape_from_config(cfg), work_dir=Path(cfg.state_dir), templates_dir=Path(cfg.templates.dir))


def _current_key(cfg: Config) -> str | None:
    """The key this config's runtime class clones, or None (templates off, or no guest image to compute it from)."""
    if not cfg.templates.enabled:
        return None
    try:
        return launcher_for(cfg).template_key().key
    except RundError as e:
        print(f"rund: this class's template unknown: {e}", file=sys.stderr)
        return None


def run(cfg: Config, action: str, key: str | None, unused_for_h: float = 24.0) -> int:
    if action == "build":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        launcher = launcher_for(cfg)
        outcome, template = asyncio.run(launcher.ensure_template(wait=True))
        print(f"{outcome} {template.key if template else launcher.template_key().key}")
        return 0
    store = _store(cfg)
    current = _current_key(cfg) if action in ("list", "prune") else None
    if action == "list":
        # "other": another runtime class's shape, or built from other inputs (an older guest image, QEMU or rund)
        mapped = mapped_templates(store.root)
        for k in store.keys():
            try:
                t = store.load(k)
                now = time.time()
                note = (f"built {now - t.manifest.created_unix:.0f} s ago, last cloned {now - store.last_used(k):.0f} s "
                        f"ago, {'mapped' if k in mapped else 'not mapped'}, {dir_bytes(t.dir) >> 20} MiB, "
                        f"build {json.dumps(t.manifest.build)}")
            except (TemplateError, FileNotFoundError) as e:
                note = f"unusable: {e}"
            print(f"{k} {'current' if k == current else 'other  '} {note}")
        return 0
    if action == "prune":
        if key:
            raise FailedPrecondition("prune takes no key: it removes every template unused for --unused-for hours")
        removed = store.prune_unused(unused_for_h * 3600, keep={current} if current else set())
        for k, size in removed:
            print(f"removed {k} ({size >> 20} MiB)")
        print(f"{len(removed)} template(s) unused for {unused_for_h:g} h removed, "
              f"{sum(size for _, size in removed) >> 20} MiB of tmpfs freed; {len(store.keys())} left")
        return 0
    keys = [key] if key else store.keys()
    if action == "verify":
        bad = 0
        for k in keys:
            try:
                store.get(k, samples=None)
                print(f"ok  {k}")
            except TemplateCorrupt as e:
                bad += 1
                print(f"BAD {k}: {e}")
        return 1 if bad else 0
    if action == "remove":
        for k in keys:
            with store.lock(k):
                print(f"{'removed' if store.remove(k, reason='rund templates remove') else 'absent '} {k}")
        return 0
    return 2
