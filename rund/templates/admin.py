"""`rund templates list|build|verify|remove`: look after the template store by hand."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from rund.config import Config
from rund.errors import FailedPrecondition
from rund.templates.errors import TemplateCorrupt, TemplateError
from rund.templates.launch import Launcher
from rund.templates.shape import shape_from_config
from rund.templates.store import TemplateStore


def _store(cfg: Config) -> TemplateStore:
    return TemplateStore(Path(cfg.templates.dir))


def launcher_for(cfg: Config) -> Launcher:
    """The launcher of the config's runtime class, as its shims make it; FailedPrecondition with templates off."""
    if not cfg.templates.enabled:
        raise FailedPrecondition("templates are disabled in the config ([templates] enabled = false)")
    return Launcher(shape_from_config(cfg), work_dir=Path(cfg.state_dir), templates_dir=Path(cfg.templates.dir))


def run(cfg: Config, action: str, key: str | None) -> int:
    if action == "build":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        launcher = launcher_for(cfg)
        outcome, template = asyncio.run(launcher.ensure_template(wait=True))
        print(f"{outcome} {template.key if template else launcher.template_key().key}")
        return 0
    store = _store(cfg)
    if action == "list":
        current = launcher_for(cfg).template_key().key if cfg.templates.enabled else None
        for k in store.keys():
            try:
                t = store.load(k)
                age = time.time() - t.manifest.created_unix
                note = f"built {age:.0f} s ago, state {t.manifest.state.size} B, build {json.dumps(t.manifest.build)}"
            except TemplateError as e:
                note = f"unusable: {e}"
            print(f"{k} {'current' if k == current else 'stale  '} {note}")
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
