"""`make demo`: a container through rund, end to end on this host.

1. `rund check`: what the host offers (KVM or TCG, vsock, cgroups, QEMU, guest image).
2. containerd: the system one if it answers on /run/containerd/containerd.sock, else a private one in a temp dir.
3. A busybox image built locally (no registry needed) and imported with `ctr images import`.
4. `ctr run --rm --runtime io.containerd.rund.v2 ...` twice: the first sandbox may boot cold (and a template is
   built for the next), the second is a clone of that template.
5. A pod through CRI (hack/demo_cri.py): two containers sharing localhost, and the host fetching a page from the
   pod IP.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hack.busybox_image import build
from hack.demo_cri import run as run_cri
from integration.containerd_daemon import PrivateContainerd

SYSTEM_SOCKET = "/run/containerd/containerd.sock"
RUNTIME = "io.containerd.rund.v2"
VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
SCRIPT = "echo Hello from a rund sandbox VM; echo guest kernel: $(uname -r); echo host name: $(hostname)"


@contextlib.contextmanager
def containerd(work: Path):
    if Path(SYSTEM_SOCKET).exists() and subprocess.run(["ctr", "--address", SYSTEM_SOCKET, "version"],
                                                       capture_output=True).returncode == 0:
        print(f"using the system containerd ({SYSTEM_SOCKET})")
        yield SYSTEM_SOCKET
        return
    print("no containerd running: starting a private one")
    d = PrivateContainerd(work / "containerd", path_prefix=[str(VENV_BIN)], log_level="info")
    d.start()
    try:
        yield d.address
    finally:
        d.stop()


def ctr(address: str, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "--address", address, *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def main() -> int:
    print("$ rund check")
    subprocess.run([sys.executable, "-m", "rund.cli", "check"])
    with tempfile.TemporaryDirectory(prefix="rund-demo-") as tmp, containerd(Path(tmp)) as address:
        image = build(Path(tmp) / "busybox.tar")
        ctr(address, "images", "import", str(Path(tmp) / "busybox.tar"))
        print(f"imported {image}")
        for n in (1, 2):
            cid = f"rund-demo-{n}"
            print(f"\n$ ctr run --rm --runtime {RUNTIME} {image} {cid} sh -c '...'")
            start = time.monotonic()
            res = ctr(address, "run", "--rm", "--runtime", RUNTIME, image, cid, "sh", "-c", SCRIPT, check=False)
            print(res.stdout + res.stderr, end="")
            print(f"exit status {res.returncode} after {time.monotonic() - start:.2f} s")
            if res.returncode != 0:
                return 1
    print("\n$ a pod through containerd's CRI plugin, runtime handler rund")
    with tempfile.TemporaryDirectory(prefix="rund-demo-cri-") as tmp:
        return run_cri(Path(tmp))


if __name__ == "__main__":
    if shutil.which("ctr") is None:
        sys.exit("ctr is missing: run `make install`")
    sys.exit(main())
