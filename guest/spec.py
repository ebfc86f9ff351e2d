"""What the guest is made of: packages, kernel modules, stdlib roots and image layout.

Data only. Changing anything here changes the build key (this file is hashed like every build script).
"""

from __future__ import annotations

# Debian packages. The kernel metapackage is resolved to the concrete linux-image-<release> it depends on.
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
ROOTFS_PACKAGES = (
    "busybox-static",
    "python3.11-minimal",  # /usr/bin/python3.11 (libpython linked in)
    "libpython3.11-minimal",  # core stdlib
    "libpython3.11-stdlib",  # the rest of the stdlib (asyncio, ctypes, json, ...)
    "libc6",
    "libexpat1",  # python3.11 links it
    "zlib1g",  # python3.11 links it
    "libffi8",  # _ctypes: the agent calls unshare/mount/pivot_root/setns through ctypes
    "libstdc++6",  # protobuf's upb extension (google/_upb/_message.abi3.so) is C++
    "libgcc-s1",  # libstdc++ needs it
    "libseccomp2",  # the agent compiles linux.seccomp profiles with it (ctypes; see DLOPENED_LIBRARIES)
)
# Libraries the agent loads with ctypes: no ELF names them as NEEDED, so the image stages them by name.
DLOPENED_LIBRARIES = ("libseccomp.so.2",)
# Host tools whose version changes the output bytes; their dpkg versions are part of the key.
HOST_TOOL_PACKAGES = ("erofs-utils", "lz4", "dpkg", "gcc-12", "binutils")  # gcc-12, binutils: source_modules.py

# The protobuf runtime in the image: same version as on the host, the cp311 manylinux wheel from PyPI.
PROTOBUF_DIST = "protobuf"
WHEEL_PLATFORM = "manylinux2014_x86_64"
WHEEL_PYTHON_VERSION = "3.11"

# Kernel modules by group, each closed under its dependencies at build time (order from .modinfo depends=).
# The initramfs gets only what reaches the root device; /init picks the groups that match the machine.
INITRD_MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "core": ("virtio", "virtio_ring"),
    "mmio": ("virtio_mmio",),  # microvm: virtio-*-device, bound through ACPI (LNRO0005)
    "pci": ("virtio_pci",),  # q35 (and microvm,pcie=on): virtio-*-pci
    "blk": ("virtio_blk",),  # root on read-only virtio-blk (microvm)
    "pmem": ("virtio_pmem", "nd_pmem"),  # root on virtio-pmem with DAX (q35)
    "erofs": ("erofs",),
}
# Everything else the agent may need; shipped in the rootfs and listed in /etc/rund/modules.list.
# virtio_console first: it is the agent's channel, the rest can follow.
ROOTFS_MODULES = (
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "virtio_net",
    "overlay",
    "virtiofs",
    "virtio_rng",
    "virtio_mem",  # the pod's memory grows and shrinks through a virtio-mem-pci device (q35)
    "9pnet_virtio",  # the pod's volumes: a virtio-9p share hotplugged into the VM (built by source_modules.py)
    "9p",
    "virtio_blk",  # raw block devices hot-plugged for a pod's containers (q35: the initramfs loaded it only on microvm)
)

# Stdlib modules imported in the trace in addition to whatever agent/ and proto/ import (found by an AST scan).
# Generous on purpose: lazy imports inside the stdlib are invisible to the trace.
STDLIB_ROOTS = (
    "argparse", "array", "asyncio", "asyncio.subprocess", "asyncio.unix_events", "base64", "binascii",
    "bisect", "collections", "collections.abc", "concurrent.futures", "concurrent.futures.thread",
    "contextlib", "contextvars", "copy", "ctypes", "dataclasses", "datetime", "encodings.ascii",
    "encodings.latin_1", "encodings.utf_8", "enum", "errno", "fcntl", "fnmatch", "functools", "glob",
    "grp", "hashlib", "heapq", "io", "ipaddress", "itertools", "json", "logging", "logging.handlers",
    "math", "mmap", "operator", "os", "pathlib", "pty", "pwd", "queue", "random", "re", "resource",
    "runpy",  # `python3 -m` needs it (and importlib.util/_abc behind it)
    "secrets", "select", "selectors", "shlex", "shutil", "signal", "socket", "stat", "string", "struct",
    "subprocess", "tempfile", "termios", "textwrap", "threading", "time", "traceback", "tty", "types",
    "typing", "uuid", "warnings", "weakref",
)
# Never shipped, even if something imports them: each has a pure fallback or is not needed in the guest.
# _hashlib/_ssl would pull in libssl3 (hashlib falls back to the built-in _sha*/_md5/_blake2).
# _bz2/_lzma/_decimal would need libbz2/liblzma/libmpdec (shutil, tarfile and decimal fall back or are not used).
STDLIB_DENY = ("_hashlib", "_ssl", "ssl", "_uuid", "_bz2", "bz2", "_lzma", "lzma", "_decimal", "readline",
               "_sqlite3", "_curses", "_dbm", "_tkinter", "sitecustomize", "apport_python_hook", "pydoc",
               "doctest", "unittest", "idlelib", "lib2to3", "ensurepip", "test")
# Non-stdlib modules imported in the trace and in the image check (besides every shipped proto module).
EXTRA_ROOTS = ("google.protobuf", "google.protobuf.json_format", "google.protobuf.text_format")

# Image layout.
PYTHON_BIN = "/usr/bin/python3.11"
PYTHON_LIB = "/usr/lib/python3.11"
OPT_DIR = "/opt/rund"  # proto/, agent/ and google/protobuf live here
SITE_PTH = "/usr/lib/python3/dist-packages/rund.pth"  # puts OPT_DIR on sys.path, also under `python3 -I`
MODULES_LIST = "/etc/rund/modules.list"  # paths relative to /lib/modules/<release>/, load order
IMAGE_INFO = "/etc/rund/image.json"
INIT = "/sbin/init"
AGENT_MODULE = "agent.main"
AGENT_ARGV = (PYTHON_BIN, "-I", "-m", AGENT_MODULE, "--pid1")
# Mount points the initramfs or the agent mount over (the image itself stays read-only).
MOUNT_POINTS = ("/proc", "/sys", "/dev", "/tmp", "/run", "/var", "/mnt", "/root")

# Repo packages shipped under OPT_DIR: their .py files only (no tests, no .proto sources, no stubs).
SHIPPED_PACKAGES = ("proto", "agent")
SHIPPED_EXCLUDE_DIRS = ("tests", "__pycache__")
SHIPPED_EXCLUDE_FILES = ("proto/generate.py",)  # a host tool (runs grpc_tools)

# Every file we add (not from a .deb) gets this mtime, so the image does not depend on checkout times.
SOURCE_DATE_EPOCH = 1_700_000_000
ROOTFS_ALIGN = 2 * 1024 * 1024  # virtio-pmem needs a 2 MiB multiple
