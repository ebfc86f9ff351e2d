"""A private containerd for tests: its own root, state, sockets and log in one directory.

It never touches the system containerd (/run/containerd/containerd.sock) except for the shim socket directory
/run/containerd/s, which containerd hard-codes for every instance.

With `cri=True` it also serves Kubernetes' CRI (the `io.containerd.grpc.v1.cri` plugin) on its socket, with runtime
handlers `runc` and `rund`, a sandbox image of our own (hack/pause_image.py; no registry is reachable here) and a
bridge network of its own (integration/cri/network.py): its own CNI conf and bin dirs, bridge and subnets.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{cri_disabled}
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
]
[grpc]
  address = "{grpc}"
[ttrpc]
  address = "{grpc}.ttrpc"
[debug]
  level = "{level}"
"""

# The CRI plugin of containerd 1.6 (config version 2 keys, docs/cri/config.md@v1.6.20). Root here lacks
# CAP_SYS_RESOURCE: without restrict_oom_score_adj runc fails every pod (it cannot lower oom_score_adj).
# stream_server_port 0: a free port, since several private containerds run at once.
CRI_CONFIG = """\
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    disable_snapshot_annotations = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rund]
      runtime_type = "io.containerd.rund.v2"
{rund_options}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
"""
RUND_OPTIONS = """\
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rund.options]
        ConfigPath = "{config_path}"
"""
CRI_NAMESPACE = "k8s.io"


class ContainerdError(RuntimeError):
    pass


@dataclass
class PrivateContainerd:
    workdir: Path
    path_prefix: list[str] = field(default_factory=list)   # prepended to containerd's PATH (shim lookup)
    log_level: str = "debug"
    cri: bool = False                        # serve CRI (runtime handlers runc and rund) with a bridge network
    sandbox_image: str = "registry.k8s.io/pause:rund-local"   # CRI's pause image; import it (cri_import)
    rund_config_path: str | None = None      # the rund handler's options.ConfigPath; None: rund's own default
    pods: int = 0                            # pods the CRI network must hold at once (0: one /24's worth)
    proc: subprocess.Popen | None = None
    network: "object | None" = None          # integration.cri.network.BridgeNetwork while cri and running

    @property
    def address(self) -> str:
        return str(self.workdir / "c.sock")

    @property
    def ttrpc_address(self) -> str:
        return self.address + ".ttrpc"

    @property
    def log_path(self) -> Path:
        return self.workdir / "containerd.log"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    @property
    def cni_bin_dir(self) -> Path:
        return self.workdir / "cni" / "bin"

    @property
    def log_dir(self) -> Path:
        """Where CRI tests put their pods' container logs (PodSandboxConfig.log_directory)."""
        return self.workdir / "pod-logs"

    def _config(self) -> str:
        text = CONFIG.format(root=self.workdir / "root", state=self.workdir / "state", grpc=self.address,
                             level=self.log_level,
                             cri_disabled="" if self.cri else '\n  "io.containerd.grpc.v1.cri",')
        if self.cri:
            opts = RUND_OPTIONS.format(config_path=self.rund_config_path) if self.rund_config_path else ""
            text += CRI_CONFIG.format(sandbox_image=self.sandbox_image, rund_options=opts,
                                      cni_bin_dir=self.cni_bin_dir, cni_conf_dir=self.cni_conf_dir)
        return text

    def start(self, timeout: float = 20.0) -> "PrivateContainerd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(self.ttrpc_address) > 100:
            raise ContainerdError(f"socket path too long for AF_UNIX: {self.ttrpc_address}")
        if self.cri and self.network is None:
            from integration.cri.network import BridgeNetwork
            self.network = BridgeNetwork.create(self.workdir / "cni", self.cni_conf_dir, self.cni_bin_dir,
                                                pods=self.pods)
            self.log_dir.mkdir(exist_ok=True)
        cfg = self.workdir / "config.toml"
        cfg.write_text(self._config())
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*self.path_prefix, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.network is not None:
                    self.network.destroy()
                    self.network = None
                raise ContainerdError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.ttrpc_address) and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise ContainerdError(f"containerd did not come up in {timeout}s:\n{self.log_tail()}")

    def cri_import(self, tar: Path | str) -> None:
        """Import an OCI image tar where CRI finds it (namespace k8s.io), unpacked for its snapshotter."""
        self.ctr("images", "import", str(tar), namespace=CRI_NAMESPACE)

    def ctr(self, *args: str, namespace: str = "default", check: bool = True, timeout: float = 120,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        cmd = ["ctr", "--address", self.address, "--namespace", namespace, *args]
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
        if check and res.returncode != 0:
            raise ContainerdError(f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout.decode(errors='replace')}"
                                  f"{res.stderr.decode(errors='replace')}")
        return res

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            if self.network is not None:
                self.network.destroy()
                self.network = None
            return
        if self.cri and self.proc.poll() is None:
            from integration.cri.client import remove_all_pods
            try:
                remove_all_pods(self.address)     # pods hold shims, VMs, netns and CNI leases beyond containerd
            except Exception:   # noqa: BLE001 - best effort: still stop containerd and remove the network
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        # State holds mounts only while tasks run; unmount leftovers before removing.
        subprocess.run(["umount", "-R", "-l", str(self.workdir / "state")], capture_output=True)
        if self.network is not None:
            self.network.destroy()
            self.network = None
        shutil.rmtree(self.workdir, ignore_errors=True)
