"""The free-slot map: a hint that finds a free slot without listing the registry, and never decides alone.

No root and no cgroups: the map and the registry are plain files.
"""

import logging
import os

import pytest

from rund.resources.cgroups import names
from rund.resources.cgroups.freemap import FreeMap
from rund.resources.cgroups.registry import Registry

OWNER = names.Owner(4242, 99)


@pytest.fixture
def registry(tmp_path):
    registry = Registry(str(tmp_path / "boot" / "v1-rund"))
    registry.prepare()
    return registry


def _free_slot(registry: Registry, slot: str) -> None:
    """What fill() does to the registry: record a new slot, then free it."""
    new = names.claimed(names.NEW, slot, OWNER)
    registry.create(new)
    assert registry.move(new, names.free(slot))


def _leased_slot(registry: Registry, slot: str) -> names.Entry:
    _free_slot(registry, slot)
    held = names.lease(slot, OWNER, f"sandbox-{slot}")
    assert registry.move(names.free(slot), held)
    return held


def _claim(registry: Registry) -> str | None:
    """What acquire does: the first candidate whose record it can rename."""
    for slot in registry.free_slots():
        if registry.move(names.free(slot), names.lease(slot, OWNER, "claimer")):
            return slot
    return None


def _no_listing(monkeypatch, registry: Registry) -> None:
    def listed():
        raise AssertionError("the registry was listed")
        yield  # pragma: no cover

    monkeypatch.setattr(registry, "_listed_free_slots", listed)


def test_the_one_free_slot_among_hundreds_leased_is_found_without_listing_the_registry(registry, monkeypatch):
    for i in range(300):
        _leased_slot(registry, f"{i:012x}")
    _free_slot(registry, "f00000000001")
    _no_listing(monkeypatch, registry)
    assert list(registry.free_map.candidates()) == ["f00000000001"]
    assert _claim(registry) == "f00000000001"


def test_a_claimed_slot_leaves_the_map_and_a_released_one_comes_back(registry):
    _free_slot(registry, "a00000000001")
    _free_slot(registry, "a00000000002")
    held = names.lease("a00000000001", OWNER, "sandbox-1")
    assert registry.move(names.free("a00000000001"), held)
    assert list(registry.free_map.candidates()) == ["a00000000002"]
    assert registry.move(held, names.free("a00000000001"))
    assert sorted(registry.free_map.candidates()) == ["a00000000001", "a00000000002"]


def test_a_slot_the_map_wrongly_calls_free_costs_a_failed_rename_and_nothing_more(registry):
    _leased_slot(registry, "b00000000001")
    _free_slot(registry, "b00000000002")
    registry.free_map.free("b00000000001")  # stale: e.g. a claimer died between its rename and the map store
    assert "b00000000001" in list(registry.free_map.candidates())
    assert _claim(registry) == "b00000000002"
    assert _claim(registry) is None  # the leased one is never handed out


def test_a_free_slot_the_map_misses_is_found_by_listing_the_registry(registry):
    _free_slot(registry, "c00000000001")
    registry.free_map.forget("c00000000001")
    assert list(registry.free_map.candidates()) == []
    assert _claim(registry) == "c00000000001"


def test_removing_a_slot_clears_its_entry_for_reuse(registry):
    held = _leased_slot(registry, "d00000000001")
    registry.remove(held)
    _free_slot(registry, "d00000000002")
    assert list(registry.free_map.candidates()) == ["d00000000002"]
    with open(registry.free_map.path, "rb") as f:
        data = f.read()
    assert data.count(bytes.fromhex("d00000000002")) == 1 and bytes.fromhex("d00000000001") not in data


def test_reconcile_rebuilds_a_stale_map_from_the_records(registry):
    _free_slot(registry, "e00000000001")
    _leased_slot(registry, "e00000000002")
    registry.free_map.forget("e00000000001")  # a free slot the map lost
    registry.free_map.free("e00000000002")  # a leased slot it calls free
    registry.free_map.free("e00000000003")  # a slot with no record at all
    registry.refresh_free_map()
    assert list(registry.free_map.candidates()) == ["e00000000001"]


def test_a_rebuild_racing_with_acquires_neither_undoes_a_claim_nor_drops_a_new_slot(registry):
    _free_slot(registry, "e10000000001")
    listed_free = [e.slot for e in registry.entries() if e.state == names.FREE]  # the rebuild's listing...
    assert registry.move(names.free("e10000000001"), names.lease("e10000000001", OWNER, "sandbox-1"))
    _free_slot(registry, "e10000000002")  # ...then a claim and a new slot, before it writes
    registry.free_map.rebuild(listed_free, registry._state_now)
    assert list(registry.free_map.candidates()) == ["e10000000002"]


def test_a_damaged_map_file_is_replaced_by_a_new_one(registry):
    _free_slot(registry, "0a0000000001")
    with open(registry.free_map.path, "wb") as f:
        f.write(b"not a map")
    fresh = Registry(registry.path)  # another process opening the pool
    assert list(fresh.free_map.candidates()) == []
    fresh.refresh_free_map()
    assert list(fresh.free_map.candidates()) == ["0a0000000001"]


def test_without_a_map_the_pool_still_finds_free_slots(tmp_path, caplog):
    registry = Registry(str(tmp_path / "boot" / "v1-rund"))
    registry.prepare()
    os.mkdir(registry.free_map.path)  # the map cannot be made (as on a full disk)
    caplog.set_level(logging.WARNING)
    _free_slot(registry, "0b0000000001")
    assert _claim(registry) == "0b0000000001"
    assert any("no free-slot map" in r.message for r in caplog.records)


def test_a_full_map_leaves_the_rest_to_the_listing(tmp_path):
    registry = Registry(str(tmp_path / "boot" / "v1-rund"))
    registry.prepare()
    registry.free_map = FreeMap(registry.free_map.path, registry.path, capacity=2)
    for i in range(3):
        _free_slot(registry, f"0c000000000{i}")
    assert len(list(registry.free_map.candidates())) == 2
    assert sorted(_claim(registry) for _ in range(3)) == [f"0c000000000{i}" for i in range(3)]


def test_processes_adding_slots_at_once_never_share_an_entry(registry):
    children = []
    for p in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                mine = FreeMap(registry.free_map.path, registry.path)  # each process maps the file itself
                for i in range(50):
                    mine.free(f"{p:02x}{i:010x}")
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    for pid in children:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    found = list(registry.free_map.candidates())
    assert sorted(found) == sorted(f"{p:02x}{i:010x}" for p in range(4) for i in range(50))
