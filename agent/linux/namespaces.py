"""unshare(2) and setns(2)."""
from .libc import check, libc

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# OCI namespace type -> (clone flag, name of the /proc/<pid>/ns entry)
BY_OCI_TYPE = {
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "uts": (CLONE_NEWUTS, "uts"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "network": (CLONE_NEWNET, "net"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
}


def unshare(flags: int) -> None:
    check(libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    check(libc.setns(fd, nstype), "setns")
