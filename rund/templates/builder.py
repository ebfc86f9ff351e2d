"""A template build in its own process (`python -m rund.templates '<request json>'`, see __main__.py).

A shim that finds no usable template boots its sandbox cold and starts this process, detached in its own session,
so the next sandbox can clone: the build (one more cold boot, ~1 s of saving and hashing) neither delays the current
request nor dies with a shim that serves a short-lived pod, and the shim keeps no task for it. The flock in
ensure_template makes concurrent shims build once; one that finds the lock taken exits at once.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rund.hypervisor import Accel, Machine
from rund.templates.key import TemplateKey
from rund.templates.shape import SandboxShape
from rund.templates.store import TemplateStore

_PATH_FIELDS = ("kernel", "initrd", "image")


def shape_to_json(shape: SandboxShape) -> dict:
    out = {}
    for name in SandboxShape.__dataclass_fields__:
        value = getattr(shape, name)
        if name in _PATH_FIELDS:
            value = str(value)
        elif name in ("machine", "accel"):
            value = value.value
        elif name == "key_extra":
            continue   # only feeds the key, which the parent computed
        out[name] = value
    return out


def shape_from_json(raw: dict) -> SandboxShape:
    fields = dict(raw)
    for name in _PATH_FIELDS:
        fields[name] = Path(fields[name])
    fields["machine"], fields["accel"] = Machine(fields["machine"]), Accel(fields["accel"])
    return SandboxShape(**fields)


def build_request(shape: SandboxShape, store_root: Path, key: TemplateKey, placeholder: Path, warm: bool) -> str:
    return json.dumps({"shape": shape_to_json(shape), "store": str(store_root), "key": key.key,
                       "inputs": key.inputs, "placeholder": str(placeholder), "warm": warm})


def spawn_builder(shape: SandboxShape, store: TemplateStore, key: TemplateKey, placeholder: Path,
                  warm: bool) -> subprocess.Popen:
    """Start a detached builder; its output goes to <store>/<key>.build.log. The caller reaps it (a process that
    lives on, like a shim, keeps it as a zombie otherwise: Launcher watches its pidfd)."""
    store.ensure_root()
    log_path = store.root / f"{key.key}.build.log"
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "rund.templates", build_request(shape, store.root, key, placeholder, warm)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True, cwd="/")
