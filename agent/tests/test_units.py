"""Pure pieces: cgroup v2 conversions and stats, module lists, rtnetlink encoding, secure_join, child status."""
import os
import socket
import struct

import pytest

from agent.cgroups import stats, v2_files
from agent.container import status
from agent.container.securejoin import secure_join
from agent.container.types import NO_LIMIT
from agent.errors import InvalidArgument, SetupFailed
from agent.init import modules
from agent.linux.entropy import rand_pool_info
from agent.linux.system import timespec_from_ns
from agent.network import rtnetlink as rt
from agent.network.types import Interface, IPAddress, NetworkConfig, Route, resolv_conf, validate
from agent.oci.resources import MAX, Resources
from agent.reaper import exit_status


def test_cgroup_v2_files_follow_runc_conversions():
    files = v2_files.files_for(Resources(
        memory_limit=1 << 30, memory_swap=(1 << 30) + (1 << 29), memory_reservation=MAX, cpu_shares=1024,
        cpu_quota=50_000, pids_limit=0, blkio_weight=10, hugepage_limits=(("2MB", 4 << 20),),
        unified=(("memory.high", "900M"),)))
    assert files == [("memory.low", "max"), ("memory.max", str(1 << 30)), ("memory.swap.max", str(1 << 29)),
                     ("cpu.weight", "39"), ("cpu.max", "50000 100000"), ("pids.max", "max"),
                     ("io.weight", "default 1"), ("hugetlb.2MB.max", str(4 << 20)), ("memory.high", "900M")]
    assert v2_files.cpu_weight_from_shares(2) == 1 and v2_files.cpu_weight_from_shares(262144) == 10000
    assert v2_files.files_for(Resources(cpu_period=200_000)) == [("cpu.max", "max 200000")]
    assert v2_files.files_for(Resources(memory_limit=MAX, memory_swap=MAX)) == [
        ("memory.max", "max"), ("memory.swap.max", "max")]
    assert v2_files.files_for(Resources()) == []


# memory.stat of a container group in the guest (Debian's 6.1 cloud kernel) while it holds 64 MiB of anonymous memory.
GUEST_MEMORY_STAT = """\
anon 67457024
file 204800
kernel 425984
kernel_stack 32768
pagetables 188416
sec_pagetables 0
percpu 0
sock 4096
vmalloc 0
shmem 8192
file_mapped 126976
file_dirty 12288
file_writeback 4096
swapcached 0
anon_thp 2097152
file_thp 0
shmem_thp 0
inactive_anon 67440640
active_anon 16384
inactive_file 131072
active_file 73728
unevictable 0
slab_reclaimable 61440
slab_unreclaimable 139264
slab 200704
workingset_refault_anon 1
workingset_refault_file 2
workingset_activate_anon 3
workingset_activate_file 4
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 5
pgscan 6
pgsteal 7
pgscan_kswapd 0
pgscan_direct 0
pgsteal_kswapd 0
pgsteal_direct 0
pgfault 17321
pgmajfault 2
pgrefill 8
pgactivate 9
pgdeactivate 10
pglazyfree 11
pglazyfreed 12
thp_fault_alloc 13
thp_collapse_alloc 14
"""


