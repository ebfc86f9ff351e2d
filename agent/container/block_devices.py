"""A container's raw block devices: the host hot-plugged each as a virtio-blk disk whose serial the spec's annotation
names by the host's major:minor (rund/runtime/block_devices.py); the container's device node and its cgroup rules
are pointed at the guest's numbers of that disk."""
import asyncio
import json
import os
import time

from ..errors import InvalidArgument, SetupFailed
from ..oci.spec import ContainerSpec

ANNOTATION = "io.rund.block-devices"
SYS_BLOCK = "/sys/block"
WAIT_TIMEOUT = 10.0          # a hotplugged disk shows up once the guest's PCIe hotplug probed it (~0.1-2 s, TCG)
POLL = 0.02


async def place(spec: ContainerSpec, spec_json: bytes) -> ContainerSpec:
    """The spec with its block devices' numbers the guest's; as is when the host plugged none."""
    table = _table(spec_json)
    if not table:
        return spec
    guest = {}
    for key, serial in table.items():
        guest[key] = await _find(serial)
    devices = tuple(d._replace(major=guest[k][0], minor=guest[k][1]) if d.type == "b" and (k := f"{d.major}:{d.minor}")
                    in guest else d for d in spec.devices)
    rules = tuple(r._replace(major=guest[k][0], minor=guest[k][1])
                  if r.type == "b" and (k := f"{r.major}:{r.minor}") in guest else r
                  for r in spec.resources.devices)
    return spec._replace(devices=devices, resources=spec.resources._replace(devices=rules))


def _table(spec_json: bytes) -> dict[str, str]:
    if ANNOTATION.encode() not in spec_json:
        return {}       # most specs: no second parse of the whole document (~10 ms in a TCG guest)
    try:
        raw = (json.loads(spec_json).get("annotations") or {}).get(ANNOTATION)
        table = json.loads(raw) if raw else {}
    except (ValueError, AttributeError):
        raise InvalidArgument(f"annotations.{ANNOTATION}", "is not a JSON object of major:minor to serial") from None
    if not isinstance(table, dict) or not all(isinstance(v, str) and isinstance(k, str) for k, v in table.items()):
        raise InvalidArgument(f"annotations.{ANNOTATION}", "is not a JSON object of major:minor to serial")
    return table


async def _find(serial: str, timeout: float = WAIT_TIMEOUT) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = _by_serial(serial)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise SetupFailed(f"block device {serial}", f"no disk with that serial appeared within {timeout} s")
        await asyncio.sleep(POLL)


def _by_serial(serial: str) -> tuple[int, int] | None:
    try:
        names = os.listdir(SYS_BLOCK)
    except FileNotFoundError:
        return None
    for name in names:
        try:
            with open(os.path.join(SYS_BLOCK, name, "serial")) as f:
                if f.read().strip() != serial:
                    continue
            with open(os.path.join(SYS_BLOCK, name, "dev")) as f:
                major, minor = f.read().strip().split(":")
            return int(major), int(minor)
        except (OSError, ValueError):
            continue
    return None
