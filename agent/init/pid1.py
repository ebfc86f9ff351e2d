"""What PID 1 does before serving: file systems, standard fds; and the last word before power-off."""
import errno
import logging
import os
import sys
import time

from ..linux import mounts as m
from ..linux.system import power_off

log = logging.getLogger(__name__)
_NOSUID_NODEV_NOEXEC = m.MS_NOSUID | m.MS_NODEV | m.MS_NOEXEC

# (target, fstype, source, flags, data). The image is read-only: everything writable is a tmpfs.
EARLY_MOUNTS = (
    ("/proc", "proc", "proc", _NOSUID_NODEV_NOEXEC, None),
    ("/sys", "sysfs", "sysfs", _NOSUID_NODEV_NOEXEC, None),
    ("/dev", "devtmpfs", "devtmpfs", m.MS_NOSUID, "mode=0755"),
    ("/dev/pts", "devpts", "devpts", m.MS_NOSUID | m.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"),
    ("/dev/shm", "tmpfs", "shm", _NOSUID_NODEV_NOEXEC, "mode=1777"),
    ("/tmp", "tmpfs", "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=1777"),
    ("/run", "tmpfs", "tmpfs", m.MS_NOSUID | m.MS_NODEV, "mode=0755"),
    # favordynmods: moving a task into a cgroup (every container start) skips an RCU grace period, which
    # costs ~50-100 ms under TCG; forks and exits pay a little instead. Kernels without it: see early_mounts.
    ("/sys/fs/cgroup", "cgroup2", "cgroup2", _NOSUID_NODEV_NOEXEC, "nsdelegate,favordynmods"),
)
_FALLBACK_DATA = {"nsdelegate,favordynmods": "nsdelegate"}  # before Linux 6.0 the option is EINVAL


def mounted_targets() -> set[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            return {line.split()[4] for line in f}
    except OSError:
        return set()


def early_mounts() -> None:
    """Mount what is not mounted yet (the initramfs may have moved some over already)."""
    for target, fstype, source, flags, data in EARLY_MOUNTS:
        if target in mounted_targets():
            continue
        try:
            os.makedirs(target, exist_ok=True)
        except OSError:
            pass  # read-only image: the directory has to be there already
        try:
            m.mount(source, target, fstype, flags, data)
        except OSError as exc:
            if exc.errno == errno.EINVAL and data in _FALLBACK_DATA:
                m.mount(source, target, fstype, flags, _FALLBACK_DATA[data])
            elif exc.errno != errno.EBUSY:
                raise


def ensure_standard_fds() -> None:
    """New fds must never land on 0-2: children get their stdio there."""
    for fd in range(3):
        try:
            os.fstat(fd)
        except OSError:
            target = os.open("/dev/null", os.O_RDWR)
            if target != fd:
                os.dup2(target, fd)
                os.close(target)


def last_word(message: str) -> None:
    """A fatal error as PID 1: say why on the console, then power off (PID 1 must never just exit)."""
    text = f"rund-agent: fatal: {message}\n"
    for path in ("/dev/console", "/dev/kmsg"):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
            os.write(fd, text.encode(errors="replace"))
            os.close(fd)
            break
        except OSError:
            continue
    else:
        sys.stderr.write(text)
    try:
        power_off()
    except OSError:
        pass
    while True:  # reboot failed: never return, never exit
        time.sleep(3600)