def test_cgroup_stats_parse():
    parsed = stats.parse({
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\nnr_throttled 3\n"
                    "throttled_usec 40\n",
        "memory.current": "68202496\n", "memory.peak": "68423680\n", "memory.max": "max\n",
        "memory.swap.current": "0\n", "memory.swap.max": "0\n",
        "memory.stat": GUEST_MEMORY_STAT, "memory.events": "low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\n",
        "pids.current": "3\n", "pids.max": "max\n"})
    c, m = parsed.cpu, parsed.memory
    assert (c.usage_total_ns, c.usage_user_ns, c.usage_kernel_ns) == (1_500_000, 1_000_000, 500_000)
    assert (c.periods, c.throttled_periods, c.throttled_time_ns) == (9, 3, 40_000)
    assert (m.usage_bytes, m.max_usage_bytes, m.limit_bytes) == (68202496, 68423680, NO_LIMIT)
    assert (m.swap_usage_bytes, m.swap_limit_bytes) == (0, 0)      # swap.max 0 is a limit, not "none"
    assert (m.rss_bytes, m.cache_bytes, m.rss_huge_bytes, m.shmem_bytes) == (67457024, 204800, 2097152, 8192)
    assert (m.inactive_file_bytes, m.active_file_bytes, m.inactive_anon_bytes, m.active_anon_bytes) == (
        131072, 73728, 67440640, 16384)
    assert (m.mapped_file_bytes, m.dirty_bytes, m.writeback_bytes, m.unevictable_bytes) == (126976, 12288, 4096, 0)
    assert (m.kernel_stack_bytes, m.slab_bytes, m.slab_reclaimable_bytes, m.slab_unreclaimable_bytes,
            m.sock_bytes) == (32768, 200704, 61440, 139264, 4096)
    assert (m.pgfault, m.pgmajfault) == (17321, 2)
    # since Linux 5.9 the workingset counters are split by LRU: their sum is the old figure
    assert (m.workingset_refault, m.workingset_activate, m.workingset_nodereclaim) == (3, 7, 5)
    assert (m.pgscan, m.pgsteal, m.pgrefill, m.pgactivate, m.pgdeactivate, m.pglazyfree, m.pglazyfreed,
            m.thp_fault_alloc, m.thp_collapse_alloc) == (6, 7, 8, 9, 10, 11, 12, 13, 14)
    assert (m.events_low, m.events_high, m.events_max, m.events_oom, m.oom_events) == (1, 2, 3, 4, 5)
    assert (parsed.pids.current, parsed.pids.limit) == (3, NO_LIMIT)


def test_cgroup_stats_of_a_group_without_controllers():
    """No memory or pids controller (the host's v2 hierarchy here): counters 0, limits none."""
    parsed = stats.parse({"cpu.stat": "usage_usec 7\nuser_usec 4\nsystem_usec 3\n"})
    assert parsed.cpu.usage_total_ns == 7000
    assert (parsed.memory.usage_bytes, parsed.memory.rss_bytes, parsed.memory.pgfault) == (0, 0, 0)
    assert (parsed.memory.limit_bytes, parsed.memory.swap_limit_bytes, parsed.pids.limit) == (NO_LIMIT,) * 3
    assert stats.parse({"memory.stat": "workingset_refault 9\n"}).memory.workingset_refault == 9   # before 5.9


def test_module_names_lists_and_deps():
    assert modules.module_name("kernel/fs/overlayfs/overlay.ko") == "overlay"
    assert modules.module_name("kernel/drivers/virtio/virtio-mmio.ko.xz") == "virtio_mmio"
    assert modules.parse_list("# comment\nkernel/a.ko\n\n  kernel/b.ko  \n") == ["kernel/a.ko", "kernel/b.ko"]
    assert modules.parse_proc_modules("overlay 151552 0 - Live 0x0\nerofs 1 0 - Live 0x0\n") == {"overlay", "erofs"}
    table = modules.parse_modules_dep("kernel/c.ko: kernel/b.ko kernel/a.ko\nkernel/a.ko:\n")
    assert table["c"] == ["kernel/a.ko", "kernel/b.ko", "kernel/c.ko"] and table["a"] == ["kernel/a.ko"]


def test_rtnetlink_messages_encode_and_split():
    packed = socket.inet_aton("10.0.0.5")
    msg = rt.address(7, True, 3, socket.AF_INET, 24, packed)
    [(kind, flags, seq, payload)] = rt.split(msg)
    assert (kind, seq) == (rt.RTM_NEWADDR, 7)
    assert flags & rt.NLM_F_CREATE and flags & rt.NLM_F_ACK
    assert rt.parse_address(payload) == (socket.AF_INET, 24, 0, 3, packed)
    route = rt.route(8, socket.AF_INET, b"", 0, socket.inet_aton("10.0.0.1"), 3)
    [(kind, _, _, payload)] = rt.split(route + rt.set_link(9, 3, up=True))[:1]
    attrs = rt.attributes(payload, rt.RTMSG.size)
    assert attrs[rt.RTA_GATEWAY] == socket.inet_aton("10.0.0.1") and struct.unpack("=i", attrs[rt.RTA_OIF]) == (3,)
    ack = rt.message(rt.NLMSG_ERROR, 0, 8, struct.pack("=i", -17) + route[:16])
    assert rt.error_code(rt.split(ack)[0][3]) == 17
    assert len(rt.split(route + rt.set_link(9, 3, up=True))) == 2


