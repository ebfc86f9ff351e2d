"""Raw block devices (rund/runtime/block_devices.py): which devices a spec asks for, read-only from its device rules,
and the pod's disk slots shared by its containers. Pure: the plug and unplug are recorded, not done."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import rund.runtime.block_devices as bd
from rund.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from rund.runtime.block_devices import ANNOTATION, BlockRequest, PodDisks, block_requests


def spec(devices, rules=None, annotations=None) -> dict:
    linux = {"devices": devices}
    if rules is not None:
        linux["resources"] = {"devices": rules}
    doc = {"process": {"args": ["sh"]}, "linux": linux}
    if annotations is not None:
        doc["annotations"] = annotations
    return doc


DENY_ALL = {"allow": False, "access": "rwm"}


def test_block_devices_are_requested_and_annotated_with_their_serials():
    s = spec([{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 3}, {"path": "/dev/null", "type": "c",
                                                                          "major": 1, "minor": 3}],
             annotations={"other": "kept"})
    assert block_requests(s) == (BlockRequest(7, 3, False, "/dev/xvda"),)
    assert json.loads(s["annotations"][ANNOTATION]) == {"7:3": "rund-7-3"} and s["annotations"]["other"] == "kept"


def test_a_spec_without_block_devices_is_left_alone():
    s = spec([{"path": "/dev/null", "type": "c", "major": 1, "minor": 3}])
    assert block_requests(s) == () and "annotations" not in s


@pytest.mark.parametrize("rules, readonly", [
    (None, False),                                                                   # no policy: writable
    ([DENY_ALL, {"allow": True, "type": "b", "major": 7, "minor": 3, "access": "rwm"}], False),    # CRI's rwm
    ([DENY_ALL, {"allow": True, "type": "b", "major": 7, "minor": 3, "access": "r"}], True),       # CRI's r
    ([DENY_ALL, {"allow": True, "type": "b", "major": 7, "minor": 4, "access": "rw"}], True),      # another one
    ([DENY_ALL, {"allow": True, "type": "a", "access": "rwm"}], False),                            # privileged
])
def test_read_only_unless_the_rules_grant_write(rules, readonly):
    s = spec([{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 3}], rules)
    assert block_requests(s)[0].readonly is readonly


def test_a_block_device_without_numbers_is_invalid_argument():
    with pytest.raises(InvalidArgument, match=r"linux.devices\[0\]"):
        block_requests(spec([{"path": "/dev/xvda", "type": "b"}]))


@pytest.fixture
def host_devices(monkeypatch):
    monkeypatch.setattr(bd, "host_device", lambda major, minor: Path(f"/dev/fake{major}-{minor}"))


def test_a_device_shared_by_two_containers_is_plugged_once_and_unplugged_after_the_last(host_devices):
    disks, plugged, unplugged = PodDisks(2, "q35"), [], []

    async def plug(index, path, serial, readonly):
        plugged.append((index, str(path), serial, readonly))

    async def unplug(index):
        unplugged.append(index)

    a, b = BlockRequest(7, 3, False, "/dev/a"), BlockRequest(7, 4, True, "/dev/b")

    async def scenario():
        await disks.attach("c1", [a], plug)
        await disks.attach("c2", [a, b], plug)
        await disks.detach("c1", unplug)
        assert unplugged == []
        await disks.detach("c2", unplug)
    asyncio.run(scenario())
    assert plugged == [(0, "/dev/fake7-3", "rund-7-3", False), (1, "/dev/fake7-4", "rund-7-4", True)]
    assert sorted(unplugged) == [0, 1]


def test_no_slots_is_a_clear_failure(host_devices):
    async def plug(*_):
        raise AssertionError("nothing to plug into")
    with pytest.raises(FailedPrecondition, match="microvm machine cannot add disks"):
        asyncio.run(PodDisks(0, "microvm").attach("c", [BlockRequest(7, 3, False, "/dev/a")], plug))
    disks = PodDisks(1, "q35")

    async def ok(*_):
        pass
    with pytest.raises(ResourceExhausted, match="all 1 disk slots"):
        asyncio.run(disks.attach("c", [BlockRequest(7, 3, False, "/a"), BlockRequest(7, 4, False, "/b")], ok))


def test_host_device_reads_the_node_name_from_sysfs():
    for entry in sorted(Path("/sys/dev/block").iterdir()):         # the host's own disks: vda here
        major, minor = map(int, entry.name.split(":"))
        node = bd.host_device(major, minor)
        assert node.parent == Path("/dev") and (not node.exists() or node.is_block_device())
    with pytest.raises(InvalidArgument, match="no host block device 4095:4095"):
        bd.host_device(4095, 4095)
