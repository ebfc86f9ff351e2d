"""A pause image built locally (no registry is reachable), for the CRI plugin's `sandbox_image`.

Like Kubernetes' own pause image it holds one static binary, `/pause`, run as 65535:65535: it sleeps in pause(2),
reaps the children it inherits (SIGCHLD), and exits 0 at once on SIGTERM or SIGINT. The binary is a 304-byte
x86-64 ELF written here byte by byte, so building it needs no compiler; the assembly is beside the bytes.

    python3 -m hack.pause_image /tmp/pause.tar     # prints the image name
"""
from __future__ import annotations

import io
import struct
import sys
import tarfile
from pathlib import Path

from hack.busybox_image import EPOCH, write_image

IMAGE_NAME = "registry.k8s.io/pause:rund-local"

BASE = 0x400000                 # load address of the one PT_LOAD segment (the whole file)
CODE_OFFSET = 64 + 56           # after the ELF header and the one program header
SA_RESTORER, SA_RESTART = 0x04000000, 0x10000000

# Assembled with GNU as (intel syntax) at BASE + CODE_OFFSET = 0x400078; offsets below are from there.
CODE = bytes.fromhex(
    "bf0f000000"        # 00 _start:  mov edi, 15                 SIGTERM
    "e824000000"        # 05          call install                (0x2e)
    "bf02000000"        # 0a          mov edi, 2                  SIGINT
    "e81a000000"        # 0f          call install
    "bf11000000"        # 14          mov edi, 17                 SIGCHLD
    "488d3578000000"    # 19          lea rsi, [rip+act_chld]     (0x98)
    "e810000000"        # 20          call install2               (0x35)
    "b822000000"        # 25 1:       mov eax, 34                 pause()
    "0f05"              # 2a          syscall
    "ebf7"              # 2c          jmp 1b
    "488d3543000000"    # 2e install: lea rsi, [rip+act_exit]     (0x78)
    "31d2"              # 35 install2: xor edx, edx               oldact = NULL
    "41ba08000000"      # 37          mov r10d, 8                 sizeof(sigset_t)
    "b80d000000"        # 3d          mov eax, 13                 rt_sigaction(edi, rsi, NULL, 8)
    "0f05"              # 42          syscall
    "c3"                # 44          ret
    "31ff"              # 45 on_exit: xor edi, edi
    "b8e7000000"        # 47          mov eax, 231                exit_group(0)
    "0f05"              # 4c          syscall
    "bfffffffff"        # 4e on_chld: mov edi, -1
    "31f6"              # 53          xor esi, esi
    "ba01000000"        # 55          mov edx, 1                  WNOHANG
    "4531d2"            # 5a          xor r10d, r10d
    "b83d000000"        # 5d          mov eax, 61                 wait4(-1, NULL, WNOHANG, NULL)
    "0f05"              # 62          syscall
    "4885c0"            # 64          test rax, rax
    "7fe5"              # 67          jg on_chld                  reaped one: try the next
    "c3"                # 69          ret                         to the restorer
    "b80f000000"        # 6a restorer: mov eax, 15                rt_sigreturn
    "0f05"              # 6f          syscall
    "0f1f8000000000"    # 71          nop (pad to 0x78)
)
ON_EXIT, ON_CHLD, RESTORER = 0x45, 0x4E, 0x6A


def _sigaction(handler: int, flags: int) -> bytes:
    """struct kernel_sigaction {handler, flags, restorer, mask}: x86-64 needs SA_RESTORER for a handler."""
    at = BASE + CODE_OFFSET
    return struct.pack("<QQQQ", at + handler, flags | SA_RESTORER, at + RESTORER, 0)


def pause_elf() -> bytes:
    body = CODE + _sigaction(ON_EXIT, 0) + _sigaction(ON_CHLD, SA_RESTART)     # act_exit at 0x78, act_chld at 0x98
    return static_elf(body)


def static_elf(body: bytes) -> bytes:
    """A static x86-64 executable: the ELF header, one R+X PT_LOAD of the whole file at BASE, then `body`, entered
    at its first byte (BASE + CODE_OFFSET)."""
    size = CODE_OFFSET + len(body)
    ehdr = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,   # 64-bit, little endian, SysV
                       2, 0x3E, 1, BASE + CODE_OFFSET, 64, 0, 0, 64, 56, 1, 0, 0, 0)  # ET_EXEC, x86-64, entry
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)   # PT_LOAD, R+X, the whole file
    return ehdr + phdr + body


def _layer() -> bytes:
    return executable_layer("pause", pause_elf())


def executable_layer(name: str, data: bytes) -> bytes:
    """A layer tar holding one executable file, /`name`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o755, EPOCH
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(out: Path, name: str = IMAGE_NAME) -> str:
    return write_image(out, name, _layer(), {"Entrypoint": ["/pause"], "User": "65535:65535",
                                             "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "pause-oci.tar")))
