"""A bridge network of one test harness's own: bridge, IPv4 and IPv6 subnets, CNI conf and bin dirs.

CRI runs CNI for every pod; Debian's containernetworking-plugins give `bridge`, `host-local` and `loopback` (in
/usr/lib/cni). The host owns the bridge and its gateway addresses: the harness creates them, so the bridge plugin runs
with `isGateway: false` and `ipMasq: false` and changes neither iptables nor the host's forwarding sysctls; the host
still reaches every pod address on the bridge, and a pod reaches the gateway (its default route).

Several harnesses run at once on one host: each takes a free index N (10.88.N.0/24, fd00:88:N::/64, bridge rcriN)
under a lock, recorded in /run/rund-cri-net/N with the owning process and its work dir; an index whose owner is dead
or whose work dir is gone (a killed run) is reclaimed. A harness for more pods than a /24 holds (a density run) takes
`size` consecutive indexes: one host-local range per /24 in one range set, the bridge a gateway in each.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REGISTRY = Path("/run/rund-cri-net")
PLUGIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
PLUGINS = ("bridge", "host-local", "loopback")      # loopback: containerd 1.6's CRI brings lo up with it
IPV4_POOL = ipaddress.ip_network("10.88.0.0/16")
POD_ADDRESSES_PER_24 = 253                          # .0 network, .1 gateway, .255 broadcast
NETNS_DIR = Path("/var/run/netns")                  # where containerd 1.6's CRI mounts pod network namespaces


class NetworkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def plugin_dir() -> Path:
    for d in PLUGIN_DIRS:
        if all((d / p).is_file() for p in PLUGINS):
            return d
    raise NetworkError(f"CNI plugins {PLUGINS} not found in {[str(d) for d in PLUGIN_DIRS]}: "
                       "install Debian's containernetworking-plugins (make install)")


@dataclass(frozen=True)
class BridgeNetwork:
    index: int
    work: Path                  # holds the IPAM leases
    conf_path: Path             # the conflist CRI loads
    size: int = 1               # consecutive /24s from index on: ~253 pod addresses each

    @property
    def name(self) -> str:
        return f"rund-cri-{self.index}"

    @property
    def bridge(self) -> str:
        return f"rcri{self.index}"

    @property
    def subnet4(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"10.88.{self.index}.0/24")

    @property
    def subnets4(self) -> list[ipaddress.IPv4Network]:
        return [ipaddress.ip_network(f"10.88.{i}.0/24") for i in self.indexes]

    @property
    def indexes(self) -> range:
        return range(self.index, self.index + self.size)

    @property
    def subnet6(self) -> ipaddress.IPv6Network:
        return ipaddress.ip_network(f"fd00:88:{self.index}::/64")

    @property
    def gateway4(self) -> ipaddress.IPv4Address:
        return self.subnet4.network_address + 1

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        return self.subnet6.network_address + 1

    def conflist(self) -> dict:
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": False,         # the harness gave the bridge its addresses: no forwarding sysctls
                "ipMasq": False,            # no iptables
                "hairpinMode": False,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(self.work / "ipam"),
                    "ranges": [[{"subnet": str(s), "gateway": str(s.network_address + 1)} for s in self.subnets4],
                               [{"subnet": str(self.subnet6), "gateway": str(self.gateway6)}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                },
            }],
        }

    @classmethod
    def create(cls, work: Path, conf_dir: Path, bin_dir: Path, pods: int = 0) -> "BridgeNetwork":
        """pods: how many pods the harness may run at once (0: up to one /24's worth)."""
        size = max(1, -(-pods // POD_ADDRESSES_PER_24))
        src = plugin_dir()
        bin_dir.mkdir(parents=True, exist_ok=True)
        for p in PLUGINS:
            (bin_dir / p).unlink(missing_ok=True)
            (bin_dir / p).symlink_to(src / p)
        conf_dir.mkdir(parents=True, exist_ok=True)
        REGISTRY.mkdir(mode=0o700, exist_ok=True)
        with open(REGISTRY / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _reclaim()
            index = _free_index(size)
            net = cls(index, work, conf_dir / "10-rund-cri.conflist", size)
            for i in net.indexes:
                (REGISTRY / str(i)).write_text(f"{os.getpid()} {work}")
            try:
                net._up()
            except Exception:
                net._down()
                raise
        net.conf_path.write_text(json.dumps(net.conflist(), indent=2))
        return net

    def _up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        for s in self.subnets4:
            _ip("addr", "add", f"{s.network_address + 1}/{s.prefixlen}", "dev", self.bridge)
        _ip("-6", "addr", "add", f"{self.gateway6}/{self.subnet6.prefixlen}", "dev", self.bridge, "nodad")
        _ip("link", "set", self.bridge, "up")

    def _down(self) -> None:
        """Only while the registry still names this network's work dir: a reclaimed index may be another's now."""
        entry = REGISTRY / str(self.index)
        try:
            owned = entry.read_text().split(" ", 1)[1] == str(self.work)
        except (OSError, IndexError):
            owned = False
        if owned:
            _ip("link", "del", self.bridge, check=False)
            for i in self.indexes:
                (REGISTRY / str(i)).unlink(missing_ok=True)

    def ports(self) -> list[str]:
        """The interfaces on the bridge now (one host-side veth per pod that CNI attached)."""
        out = _ip("-j", "link", "show", "master", self.bridge, check=False).stdout
        return [link["ifname"] for link in json.loads(out or "[]")]

    def pod_netns(self) -> list[str]:
        """Network namespaces CRI made (/var/run/netns/cni-*) holding an address of this network."""
        found = []
        for ns in sorted(NETNS_DIR.glob("cni-*")):
            out = _ip("-n", ns.name, "-j", "addr", "show", check=False).stdout
            try:
                links = json.loads(out or "[]")
            except ValueError:
                continue
            for a in (a for link in links for a in link.get("addr_info", [])):
                try:
                    addr = ipaddress.ip_address(a.get("local", ""))
                    if any(addr in s for s in (self.subnets4 if addr.version == 4 else [self.subnet6])):
                        found.append(ns.name)
                        break
                except ValueError:
                    continue
        return found

    def destroy(self) -> None:
        """Remove the bridge (with any veth still on it), pod network namespaces still holding this network's
        addresses (a RunPodSandbox cut short leaves one), the registration and the conf. CNI DEL of every pod
        should have run before (StopPodSandbox)."""
        for ns in self.pod_netns():
            _ip("netns", "del", ns, check=False)
        with open(REGISTRY / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._down()
        self.conf_path.unlink(missing_ok=True)
        shutil.rmtree(self.work / "ipam", ignore_errors=True)


def _used_indexes() -> set[int]:
    used = {int(f.name) for f in REGISTRY.iterdir() if f.name.isdigit()}
    out = _ip("-j", "addr", "show").stdout
    for link in json.loads(out or "[]"):
        name = link.get("ifname", "")
        if name.startswith("rcri") and name[4:].isdigit():
            used.add(int(name[4:]))
        for a in link.get("addr_info", []):
            try:
                addr = ipaddress.ip_address(a.get("local", ""))
            except ValueError:
                continue
            if addr in IPV4_POOL:
                used.add(int(addr.packed[2]))
    return used


def _free_index(size: int = 1) -> int:
    """The first of `size` consecutive free indexes (a random one of the candidates: harnesses starting at once
    rarely race for the same)."""
    used = _used_indexes() | {0}        # 10.88.0.0/24 is the usual containerd/podman default: leave it alone
    free = [i for i in range(1, 256 - size) if not used & set(range(i, i + size))]
    if not free:
        raise NetworkError(f"no {size} free consecutive 10.88.N.0/24 for a CRI test network")
    return random.choice(free)


def _reclaim() -> None:
    """Networks whose harness is gone (its work dir removed or never cleaned up after a kill)."""
    for f in REGISTRY.iterdir():
        if not f.name.isdigit():
            continue
        try:
            pid, work = f.read_text().split(" ", 1)
        except (OSError, ValueError):
            continue
        if not _pid_alive(int(pid)) or not Path(work).exists():
            _ip("link", "del", f"rcri{f.name}", check=False)
            f.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
