"""A CRI v1 client over grpcio, for tests and benchmarks (crictl is not packaged for Debian 12).

The messages are our own runtime.v1 subset (proto/src/cri/runtime/v1/api.proto, wire-identical to Kubernetes'); the
RPCs are built from that file's service descriptors, so `client.runtime.<Method>(request)` exists for every method
there. The helpers below cover the usual pod path and return the protobuf messages themselves.

    from integration.cri.client import CriClient, api, sandbox_config, container_config
    with CriClient(containerd_socket) as cri:
        pod = sandbox_config("web", log_directory="/tmp/logs")
        sid = cri.run_pod_sandbox(pod, handler="rund")
        cid = cri.create_container(sid, container_config("app", image, ["sh", "-c", "echo hi"]), pod)
        cri.start_container(cid)

grpcio is a test dependency ([test] extra); nothing in rund/ imports this module.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from proto.gen.cri.runtime.v1 import api_pb2 as api

DEFAULT_TIMEOUT = 300.0     # seconds per RPC: a rund pod's start may build a VM template first (TCG here)


class _Service:
    """Every RPC of one runtime.v1 service as a method: `svc.RunPodSandbox(request, timeout=...)`."""

    def __init__(self, channel: grpc.Channel, name: str, timeout: float):
        desc = api.DESCRIPTOR.services_by_name[name]
        self._timeout = timeout
        for m in desc.methods:
            call = channel.unary_unary(
                f"/{desc.full_name}/{m.name}",
                request_serializer=lambda msg: msg.SerializeToString(),
                response_deserializer=getattr(api, m.output_type.name).FromString,
            )
            setattr(self, m.name, self._with_timeout(call))

    def _with_timeout(self, call: grpc.UnaryUnaryMultiCallable) -> Callable[..., Any]:
        def invoke(request, timeout: float | None = None, **kw):
            return call(request, timeout=self._timeout if timeout is None else timeout, **kw)
        invoke.future = lambda request, timeout=None, **kw: call.future(
            request, timeout=self._timeout if timeout is None else timeout, **kw)
        return invoke


class CriClient:
    """A synchronous CRI client on containerd's socket (the CRI plugin serves on containerd's own gRPC address).

    grpc channels are thread-safe: one client can drive many pods from threads (or use `.future`)."""

    def __init__(self, address: str, timeout: float = DEFAULT_TIMEOUT):
        target = address if "://" in address else f"unix://{address}"
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 16 << 20)])
        self.runtime = _Service(self.channel, "RuntimeService", timeout)
        self.images = _Service(self.channel, "ImageService", timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "CriClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- runtime

    def version(self) -> api.VersionResponse:
        return self.runtime.Version(api.VersionRequest(version="v1"))

    def status(self, verbose: bool = False) -> api.StatusResponse:
        return self.runtime.Status(api.StatusRequest(verbose=verbose))

    def conditions(self) -> dict[str, bool]:
        return {c.type: c.status for c in self.status().status.conditions}

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the CRI plugin answers and reports RuntimeReady and NetworkReady (its CNI conf loaded)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                conds = self.conditions()
                if conds.get("RuntimeReady") and conds.get("NetworkReady"):
                    return
                last = conds
            except grpc.RpcError as e:
                last = e
            time.sleep(0.1)
        raise TimeoutError(f"CRI not ready in {timeout}s: {last}")

    # ---- pods

    def run_pod_sandbox(self, config: api.PodSandboxConfig, handler: str = "", timeout: float | None = None) -> str:
        req = api.RunPodSandboxRequest(config=config, runtime_handler=handler)
        return self.runtime.RunPodSandbox(req, timeout=timeout).pod_sandbox_id

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.runtime.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.runtime.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    def pod_sandbox_status(self, sandbox_id: str, verbose: bool = False) -> api.PodSandboxStatusResponse:
        return self.runtime.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose))

    def list_pod_sandboxes(self, **filter_fields) -> list[api.PodSandbox]:
        req = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(**filter_fields) if filter_fields else None)
        return list(self.runtime.ListPodSandbox(req).items)

    def pod_sandbox_stats(self, sandbox_id: str) -> api.PodSandboxStats:
        return self.runtime.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=sandbox_id)).stats

    # ---- containers

    def create_container(self, sandbox_id: str, config: api.ContainerConfig, sandbox: api.PodSandboxConfig) -> str:
        req = api.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox)
        return self.runtime.CreateContainer(req).container_id

    def start_container(self, container_id: str) -> None:
        self.runtime.StartContainer(api.StartContainerRequest(container_id=container_id))

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """Stop signal, then SIGKILL after `timeout` seconds (0: SIGKILL at once, as crictl's default)."""
        self.runtime.StopContainer(api.StopContainerRequest(container_id=container_id, timeout=timeout),
                                   timeout=DEFAULT_TIMEOUT + timeout)

    def remove_container(self, container_id: str) -> None:
        self.runtime.RemoveContainer(api.RemoveContainerRequest(container_id=container_id))

    def container_status(self, container_id: str, verbose: bool = False) -> api.ContainerStatusResponse:
        return self.runtime.ContainerStatus(api.ContainerStatusRequest(container_id=container_id, verbose=verbose))

    def list_containers(self, **filter_fields) -> list[api.Container]:
        req = api.ListContainersRequest(filter=api.ContainerFilter(**filter_fields) if filter_fields else None)
        return list(self.runtime.ListContainers(req).containers)

    def update_container_resources(self, container_id: str, linux: api.LinuxContainerResources) -> None:
        self.runtime.UpdateContainerResources(api.UpdateContainerResourcesRequest(container_id=container_id,
                                                                                  linux=linux))

    def exec_sync(self, container_id: str, cmd: Iterable[str], timeout: int = 0) -> api.ExecSyncResponse:
        """Run `cmd` in the container; stdout, stderr (bytes) and exit_code. `timeout` in seconds (0: none)."""
        req = api.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        return self.runtime.ExecSync(req, timeout=DEFAULT_TIMEOUT + timeout)

    def container_stats(self, container_id: str) -> api.ContainerStats:
        return self.runtime.ContainerStats(api.ContainerStatsRequest(container_id=container_id)).stats

    def list_container_stats(self, **filter_fields) -> list[api.ContainerStats]:
        req = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(**filter_fields) if filter_fields
                                            else None)
        return list(self.runtime.ListContainerStats(req).stats)

    # ---- images

    def list_images(self) -> list[api.Image]:
        return list(self.images.ListImages(api.ListImagesRequest()).images)

    def image_status(self, image: str) -> api.Image | None:
        res = self.images.ImageStatus(api.ImageStatusRequest(image=api.ImageSpec(image=image)))
        return res.image if res.HasField("image") else None

    def wait_image(self, image: str, timeout: float = 30.0) -> api.Image:
        """CRI learns of an image `ctr -n k8s.io images import` added from containerd's events: wait for it."""
        deadline = time.monotonic() + timeout
        while (img := self.image_status(image)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRI does not know image {image} after {timeout}s")
            time.sleep(0.05)
        return img

    # ---- teardown

    def remove_pod(self, sandbox_id: str) -> None:
        """Stop and remove a pod and every container in it (StopPodSandbox kills them; RemovePodSandbox removes)."""
        self.stop_pod_sandbox(sandbox_id)
        self.remove_pod_sandbox(sandbox_id)

    def remove_all_pods(self) -> None:
        for pod in self.list_pod_sandboxes():
            try:
                self.remove_pod(pod.id)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise


def remove_all_pods(address: str) -> None:
    with CriClient(address, timeout=60) as cri:
        cri.remove_all_pods()


# ---- configs


def sandbox_config(name: str, *, log_directory: str = "", namespace: str = "default", uid: str | None = None,
                   hostname: str | None = None, attempt: int = 0, labels: dict[str, str] | None = None,
                   annotations: dict[str, str] | None = None, cgroup_parent: str = "",
                   pid: int = api.CONTAINER, network: int = api.POD, ipc: int = api.POD,
                   **linux_sandbox: Any) -> api.PodSandboxConfig:
    """A PodSandboxConfig as kubelet writes one for a plain pod. `pid`, `network`, `ipc`: api.POD, CONTAINER,
    NODE (kubelet's default for pid is CONTAINER unless the pod sets shareProcessNamespace)."""
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, uid=uid or uuid.uuid4().hex, namespace=namespace,
                                        attempt=attempt),
        hostname=name if hostname is None else hostname,
        log_directory=log_directory,
        labels=labels or {}, annotations=annotations or {},
        linux=api.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=network, pid=pid, ipc=ipc), **linux_sandbox)),
    )


