"""Make sure the template for a key exists and is whole: at most one builder per key across processes."""
from __future__ import annotations

import logging
from pathlib import Path

from rund.templates.build import build_template
from rund.templates.errors import TemplateCorrupt, TemplateMissing
from rund.templates.key import TemplateKey
from rund.templates.shape import SandboxShape
from rund.templates.store import Template, TemplateStore

log = logging.getLogger("rund.templates")

LOCK_WAIT = 600.0   # a TCG build on a loaded host takes 15-60 s


async def ensure_template(shape: SandboxShape, store: TemplateStore, key: TemplateKey, placeholder: Path,
                          warm: bool = True, wait: bool = True,
                          lock_wait: float = LOCK_WAIT) -> tuple[str, Template | None]:
    """("present", t) if a fully verified template exists, ("built", t) after building it here, or ("busy", None)
    when wait=False and another process holds the build lock. A corrupt template is removed and rebuilt."""
    store.ensure_root()
    lock = store.lock(key.key)
    if wait:
        await lock.acquire(lock_wait)
    elif not lock.try_acquire():
        return "busy", None
    try:
        try:
            return "present", store.get(key.key, samples=None)
        except TemplateMissing:
            pass
        except TemplateCorrupt as e:
            store.remove(key.key, reason=str(e))
        return "built", await build_template(shape, store, key, placeholder, warm=warm)
    finally:
        lock.release()
