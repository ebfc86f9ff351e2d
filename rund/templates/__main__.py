"""`python -m rund.templates '<request json>'`: the detached template builder a launcher starts (builder.py)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from rund.templates.builder import shape_from_json
from rund.templates.ensure import ensure_template
from rund.templates.key import TemplateKey
from rund.templates.store import TemplateStore

log = logging.getLogger("rund.templates")


async def _main(request: dict) -> str:
    shape = shape_from_json(request["shape"])
    store = TemplateStore(Path(request["store"]))
    key = TemplateKey(request["key"], request["inputs"])
    outcome, _ = await ensure_template(shape, store, key, Path(request["placeholder"]), warm=request["warm"],
                                       wait=False)
    return outcome


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s builder[{os.getpid()}] %(levelname)s %(message)s")
    logging.getLogger("qemu.qmp").setLevel(logging.WARNING)   # its INFO lines are per-connection noise
    request = json.loads(argv[0])
    outcome = asyncio.run(_main(request))
    log.info("template %s: %s", request["key"], outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
