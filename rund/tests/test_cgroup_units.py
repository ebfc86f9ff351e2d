"""Pure parts of the cgroup pool: record names, limits, mount table parsing. No root needed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rund.resources.cgroups import CgroupLimits, InvalidLimits, InvalidSandboxId, limits_from_oci
from rund.resources.cgroups import names
from rund.resources.cgroups.limits import shares_to_weight
from rund.resources.cgroups.mounts import parse_mountinfo

sandbox_ids = st.from_regex(r"[A-Za-z0-9]{1,20}([._-][A-Za-z0-9]{1,20}){0,4}", fullmatch=True)
owners = st.builds(names.Owner, st.integers(1, 2**22), st.integers(0, 2**40))
slots = st.from_regex(r"[0-9a-f]{12}", fullmatch=True)


@given(slots, owners, sandbox_ids)
def test_lease_names_round_trip(slot, owner, sandbox_id):
    entry = names.lease(slot, owner, sandbox_id)
    assert names.parse(entry.name) == entry


@given(slots, owners, st.sampled_from([names.NEW, names.GONE]))
def test_claim_names_round_trip(slot, owner, state):
    entry = names.claimed(state, slot, owner)
    assert names.parse(entry.name) == entry


def test_free_name_round_trips_and_new_slots_are_distinct():
    slot = names.new_slot()
    assert names.parse(names.free(slot).name) == names.free(slot)
    assert len({names.new_slot() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "name",
    ["cgroup.procs", "free-xyz", "free-", "lease-0123456789ab-12-sb", "lease-0123456789ab-x.1-sb",
     "new-0123456789ab", "slot-0123456789ab", "lease-0123456789ab-1.2-bad/id"],
)
def test_foreign_names_are_not_records(name):
    assert names.parse(name) is None


@pytest.mark.parametrize("bad", ["", "a/b", "..", "-lead", "trail-", "x" * 161, "sp ace"])
def test_sandbox_ids_that_cannot_name_a_cgroup_are_refused(bad):
    with pytest.raises(InvalidSandboxId):
        names.check_sandbox_id(bad)


def test_limits_from_oci_maps_fields_and_treats_zero_and_minus_one_as_unset():
    resources = {
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 268435456, "swap": 0},
        "pids": {"limit": 64},
    }
    assert limits_from_oci(resources) == CgroupLimits(50000, 100000, 512, "0-1", "0", 268435456, 64)
    unset = {"cpu": {"shares": 0, "quota": -1, "period": 0, "cpus": ""}, "memory": {"limit": -1}, "pids": {"limit": 0}}
    assert limits_from_oci(unset) == CgroupLimits()  # every field None: nothing to write
    assert limits_from_oci(None) == CgroupLimits()


@pytest.mark.parametrize(
    "kwargs",
    [{"cpu_quota_us": 999}, {"cpu_period_us": 1_000_001}, {"cpu_shares": 1}, {"cpu_shares": 262_145},
     {"cpuset_cpus": "0-"}, {"cpuset_mems": "a"}, {"memory_limit_bytes": 0}, {"pids_limit": -5}],
)
def test_limits_outside_kernel_bounds_are_refused(kwargs):
    with pytest.raises(InvalidLimits):
        CgroupLimits(**kwargs)


def test_oci_values_of_the_wrong_type_are_refused():
    with pytest.raises(InvalidLimits):
        limits_from_oci({"memory": {"limit": "1G"}})


def test_shares_to_weight_matches_runc_endpoints():
    assert shares_to_weight(2) == 1
    assert shares_to_weight(262144) == 10000
    assert shares_to_weight(1024) == 39


HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

COMOUNTED = """\
26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
27 25 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
28 25 0:24 / /mnt/memory\\040copy rw,nosuid - cgroup cgroup rw,memory
"""

UNIFIED = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_mountinfo_hybrid_lists_v1_controllers_and_the_unified_mount():
    mounts = parse_mountinfo(HYBRID)
    assert [(m.path, m.version, set(m.controllers)) for m in mounts] == [
        ("/sys/fs/cgroup/cpu", 1, {"cpu"}),
        ("/sys/fs/cgroup/cpuacct", 1, {"cpuacct"}),
        ("/sys/fs/cgroup/memory", 1, {"memory"}),
        ("/sys/fs/cgroup/unified", 2, set()),
    ]


def test_mountinfo_comounted_and_bind_mounted_hierarchies_appear_once():
    mounts = parse_mountinfo(COMOUNTED)
    assert [(m.path, set(m.controllers)) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", {"cpu", "cpuacct"}),
        ("/sys/fs/cgroup/memory", {"memory"}),
    ]


def test_mountinfo_pure_v2():
    assert [(m.path, m.version) for m in parse_mountinfo(UNIFIED)] == [("/sys/fs/cgroup", 2)]


def _v1_tree(tmp_path, root_balance: str):
    """A v1 layout (cpu and cpuset hierarchies) as plain files, the way cgroupfs shows it."""
    from rund.resources.cgroups.mounts import CgroupMount
    from rund.resources.cgroups.v1 import V1Driver

    mounts = []
    for controller in ("cpu", "cpuset"):
        root = tmp_path / controller
        (root / "rund").mkdir(parents=True)
        mounts.append(CgroupMount(str(root), 1, frozenset({controller})))
    cpuset = tmp_path / "cpuset"
    for level, cpus in ((cpuset, "0-3"), (cpuset / "rund", "")):
        (level / "cpuset.cpus").write_text(cpus)
        (level / "cpuset.mems").write_text("0" if cpus else "")
        (level / "cgroup.clone_children").write_text("0")
    (cpuset / "cpuset.sched_load_balance").write_text(root_balance)
    mounts.append(CgroupMount(str(tmp_path / "memory"), 1, frozenset({"memory"})))
    (tmp_path / "memory").mkdir()
    driver = V1Driver(tuple(mounts), "rund")
    driver.prepare()
    slot = tmp_path / "cpuset" / "rund" / "slot-x"
    slot.mkdir()
    (slot / "cpuset.sched_load_balance").write_text("1")  # a new v1 cpuset balances
    paths = tuple(str(tmp_path / c / "rund" / "slot-x") for c in ("cpu", "cpuset", "memory"))
    return driver, paths, slot


@pytest.mark.parametrize("root_balance, slot_balance", [("1", "0"), ("0", "1")])
def test_v1_slots_drop_load_balancing_only_when_the_root_cpuset_balances_every_cpu(tmp_path, root_balance, slot_balance):
    driver, paths, slot = _v1_tree(tmp_path, root_balance)
    assert (tmp_path / "cpuset" / "rund" / "cpuset.cpus").read_text() == "0-3"  # the parent inherits the root's
    driver.init_cgroup(paths)
    assert (slot / "cpuset.sched_load_balance").read_text() == slot_balance
