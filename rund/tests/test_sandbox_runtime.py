"""SandboxRuntime's failure paths that need no VM: bad bundles and a full state disk give typed errors and leave
nothing behind. (Its VM paths are driven end to end through containerd in integration/test_ctr_run.py.)"""
import json
import os
import subprocess

import pytest

from rund import errors
from rund.runtime.process import Stdio
from rund.runtime.sandbox_runtime import SandboxRuntime, hostname_from_id
from rund.runtime.task_runtime import CreateRequest


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "bundle"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": ["true"], "cwd": "/"},
                                                  "root": {"path": "rootfs"}}))
    return path


def runtime_with(events: list) -> SandboxRuntime:
    return SandboxRuntime("testns", "sb1", events.append)


async def test_a_bundle_without_a_valid_config_json_is_invalid_argument(tmp_path):
    events: list = []
    rt = runtime_with(events)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(errors.InvalidArgument, match="config.json"):
        await rt.create(CreateRequest("sb1", str(tmp_path), Stdio()))
    (tmp_path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2"}))
    with pytest.raises(errors.InvalidArgument, match="process"):
        await rt.create(CreateRequest("sb1", str(tmp_path), Stdio()))
    assert events == [] and not rt.has_containers()
    await rt.close()


async def test_an_invalid_runtime_config_is_invalid_argument(tmp_path, bundle):
    cfg = tmp_path / "rund.toml"
    cfg.write_text("[hypervisor]\nvcpus = 'two'\n")
    rt = runtime_with([])
    with pytest.raises(errors.InvalidArgument, match="vcpus"):
        await rt.create(CreateRequest("sb1", str(bundle), Stdio(), config_path=str(cfg)))
    await rt.close()


@pytest.mark.root
async def test_a_full_state_disk_is_resource_exhausted_and_leaves_nothing(tmp_path, bundle):
    if os.geteuid() != 0:
        pytest.skip("needs root (tmpfs mount)")
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(state)], check=True)
    try:
        fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT)   # fill it up
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        cfg = tmp_path / "rund.toml"
        cfg.write_text(f'state_dir = "{state}"\n[cgroups]\npool = false\n')
        events: list = []
        rt = runtime_with(events)
        with pytest.raises(errors.ResourceExhausted):
            await rt.create(CreateRequest("sb1", str(bundle), Stdio(), config_path=str(cfg)))
        assert events == [] and not rt.has_containers()
        await rt.close()
        assert sorted(os.listdir(state)) == ["filler"]     # no half-made sandbox dir
        assert not (bundle / "rund.json").exists()
    finally:
        subprocess.run(["umount", str(state)], check=True)


@pytest.mark.parametrize("sandbox_id, hostname", [("a_b", "a-b"), ("web.1", "web-1"), ("Box", "box"),
                                                  ("_x_", "x"), ("x" * 76, "x" * 63), ("___", "rund")])
def test_a_hostname_made_from_an_id_is_a_valid_label(sandbox_id, hostname):
    assert hostname_from_id(sandbox_id) == hostname
