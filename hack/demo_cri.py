"""The CRI part of `make demo`: a Kubernetes-style pod through containerd's CRI plugin with the `rund` handler.

A private containerd with CRI on (integration/containerd_daemon.py, its own bridge network from Debian's CNI
plugins), a pod of two containers: `web` serves a page on port 8080, `client` fetches it over the pod's localhost;
then the host fetches the same page from the pod IP that CNI assigned (the VM's).
"""
from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from hack.cri_bench import Env
from integration.cri.client import CriClient, container_config, sandbox_config
WEB = "mkdir -p /www && echo 'Hello from a rund pod' > /www/index.html && exec httpd -f -p 8080 -h /www"


def fetch(url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run(work: Path) -> int:
    env = Env.start("busybox", prefix="rund-demo-cri-")
    try:
        with CriClient(env.address) as cri:
            image = env.image
            pod = sandbox_config("demo", log_directory=str(work / "logs"))
            start = time.monotonic()
            sid = cri.run_pod_sandbox(pod, "rund")
            try:
                for name, command in (("web", WEB), ("client", "exec sleep 600")):
                    cid = cri.create_container(sid, container_config(name, image, ["sh", "-c", command]), pod)
                    cri.start_container(cid)
                print(f"pod {sid[:12]} (handler rund) with containers web and client: {time.monotonic() - start:.2f} s")
                ip = cri.pod_sandbox_status(sid).status.network.ip
                res = None
                for _ in range(50):
                    res = cri.exec_sync(cid, ["wget", "-qO-", "http://127.0.0.1:8080/index.html"], timeout=30)
                    if res.exit_code == 0:
                        break
                    time.sleep(0.2)
                print(f"client -> localhost:8080 inside the pod: {res.stdout.decode().strip()}")
                print(f"host -> http://{ip}:8080 (the pod IP CNI assigned): {fetch(f'http://{ip}:8080/index.html')}")
            finally:
                cri.remove_pod(sid)
    finally:
        env.stop()
    return 0
