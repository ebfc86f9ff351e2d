"""A pod's volume share in a template clone: the template carries an (unmounted) virtio-9p device, the clone exports
its own directory under the same tag, binds made on the host after QEMU started are seen through 9p, and the agent
mounts them into a container: owners and modes kept, read-only enforced, symlinks followed, writes reach the host,
host rewrites (kubelet's atomic swaps) are seen. Nothing left on the host after teardown."""
from __future__ import annotations

import asyncio
import os

import pytest

from rund.agent import StdioConfig
from rund.hypervisor import FileShare, Machine
from rund.runtime.volumes import PodShare, Volume, mounts_under
from rund.tests.vm_factory import os_rootfs
from agent.tests.helpers import read_all, spec

pytestmark = [pytest.mark.vm, pytest.mark.root]
TAG = "rundvol"
ROOTFS = os_rootfs(Machine.MICROVM)


@pytest.fixture(scope="module")
def share_template(tmp_path_factory):
    from rund.tests.vm_factory import VMFactory
    empty = tmp_path_factory.mktemp("template-share")
    with VMFactory.scratch(with_shm=True) as factory:
        yield factory.template(share=FileShare(empty, TAG))


def _host_volume(root):
    data = root / "data"
    (data / "dir").mkdir(parents=True)
    (data / "owned").write_text("owned\n")
    os.chown(data / "owned", 1234, 5678)
    (data / "owned").chmod(0o640)
    (data / "dir" / "inner").write_text("inner\n")
    (data / "link-file").symlink_to("owned")
    (data / "link-dir").symlink_to("dir")
    # kubelet's AtomicWriter: files are symlinks through ..data -> a timestamped dir, swapped by a rename
    (data / "..v1").mkdir()
    (data / "..v1" / "token").write_text("token-1\n")
    (data / "..data").symlink_to("..v1")
    (data / "token").symlink_to("..data/token")
    return data


SCRIPT = r"""
cat /vol/owned; stat -c '%u:%g %a' /vol/owned; cat /vol/link-file; cat /vol/link-dir/inner; readlink /vol/link-dir
cat /vol/token; cat /ro/owned
echo from-guest > /vol/written; chown 42:43 /vol/written; chmod 604 /vol/written
if echo x > /ro/nope 2>/dev/null; then echo RO-WRITABLE; else echo RO-REFUSED; fi
while [ ! -e /vol/go ]; do sleep 0.1; done
cat /vol/token; cat /vol/rewritten
"""


def test_a_clone_mounts_the_pods_volumes_over_9p(share_template, vm_factory, tmp_path):
    share_dir = tmp_path / "sandbox" / "volumes"
    share = PodShare(share_dir)
    share.prepare()                                        # before QEMU opens it
    data = _host_volume(tmp_path)
    guest = vm_factory.clone(share_template, share=FileShare(share_dir, TAG))
    try:
        # bound after the VM started: 9p sees it as it walks the path
        share.bind_container("c1", [Volume(0, {"destination": "/vol", "source": str(data), "options": ["rbind"]}),
                                    Volume(1, {"destination": "/ro", "source": str(data),
                                               "options": ["rbind", "ro"]})])
        container = spec(["sh", "-c", SCRIPT])
        container["mounts"] = [
            {"destination": "/vol", "type": "bind", "source": "rund-volume:0", "options": ["rbind", "rprivate"]},
            {"destination": "/ro", "type": "bind", "source": "rund-volume:1", "options": ["rbind", "ro"]}]

        async def run() -> bytes:
            async with await guest.connect() as client:
                await client.create_container("c1", container, ROOTFS, StdioConfig(stdout=True))
                await client.start_container("c1")
                reading = asyncio.ensure_future(read_all(client, "c1"))
                for _ in range(300):
                    if (data / "written").exists():
                        break
                    await asyncio.sleep(0.1)
                # the host rewrites while the container runs: a ..data swap and a rename over a file
                (data / "..v2").mkdir()
                (data / "..v2" / "token").write_text("token-2\n")
                (data / "..data_tmp").symlink_to("..v2")
                os.rename(data / "..data_tmp", data / "..data")
                (data / "rewritten.tmp").write_text("new\n")
                os.rename(data / "rewritten.tmp", data / "rewritten")
                (data / "go").touch()
                out = await asyncio.wait_for(reading, 120)
                assert (await client.wait_process("c1")).code == 0
                await client.remove_container("c1")
                return out

        out = guest.call(run(), 180).decode()
    finally:
        share.teardown()
    assert out.split("\n")[:-1] == [
        "owned", "1234:5678 640", "owned", "inner", "dir", "token-1", "owned", "RO-REFUSED", "token-2", "new"], out
    written = data / "written"
    assert written.read_text() == "from-guest\n"
    st = written.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (42, 43, 0o604)
    assert not (data / "nope").exists()
    assert mounts_under(str(tmp_path / "sandbox")) == [] and not share_dir.exists()
    assert (data / "owned").read_text() == "owned\n"            # the host's data stays
