"""A pod's namespaces inside its VM, from the host paths CRI writes into each container's spec.

Under runc a pod's containers join the pause container's namespaces by host path (`/proc/<pause pid>/ns/ipc`, the
CNI netns for the network). In a VM those paths mean nothing, so each is translated:
- network: the VM's own network namespace is the pod's (the NIC and loopback live there), so a container whose spec
  names a network namespace by path joins the guest's root one: the entry is dropped. An entry without a path (a
  plain `ctr run`) still gets a new, empty namespace.
- ipc, uts, pid: the pod's sandbox container owns them (its spec asks for new ones); every other container of the
  pod joins the sandbox container's by its guest path `/proc/<sandbox init's guest pid>/ns/<type>`. A pid entry
  with a path appears only when the pod shares one PID namespace (`namespace_options.pid = POD`).
- anything else named by path (mount, cgroup): a new one, as before.
"""
from __future__ import annotations

from dataclasses import dataclass

from rund.errors import InvalidArgument

JOINED = ("ipc", "uts", "pid")


@dataclass(frozen=True)
class PodNamespaces:
    sandbox_pid: int = 0        # the guest pid of the pod's sandbox container's init; 0: this is the sandbox


def translate(namespaces: list, pod: PodNamespaces) -> list:
    out = []
    for ns in namespaces:
        if not isinstance(ns, dict) or not ns.get("path"):
            out.append(ns)
            continue
        kind = ns.get("type")
        if kind == "network":
            continue
        if kind in JOINED and pod.sandbox_pid:
            out.append({**ns, "path": f"/proc/{pod.sandbox_pid}/ns/{kind}"})
        else:
            out.append({k: v for k, v in ns.items() if k != "path"})
    return out


def has_private_uts(spec: dict) -> bool:
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return any(isinstance(ns, dict) and ns.get("type") == "uts" and not ns.get("path")
               for ns in namespaces or [])


def check_hostname(spec: dict) -> None:
    """runc's rule: a spec that sets a hostname must have a UTS namespace of its own."""
    if spec.get("hostname") and not has_private_uts(spec):
        raise InvalidArgument("unable to set hostname without a private UTS namespace")
