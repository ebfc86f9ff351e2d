"""Volumes through CRI, for `runc` and `rund` in the same run: host directories a pod's containers mount (hostPath,
emptyDir, configMaps and secrets, an image's VOLUMEs) behave as with runc's bind mounts. Writes reach the host and
the host's writes are seen, read-only refuses writes, owners and modes are kept, symlinks inside a volume work, the
kubelet's atomic rewrites are seen live, two containers share one volume, 50 MB cross intact, an image VOLUME shows
what CRI copied up, HostToContainer propagation is honoured and Bidirectional refused by rund (a guest's mounts
cannot reach the host), and nothing of the pod's share is left after it (the host's data stays)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest

from integration.cri.client import api, container_config
from integration.rund_leaks import STATE_DIR, leftovers, mounts_mentioning
from integration.test_cri_pod_behaviour import pod, sh, start
from integration.test_cri_pods import HANDLERS, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.vm, pytest.mark.root]
NAMESPACE = "k8s.io"
MB50 = 50 * 1000 * 1000


@pytest.fixture
def host_dir():
    path = Path(tempfile.mkdtemp(prefix="rund-vol-", dir="/var/tmp"))
    yield path
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _seed(data: Path) -> None:
    (data / "dir").mkdir()
    (data / "dir" / "inner").write_text("inner\n")
    (data / "owned").write_text("owned\n")
    os.chown(data / "owned", 1234, 5678)
    (data / "owned").chmod(0o640)
    (data / "link-file").symlink_to("owned")
    (data / "link-dir").symlink_to("dir")
    (data / "..v1").mkdir()                         # kubelet's AtomicWriter layout: name -> ..data/name
    (data / "..v1" / "token").write_text("token-1\n")
    (data / "..data").symlink_to("..v1")
    (data / "token").symlink_to("..data/token")
    (data / "big.in").write_bytes(os.urandom(MB50))


def _mount(host: Path, path: str, readonly: bool = False, propagation: int = api.PROPAGATION_PRIVATE) -> api.Mount:
    return api.Mount(container_path=path, host_path=str(host), readonly=readonly, propagation=propagation)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("handler", HANDLERS)
def test_a_volume_round_trips_between_the_host_and_two_containers(cri, cri_containerd, handler, host_dir):
    ctd = cri_containerd
    data = host_dir / "data"
    data.mkdir()
    _seed(data)
    mounts = [_mount(data, "/vol"), _mount(data, "/ro", readonly=True)]
    with pod(cri, ctd, handler, f"vol-{handler}") as (sid, config, step):
        app = start(cri, step, sid, config, "app", ctd.image, "exec sleep 600", mounts=mounts)
        with step("host -> container: content, owners and modes, symlinked file and folder"):
            assert sh(cri, app, "cat /vol/owned /ro/owned") == "owned\nowned"
            assert sh(cri, app, "stat -c '%u:%g %a' /vol/owned") == "1234:5678 640"
            assert sh(cri, app, "cat /vol/link-file; cat /vol/link-dir/inner; readlink /vol/link-dir") == \
                "owned\ninner\ndir"
        with step("container -> host: content, owners and modes"):
            sh(cri, app, "echo from-app > /vol/written && chown 42:43 /vol/written && chmod 604 /vol/written "
                         "&& mkdir /vol/made && ln -s written /vol/made/link")
            st = (data / "written").stat()
            assert (data / "written").read_text() == "from-app\n"
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (42, 43, 0o604)
            assert os.readlink(data / "made" / "link") == "written"
        with step("a read-only volume refuses writes"):
            res = cri.exec_sync(app, ["sh", "-c", "echo x > /ro/nope"], timeout=30)
            assert res.exit_code != 0 and b"Read-only file system" in res.stderr, res
            assert not (data / "nope").exists()
        with step("the host rewrites while the container runs: a rename over a file, kubelet's ..data swap"):
            (data / "owned.tmp").write_text("rewritten\n")
            os.rename(data / "owned.tmp", data / "owned")
            (data / "..v2").mkdir()
            (data / "..v2" / "token").write_text("token-2\n")
            (data / "..data_tmp").symlink_to("..v2")
            os.rename(data / "..data_tmp", data / "..data")
            assert sh(cri, app, "cat /vol/owned /vol/token /ro/token") == "rewritten\ntoken-2\ntoken-2"
        with step("50 MB each way, checksums equal"):
            assert sh(cri, app, "sha256sum /vol/big.in", timeout=120).split()[0] == _sha256(data / "big.in")
            got = sh(cri, app, f"head -c {MB50} /dev/urandom > /vol/big.out && sha256sum /vol/big.out",
                     timeout=180).split()[0]
            assert got == _sha256(data / "big.out")
        peer = start(cri, step, sid, config, "peer", ctd.image, "exec sleep 600", mounts=[_mount(data, "/shared")])
        with step("a volume shared by two containers of the pod"):
            assert sh(cri, peer, "cat /shared/written") == "from-app"
            sh(cri, peer, "echo from-peer > /shared/peer")
            assert sh(cri, app, "cat /vol/peer") == "from-peer"
        with step("a removed container's volumes go, the others stay"):
            cri.stop_container(peer, 0)
            cri.remove_container(peer)
            assert sh(cri, app, "cat /vol/peer") == "from-peer"
    if handler == "rund":
        with step("nothing of the pod's share is left; the host's data stays"):
            wait_for(lambda: not leftovers(sid, NAMESPACE) and not mounts_mentioning(str(STATE_DIR / NAMESPACE / sid)),
                     30, f"the pod to leave nothing: {leftovers(sid, NAMESPACE)}")
    assert (data / "written").read_text() == "from-app\n" and (data / "dir" / "inner").exists()
    assert (data / "peer").read_text() == "from-peer\n"


@pytest.fixture(scope="module")
def volume_image(cri, cri_containerd, tmp_path_factory):
    """busybox with a VOLUME /seeded whose image content CRI copies up into the volume's host dir."""
    from hack.busybox_image import BUSYBOX, _layer, write_image
    name = "docker.io/library/busybox:rund-volume"
    tar = tmp_path_factory.mktemp("images") / "volume.tar"
    layer = _layer(BUSYBOX, {"seeded/from-image": "from-image\n"})
    write_image(tar, name, layer, {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                                   "Volumes": {"/seeded": {}}})
    cri_containerd.cri_import(tar)
    cri.wait_image(name)
    return name


