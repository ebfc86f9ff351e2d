"""A private containerd for tests: its own root, state, sockets and log in one directory.

It never touches the system containerd (/run/containerd/containerd.sock) except for the shim socket directory
/run/containerd/s, which containerd hard-codes for every instance.
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
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
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


class ContainerdError(RuntimeError):
    pass


@dataclass
class PrivateContainerd:
    workdir: Path
    path_prefix: list[str] = field(default_factory=list)   # prepended to containerd's PATH (shim lookup)
    log_level: str = "debug"
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return str(self.workdir / "c.sock")

    @property
    def ttrpc_address(self) -> str:
        return self.address + ".ttrpc"

    @property
    def log_path(self) -> Path:
        return self.workdir / "containerd.log"

    def start(self, timeout: float = 20.0) -> "PrivateContainerd":
        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(self.ttrpc_address) > 100:
            raise ContainerdError(f"socket path too long for AF_UNIX: {self.ttrpc_address}")
        cfg = self.workdir / "config.toml"
        cfg.write_text(CONFIG.format(root=self.workdir / "root", state=self.workdir / "state",
                                     grpc=self.address, level=self.log_level))
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*self.path_prefix, env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")])
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["containerd", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerdError(f"containerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.ttrpc_address) and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise ContainerdError(f"containerd did not come up in {timeout}s:\n{self.log_tail()}")

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
            return
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
        shutil.rmtree(self.workdir, ignore_errors=True)
