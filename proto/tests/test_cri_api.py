"""Our runtime.v1 subset (proto/src/cri/runtime/v1/api.proto) is wire-identical to Kubernetes' CRI v1.

Expected numbers are upstream's (k8s.io/cri-api pkg/apis/runtime/v1/api.proto); a field we carry must have
upstream's number and type, and the gRPC paths must be upstream's, or containerd reads something else.
"""
import pytest
from google.protobuf.descriptor import FieldDescriptor as F

from proto.gen.cri.runtime.v1 import api_pb2 as api


def _fields(cls):
    return {f.name: f.number for f in cls.DESCRIPTOR.fields}


def test_package_and_services_are_upstreams():
    assert api.DESCRIPTOR.package == "runtime.v1"
    runtime = api.DESCRIPTOR.services_by_name["RuntimeService"]
    images = api.DESCRIPTOR.services_by_name["ImageService"]
    assert runtime.full_name == "runtime.v1.RuntimeService" and images.full_name == "runtime.v1.ImageService"
    assert {m.name for m in runtime.methods} == {
        "Version", "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "PodSandboxStatus", "ListPodSandbox",
        "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer", "ListContainers", "ContainerStatus",
        "UpdateContainerResources", "ExecSync", "ContainerStats", "ListContainerStats", "PodSandboxStats",
        "ListPodSandboxStats", "Status"}
    assert {m.name for m in images.methods} == {"ListImages", "ImageStatus", "ImageFsInfo"}
    # Upstream names every request <Method>Request and every response <Method>Response.
    for m in [*runtime.methods, *images.methods]:
        assert (m.input_type.name, m.output_type.name) == (f"{m.name}Request", f"{m.name}Response")
        assert not m.client_streaming and not m.server_streaming


@pytest.mark.parametrize("cls, expected", [
    (api.VersionResponse, {"version": 1, "runtime_name": 2, "runtime_version": 3, "runtime_api_version": 4}),
    (api.NamespaceOption, {"network": 1, "pid": 2, "ipc": 3, "target_id": 4}),
    (api.LinuxSandboxSecurityContext, {"namespace_options": 1, "run_as_user": 3, "readonly_rootfs": 4,
                                       "supplemental_groups": 5, "privileged": 6, "run_as_group": 8, "seccomp": 9}),
    (api.LinuxPodSandboxConfig, {"cgroup_parent": 1, "security_context": 2, "sysctls": 3, "overhead": 4,
                                 "resources": 5}),
    (api.PodSandboxMetadata, {"name": 1, "uid": 2, "namespace": 3, "attempt": 4}),
    (api.PodSandboxConfig, {"metadata": 1, "hostname": 2, "log_directory": 3, "dns_config": 4, "labels": 6,
                            "annotations": 7, "linux": 8}),
    (api.RunPodSandboxRequest, {"config": 1, "runtime_handler": 2}),
    (api.PodSandboxNetworkStatus, {"ip": 1, "additional_ips": 2}),
    (api.Namespace, {"options": 2}),
    (api.PodSandboxStatus, {"id": 1, "metadata": 2, "state": 3, "created_at": 4, "network": 5, "linux": 6,
                            "labels": 7, "annotations": 8, "runtime_handler": 9}),
    (api.PodSandboxStatusResponse, {"status": 1, "info": 2}),
    (api.PodSandboxFilter, {"id": 1, "state": 2, "label_selector": 3}),
    (api.PodSandbox, {"id": 1, "metadata": 2, "state": 3, "created_at": 4, "labels": 5, "annotations": 6,
                      "runtime_handler": 7}),
    (api.LinuxContainerResources, {"cpu_period": 1, "cpu_quota": 2, "cpu_shares": 3, "memory_limit_in_bytes": 4,
                                   "oom_score_adj": 5, "cpuset_cpus": 6, "cpuset_mems": 7, "unified": 9,
                                   "memory_swap_limit_in_bytes": 10}),
    (api.LinuxContainerSecurityContext, {"capabilities": 1, "privileged": 2, "namespace_options": 3,
                                         "run_as_user": 5, "run_as_username": 6, "readonly_rootfs": 7,
                                         "supplemental_groups": 8, "no_new_privs": 11, "run_as_group": 12,
                                         "masked_paths": 13, "readonly_paths": 14, "seccomp": 15}),
    (api.Mount, {"container_path": 1, "host_path": 2, "readonly": 3, "selinux_relabel": 4, "propagation": 5}),
    (api.ContainerConfig, {"metadata": 1, "image": 2, "command": 3, "args": 4, "working_dir": 5, "envs": 6,
                           "mounts": 7, "devices": 8, "labels": 9, "annotations": 10, "log_path": 11, "stdin": 12,
                           "stdin_once": 13, "tty": 14, "linux": 15}),
    (api.CreateContainerRequest, {"pod_sandbox_id": 1, "config": 2, "sandbox_config": 3}),
    (api.StopContainerRequest, {"container_id": 1, "timeout": 2}),
    (api.ContainerFilter, {"id": 1, "state": 2, "pod_sandbox_id": 3, "label_selector": 4}),
    (api.Container, {"id": 1, "pod_sandbox_id": 2, "metadata": 3, "image": 4, "image_ref": 5, "state": 6,
                     "created_at": 7, "labels": 8, "annotations": 9}),
    (api.ContainerStatus, {"id": 1, "metadata": 2, "state": 3, "created_at": 4, "started_at": 5, "finished_at": 6,
                           "exit_code": 7, "image": 8, "image_ref": 9, "reason": 10, "message": 11, "labels": 12,
                           "annotations": 13, "mounts": 14, "log_path": 15, "resources": 16}),
    (api.UpdateContainerResourcesRequest, {"container_id": 1, "linux": 2, "annotations": 4}),
    (api.ExecSyncRequest, {"container_id": 1, "cmd": 2, "timeout": 3}),
    (api.ExecSyncResponse, {"stdout": 1, "stderr": 2, "exit_code": 3}),
    (api.CpuUsage, {"timestamp": 1, "usage_core_nano_seconds": 2, "usage_nano_cores": 3}),
    (api.MemoryUsage, {"timestamp": 1, "working_set_bytes": 2, "available_bytes": 3, "usage_bytes": 4,
                       "rss_bytes": 5, "page_faults": 6, "major_page_faults": 7}),
    (api.ContainerStats, {"attributes": 1, "cpu": 2, "memory": 3, "writable_layer": 4}),
    (api.ContainerStatsFilter, {"id": 1, "pod_sandbox_id": 2, "label_selector": 3}),
    (api.LinuxPodSandboxStats, {"cpu": 1, "memory": 2, "network": 3, "process": 4, "containers": 5}),
    (api.PodSandboxStats, {"attributes": 1, "linux": 2}),
    (api.NetworkInterfaceUsage, {"name": 1, "rx_bytes": 2, "rx_errors": 3, "tx_bytes": 4, "tx_errors": 5}),
    (api.Image, {"id": 1, "repo_tags": 2, "repo_digests": 3, "size": 4, "uid": 5, "username": 6, "spec": 7}),
    (api.ImageStatusResponse, {"image": 1, "info": 2}),
    (api.StatusResponse, {"status": 1, "info": 2}),
    (api.RuntimeCondition, {"type": 1, "status": 2, "reason": 3, "message": 4}),
])
def test_field_numbers_match_upstream(cls, expected):
    assert _fields(cls) == expected