@pytest.mark.parametrize("handler", HANDLERS)
def test_an_image_volume_shows_what_cri_copied_up(cri, cri_containerd, handler, volume_image):
    with pod(cri, cri_containerd, handler, f"imgvol-{handler}") as (sid, config, step):
        app = start(cri, step, sid, config, "app", volume_image, "exec sleep 600")
        with step("the image's content at its VOLUME, writable, on the host volume"):
            assert sh(cri, app, "cat /seeded/from-image") == "from-image"
            sh(cri, app, "echo more > /seeded/added")
            assert sh(cri, app, "grep -c ' /seeded ' /proc/mounts") == "1"    # a mount, not the image's dir


@contextlib.contextmanager
def _shared_mount(path: Path):
    """`path` as a shared mount of itself: CRI requires it for HostToContainer and Bidirectional."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-R", str(path)], check=False)


@pytest.mark.parametrize("handler", HANDLERS)
def test_host_to_container_propagation_is_honoured(cri, cri_containerd, handler, host_dir):
    (host_dir / "sub").mkdir()
    with _shared_mount(host_dir), pod(cri, cri_containerd, handler, f"h2c-{handler}") as (sid, config, step):
        app = start(cri, step, sid, config, "app", cri_containerd.image, "exec sleep 600",
                    mounts=[_mount(host_dir, "/vol", propagation=api.PROPAGATION_HOST_TO_CONTAINER)])
        with step("a mount the host makes after the container started is seen in it"):
            subprocess.run(["mount", "-t", "tmpfs", "late", str(host_dir / "sub")], check=True)
            try:
                (host_dir / "sub" / "on-tmpfs").write_text("late\n")
                wait_for(lambda: cri.exec_sync(app, ["cat", "/vol/sub/on-tmpfs"], timeout=30).stdout == b"late\n",
                         30, "the host's later mount in the container")
            finally:
                subprocess.run(["umount", str(host_dir / "sub")], check=False)


@pytest.mark.parametrize("handler", HANDLERS)
def test_bidirectional_propagation_is_refused_by_rund_naming_the_mount(cri, cri_containerd, handler, host_dir):
    with _shared_mount(host_dir), pod(cri, cri_containerd, handler, f"bidi-{handler}") as (sid, config, step):
        cfg = container_config("app", cri_containerd.image, ["sh", "-c", "exec sleep 600"],
                               mounts=[_mount(host_dir, "/bidi", propagation=api.PROPAGATION_BIDIRECTIONAL)])
        if handler == "runc":
            with step("runc: Bidirectional works"):
                cid = cri.create_container(sid, cfg, config)
                step.ids.append(cid)
                cri.start_container(cid)
            return
        with pytest.raises(grpc.RpcError) as failed:
            cid = cri.create_container(sid, cfg, config)
            step.ids.append(cid)
            cri.start_container(cid)
        assert "mount /bidi: propagation 'rshared'" in failed.value.details(), failed.value.details()


@pytest.fixture
def loop_device(host_dir):
    backing = host_dir / "disk.img"
    backing.write_bytes(b"host-wrote-this\n" + bytes(8 << 20))
    path = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True,
                          check=True).stdout.strip()
    yield path, backing
    subprocess.run(["losetup", "-d", path], check=False)


@pytest.mark.parametrize("permissions", ["rwm", "r"])
@pytest.mark.parametrize("handler", HANDLERS)
def test_a_raw_block_device_reaches_the_container(cri, cri_containerd, handler, permissions, loop_device):
    path, backing = loop_device
    script = ("head -c 16 /dev/xvda; if echo guest-wrote-this | dd of=/dev/xvda bs=512 seek=8 conv=fsync "
              "2>/dev/null; then echo WRITTEN; else echo REFUSED; fi; exec sleep 600")
    with pod(cri, cri_containerd, handler, f"blk-{handler}-{permissions}") as (sid, config, step):
        cfg = container_config("app", cri_containerd.image, ["sh", "-c", script])
        cfg.devices.append(api.Device(container_path="/dev/xvda", host_path=path, permissions=permissions))
        with step("CreateContainer with a block device"):
            cid = cri.create_container(sid, cfg, config)
            step.ids.append(cid)
            cri.start_container(cid)
        with step("the host's content read, a write landing on the host device unless read-only"):
            expected = "host-wrote-this\n" + ("WRITTEN" if permissions == "rwm" else "REFUSED")
            log = cri_containerd.log_dir / f"blk-{handler}-{permissions}" / "app.log"
            wait_for(lambda: expected in "\n".join(ln.split(" ", 3)[3] for ln in _lines(log)), 60,
                     f"{expected!r} in the container's log")
            written = backing.read_bytes()[4096:4096 + 17]
            assert written == (b"guest-wrote-this\n" if permissions == "rwm" else bytes(17))


def _lines(log: Path) -> list[str]:
    try:
        return [ln for ln in log.read_text().splitlines() if ln.count(" ") >= 3]
    except FileNotFoundError:
        return []