@pytest.mark.parametrize("config, field", [
    (NetworkConfig(interfaces=(Interface("eth0", mac="02:00:00:00:00"),)), "network.interfaces[0].mac"),
    (NetworkConfig(interfaces=(Interface("eth0", mtu=10),)), "network.interfaces[0].mtu"),
    (NetworkConfig(interfaces=(Interface("eth0", addresses=(IPAddress("10.0.0.300", 8),)),)),
     "network.interfaces[0].addresses[0].address"),
    (NetworkConfig(interfaces=(Interface("eth0", addresses=(IPAddress("10.0.0.3", 33),)),)),
     "network.interfaces[0].addresses[0].prefix_length"),
    (NetworkConfig(routes=(Route("10.0.0.0", "10.0.0.1"),)), "network.routes[0].destination"),
    (NetworkConfig(routes=(Route("default"),)), "network.routes[0]"),
    (NetworkConfig(dns_servers=("dns.example",)), "network.dns_servers[0]"),
])
def test_network_validation_names_the_field(config, field):
    with pytest.raises(InvalidArgument) as info:
        validate(config)
    assert info.value.field == field


def test_resolv_conf():
    config = NetworkConfig(dns_servers=("10.0.0.2", "fd00::2"), dns_searches=("svc.local", "local"))
    assert resolv_conf(validate(config)) == "nameserver 10.0.0.2\nnameserver fd00::2\nsearch svc.local local\n"


def test_secure_join_keeps_symlinks_inside_the_root(tmp_path):
    root = str(tmp_path)
    os.makedirs(tmp_path / "etc")
    os.symlink("/etc", tmp_path / "abs")
    os.symlink("../../../../etc", tmp_path / "up")
    os.symlink("loop", tmp_path / "loop")
    assert secure_join(root, "/abs/passwd") == os.path.join(root, "etc/passwd")
    assert secure_join(root, "/up/passwd") == os.path.join(root, "etc/passwd")
    assert secure_join(root, "/../../x/./y") == os.path.join(root, "x/y")
    with pytest.raises(OSError):
        secure_join(root, "/loop/x")


def test_child_status_messages_round_trip():
    assert status.decode(status.READY) is None
    error = status.decode(status.encode_error(InvalidArgument("process.cwd", "no such dir")))
    assert isinstance(error, InvalidArgument) and error.field == "process.cwd"
    error = status.decode(status.encode_error(ValueError("embedded null byte")))
    assert isinstance(error, SetupFailed) and "ValueError" in str(error)


def test_exit_status_is_code_or_128_plus_signal():
    assert exit_status(3 << 8) == 3
    assert exit_status(9) == 137 and exit_status(15) == 143


def test_clock_and_entropy_structs():
    ts = timespec_from_ns(1_700_000_000_123_456_789)
    assert (ts.tv_sec, ts.tv_nsec) == (1_700_000_000, 123_456_789)
    assert rand_pool_info(b"abcd") == struct.pack("ii", 32, 4) + b"abcd"


async def test_waiting_for_a_rootfs_device_ends_when_it_appears_or_at_the_deadline(tmp_path):
    import asyncio as aio
    import time as t

    from agent.container import rootfs as rootfs_mod
    from agent.container.types import LayeredRootfs, PathRootfs
    device = tmp_path / "pmem9"
    loop = aio.get_running_loop()
    loop.call_later(0.2, device.touch)
    start = t.monotonic()
    await rootfs_mod.wait_for_devices(LayeredRootfs(base_device=str(device)))
    assert device.exists() and t.monotonic() - start < 2
    start = t.monotonic()
    await rootfs_mod.wait_for_devices(LayeredRootfs(base_device=str(tmp_path / "never")), timeout=0.3)
    assert 0.25 < t.monotonic() - start < 2          # gives up; prepare() then names the missing device
    await rootfs_mod.wait_for_devices(PathRootfs(str(tmp_path)))


def test_container_states_are_an_enum_that_reads_as_runc_names_them():
    from agent.container.state import ContainerState
    assert [str(s) for s in ContainerState] == ["created", "running", "stopped"]
    assert f"container x is {ContainerState.CREATED}, not running" == "container x is created, not running"
