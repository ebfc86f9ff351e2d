"""The layering of DESIGN.md, checked on every import of the non-test code (module and function level, relative).

- Imports point down: shim -> runtime -> {templates, resources} -> {hypervisor, agent client} -> proto. Layers may
  be skipped downwards; modules of one layer (hypervisor and agent client; templates and resources) never import
  each other. rund's shared modules (errors, ids, config, ...) sit below them all.
- agent/ never imports rund/; proto/ imports neither.
- Protobuf (proto.gen..., google.protobuf) only at the edges: the shim's translation, the agent client, the agent's
  ttrpc server, proto/ itself. (proto.ttrpc, the transport, is not protobuf.)
"""
from __future__ import annotations

from pathlib import Path

import pytest

from rund.tests.import_graph import imports_of, source_modules, within

REPO = Path(__file__).resolve().parents[2]

# Longest prefix wins. An import is allowed from a lower rank, or inside its own group.
RANKS = {
    "rund.cli": 6,                                  # the admin CLI reports on everything below
    "rund.ops": 5,                                  # ps, metrics, check (kubernetes): read records and /proc
    "rund.shim": 5,
    "rund.runtime": 4, "rund.hostcheck": 4,         # hostcheck: what this host offers, for the CLI
    "rund.templates": 3, "rund.resources": 3,
    "rund.hypervisor": 2, "rund.agent": 2,
    "proto": 1,
    "rund (shared)": 0,
}
# One group of rank 0; "rund" is the package's own __init__ (its __version__).
SHARED = ("rund", "rund.errors", "rund.ids", "rund.config", "rund.atomicfile", "rund.procfs", "rund.peercred")

PROTOBUF = ("proto.gen", "google.protobuf")
PROTOBUF_EDGES = {
    "rund.shim.task_service", "rund.shim.events", "rund.shim.delete",      # containerd's Task API and events
    "rund.shim.metrics",                                                   # the Task API's Stats payload
    "rund.agent.client", "rund.agent.convert", "rund.agent.errors",        # the agent client
    "agent.service", "agent.api_convert",                                  # the agent's ttrpc server
}
# Found in the tree as it is; each entry says why it may stay. A stale entry fails test_allowlist_is_current.
PROTOBUF_ALLOWED = {
    ("rund.shim.timestamps", "google.protobuf"):
        "protobuf Timestamps for task_service and events only: the shim's edge, in a file of its own",
    ("rund.shim.peer", "proto.gen"):
        "sends Shutdown (Task API) to an earlier shim on the same socket: a wire edge, like delete",
}


def group_of(module: str) -> str | None:
    """The RANKS key `module` falls under (the longest prefix)."""
    if module in SHARED:
        return "rund (shared)"
    return max((k for k in RANKS if within(module, k)), key=len, default=None)


def resolve(name: str, modules: dict[str, Path]) -> str:
    """The module an imported name lives in (`rund.hypervisor.QemuVM` -> `rund.hypervisor`); itself if unknown."""
    module = name
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module or name


def broken_rule(importer: str, imported: str) -> str | None:
    """Why `importer` may not import the module `imported`, or None."""
    if any(within(imported, p) for p in PROTOBUF):
        edge = importer in PROTOBUF_EDGES or within(importer, "proto")
        return None if edge else "protobuf outside the edge modules"
    if within(importer, "agent"):
        return "agent/ imports rund/" if within(imported, "rund") else None
    if within(importer, "proto"):
        return "proto/ imports rund/ or agent/" if within(imported, "rund") or within(imported, "agent") else None
    if within(imported, "agent"):
        return "rund/ imports the guest's agent/"
    if not (within(imported, "rund") or within(imported, "proto")):
        return None   # stdlib and third party
    mine, theirs = group_of(importer), group_of(imported)
    if mine is None or theirs is None:
        return f"no layer for {importer if mine is None else imported}: add it to RANKS"
    if mine == theirs or RANKS[theirs] < RANKS[mine]:
        return None
    return f"{mine} (rank {RANKS[mine]}) may not import {theirs} (rank {RANKS[theirs]})"


def violations(root: Path) -> list[str]:
    modules = source_modules(root)
    found = []
    for module, path in modules.items():
        for line, name in imports_of(path, module):
            why = broken_rule(module, resolve(name, modules))
            if why and not any(module == m and within(name, p) for m, p in PROTOBUF_ALLOWED):
                found.append(f"{path.relative_to(root)}:{line}: {module} imports {name}: {why}")
    return found


def test_the_tree_keeps_its_layers():
    assert violations(REPO) == []


def test_every_rund_module_has_a_layer():
    unplaced = [m for m in source_modules(REPO, ("rund",)) if group_of(m) is None]
    assert unplaced == []


def test_allowlist_is_current():
    """An entry whose import is gone must go too."""
    modules = source_modules(REPO)
    for module, prefix in PROTOBUF_ALLOWED:
        if module not in modules:
            pytest.fail(f"allowlisted {module} no longer exists")
        assert any(within(name, prefix) for _, name in imports_of(modules[module], module)), (module, prefix)


BAD_TREE = {
    # function-level import: the hypervisor reaching for the agent client
    "rund/hypervisor/bad.py": "def f():\n    from rund.agent import client\n    return client\n",
    # relative import upwards: templates -> shim
    "rund/templates/up.py": "from ..shim import serve\n",
    # the agent client importing the hypervisor (peers)
    "rund/agent/peer.py": "import rund.hypervisor.qemu\n",
    # the guest agent importing the host
    "agent/host.py": "from rund import errors\n",
    # protobuf inside the runtime
    "rund/runtime/pb.py": "from google.protobuf import timestamp_pb2\nfrom proto.gen.rund.agent.v1 import agent_pb2\n",
    # a module nobody placed
    "rund/network.py": "",
    # fine: down the layers, shared modules, the transport, stdlib
    "rund/shim/ok.py": "import os\nfrom rund.runtime import x\nfrom rund.hypervisor import y\nfrom proto import ttrpc\n"
                       "from rund import errors\n",
    "rund/shim/task_service.py": "from proto.gen.containerd.task.v2 import shim_pb2\n",
    "agent/service.py": "from proto.gen.rund.agent.v1 import agent_pb2\nfrom . import errors\n",
    # protobuf inside the agent, off its edge
    "agent/reaper.py": "import proto.gen.rund.agent.v1.agent_pb2\n",
}


def test_a_tree_that_breaks_each_rule_is_caught(tmp_path):
    for rel, text in BAD_TREE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    found = violations(tmp_path)
    expected = [
        ("agent/host.py", "agent/ imports rund/"),
        ("agent/reaper.py", "protobuf outside the edge modules"),
        ("rund/agent/peer.py", "rund.agent (rank 2) may not import rund.hypervisor (rank 2)"),
        ("rund/hypervisor/bad.py:2", "rund.hypervisor (rank 2) may not import rund.agent (rank 2)"),
        ("rund/runtime/pb.py:1", "protobuf outside the edge modules"),
        ("rund/runtime/pb.py:2", "protobuf outside the edge modules"),
        ("rund/templates/up.py", "rund.templates (rank 3) may not import rund.shim (rank 5)"),
    ]
    for where, why in expected:
        assert any(v.startswith(where) and v.endswith(why) for v in found), (where, why, found)
    assert len(found) == len(expected), found
    assert group_of("rund.network") is None