def container_config(name: str, image: str, command: Iterable[str] = (), args: Iterable[str] = (), *,
                     log_path: str | None = None, envs: dict[str, str] | None = None, working_dir: str = "",
                     memory_limit: int = 0, cpu_quota: int = 0, cpu_period: int = 0,
                     pid: int = api.CONTAINER, network: int = api.POD, ipc: int = api.POD,
                     tty: bool = False, stdin: bool = False, labels: dict[str, str] | None = None,
                     mounts: Iterable[api.Mount] = (), **security: Any) -> api.ContainerConfig:
    """A ContainerConfig; `log_path` is relative to the pod's log_directory (default `<name>.log`)."""
    return api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name),
        image=api.ImageSpec(image=image),
        command=list(command), args=list(args), working_dir=working_dir,
        envs=[api.KeyValue(key=k, value=v) for k, v in (envs or {}).items()],
        mounts=list(mounts),
        labels=labels or {},
        log_path=f"{name}.log" if log_path is None else log_path,
        tty=tty, stdin=stdin,
        linux=api.LinuxContainerConfig(
            resources=api.LinuxContainerResources(memory_limit_in_bytes=memory_limit, cpu_quota=cpu_quota,
                                                  cpu_period=cpu_period),
            security_context=api.LinuxContainerSecurityContext(
                namespace_options=api.NamespaceOption(network=network, pid=pid, ipc=ipc), **security)),
    )


def parse_log(text: str) -> list[tuple[str, str, str, str]]:
    """CRI's container log format, one record a line: `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`
    (P: a partial line continued by the next record)."""
    records = []
    for line in text.splitlines():
        ts, stream, tag, msg = (line.split(" ", 3) + [""])[:4]
        records.append((ts, stream, tag, msg))
    return records


def log_lines(text: str, stream: str | None = None) -> list[str]:
    """Whole lines of a CRI log (partial records joined), optionally of one stream."""
    lines, partial = [], {}
    for _ts, s, tag, msg in parse_log(text):
        if stream is not None and s != stream:
            continue
        partial[s] = partial.get(s, "") + msg
        if tag == "F":
            lines.append(partial.pop(s))
    return lines
