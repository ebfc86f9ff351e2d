"""Runs `python3 -m agent.main --listen unix:...` as a real subprocess in private namespaces, and cleans up."""
from __future__ import annotations

import os
import socket
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class AgentProcess:
    """The agent in its own mount, uts and network namespaces: its mounts, hostname and addresses stay
    away from the host's. `pre_exec` runs in the new namespaces before the agent (e.g. to add a veth)."""

    def __init__(self, cgroup_root: str | None = None, setup_shell: str = "", extra_args: tuple[str, ...] = ()):
        self.dir = tempfile.mkdtemp(prefix="agent-", dir="/tmp")
        self.socket = os.path.join(self.dir, "agent.sock")
        self.state_dir = os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "agent.log")
        self.cgroup_root = cgroup_root
        self.setup_shell = setup_shell
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        agent = [sys.executable, "-m", "agent.main", "--listen", f"unix:{self.socket}",
                 "--state-dir", self.state_dir, "--log-level", "DEBUG",
                 "--cgroup-root", self.cgroup_root or "none", *self.extra_args]
        inner = " ".join(_quote(a) for a in agent)
        script = f"{self.setup_shell}\nexec {inner}" if self.setup_shell else f"exec {inner}"
        return ["unshare", "--mount", "--uts", "--net", "--propagation", "private", "--", "sh", "-ec", script]

    def start(self) -> None:
        log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(self.argv(), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while not self._listening():   # the socket file appears at bind(), before listen(): connect to know
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent did not listen within 20 s:\n{self.log()}")
            time.sleep(0.01)

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(self.socket)
                return True
            except OSError:
                return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def mounts(self) -> list[str]:
        """Mount points in the agent's mount namespace."""
        with open(f"/proc/{self.pid}/mountinfo") as f:
            return [line.split()[4] for line in f]

    def stop(self) -> int:
        """SIGTERM: the agent removes every container and exits; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> "AgentProcess":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        code = self.stop()
        if code != 0 and exc_info[0] is None:
            raise AssertionError(f"agent exited with {code}:\n{self.log()}")
        shutil.rmtree(self.dir, ignore_errors=True)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"