@pytest.mark.parametrize("cls, field, kind", [
    (api.ExecSyncResponse, "stdout", F.TYPE_BYTES),
    (api.ExecSyncResponse, "exit_code", F.TYPE_INT32),
    (api.ContainerStatus, "exit_code", F.TYPE_INT32),
    (api.ContainerStatus, "created_at", F.TYPE_INT64),
    (api.PodSandboxMetadata, "attempt", F.TYPE_UINT32),
    (api.Image, "size", F.TYPE_UINT64),
    (api.UInt64Value, "value", F.TYPE_UINT64),
    (api.Int64Value, "value", F.TYPE_INT64),
    (api.StopContainerRequest, "timeout", F.TYPE_INT64),
    (api.LinuxContainerResources, "memory_limit_in_bytes", F.TYPE_INT64),
])
def test_field_types_match_upstream(cls, field, kind):
    assert cls.DESCRIPTOR.fields_by_name[field].type == kind


def test_enums_match_upstream():
    def values(enum):
        return {v.name: v.number for v in enum.values}
    assert values(api.NamespaceMode.DESCRIPTOR) == {"POD": 0, "CONTAINER": 1, "NODE": 2, "TARGET": 3}
    assert values(api.PodSandboxState.DESCRIPTOR) == {"SANDBOX_READY": 0, "SANDBOX_NOTREADY": 1}
    assert values(api.ContainerState.DESCRIPTOR) == {"CONTAINER_CREATED": 0, "CONTAINER_RUNNING": 1,
                                                     "CONTAINER_EXITED": 2, "CONTAINER_UNKNOWN": 3}
    assert values(api.MountPropagation.DESCRIPTOR) == {"PROPAGATION_PRIVATE": 0, "PROPAGATION_HOST_TO_CONTAINER": 1,
                                                       "PROPAGATION_BIDIRECTIONAL": 2}
    assert values(api.SecurityProfile.ProfileType.DESCRIPTOR) == {"RuntimeDefault": 0, "Unconfined": 1,
                                                                  "Localhost": 2}


def test_bytes_written_by_hand_from_upstreams_numbers():
    # RunPodSandboxRequest{config{metadata{name:"p"}, linux{security_context{namespace_options{pid:CONTAINER}}}},
    # runtime_handler:"rund"}: tags 1/1/1 (len), 8/2/1/2 (len), 2 (varint 1), then 2 "rund".
    req = api.RunPodSandboxRequest(
        config=api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name="p"),
            linux=api.LinuxPodSandboxConfig(security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(pid=api.CONTAINER)))),
        runtime_handler="rund")
    config = bytes.fromhex("0a03" "0a0170") + bytes.fromhex("4206" "1204" "0a02" "1001")
    assert req.SerializeToString() == bytes.fromhex("0a0d") + config + bytes.fromhex("1204") + b"rund"
    # ExecSyncResponse{stdout:"hi\n", exit_code:3} as a peer sends it.
    res = api.ExecSyncResponse.FromString(bytes.fromhex("0a03") + b"hi\n" + bytes.fromhex("1803"))
    assert (res.stdout, res.stderr, res.exit_code) == (b"hi\n", b"", 3)
    # A newer peer's fields we do not carry (ContainerStatus.image_id = 17) survive a decode.
    st = api.ContainerStatus.FromString(bytes.fromhex("0a0163" "8a0102") + b"id")
    assert st.id == "c" and st.SerializeToString().endswith(bytes.fromhex("8a0102") + b"id")
