"""A tiny "function" image for cold-start and density benchmarks: its one process prints `ready` at once and then
waits, as a FaaS function that is up and idle.

`/function` is a 256-byte static x86-64 ELF written here byte by byte (the way hack/pause_image.py writes pause): it
installs SIGTERM/SIGINT handlers that exit 0 (so a stop needs no SIGKILL), write(1, "ready\\n", 6), then sleeps in
pause(2) forever. No shell, no libc, no dynamic loader: the image adds next to nothing to a start beyond what the
runtime itself does, so a benchmark with it measures the runtime, not the function.

    python3 -m hack.function_image /tmp/function.tar     # prints the image name
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

from hack.busybox_image import write_image
from hack.pause_image import BASE, CODE_OFFSET, SA_RESTORER, executable_layer, static_elf

IMAGE_NAME = "docker.io/library/rund-function:ready"
READY = "ready"

# Assembled with GNU as (intel syntax) at BASE + CODE_OFFSET = 0x400078; offsets below are from there.
CODE = bytes.fromhex(
    "bf0f000000"        # 00 _start:  mov edi, 15                 SIGTERM
    "e82b000000"        # 05          call install                (0x35)
    "bf02000000"        # 0a          mov edi, 2                  SIGINT
    "e821000000"        # 0f          call install
    "b801000000"        # 14          mov eax, 1                  write(1, msg, 6)
    "bf01000000"        # 19          mov edi, 1
    "488d3537000000"    # 1e          lea rsi, [rip+msg]          (0x5c)
    "ba06000000"        # 25          mov edx, 6
    "0f05"              # 2a          syscall
    "b822000000"        # 2c 1:       mov eax, 34                 pause()
    "0f05"              # 31          syscall
    "ebf7"              # 33          jmp 1b
    "488d352c000000"    # 35 install: lea rsi, [rip+act]          (0x68)
    "31d2"              # 3c          xor edx, edx                oldact = NULL
    "41ba08000000"      # 3e          mov r10d, 8                 sizeof(sigset_t)
    "b80d000000"        # 44          mov eax, 13                 rt_sigaction(edi, rsi, NULL, 8)
    "0f05"              # 49          syscall
    "c3"                # 4b          ret
    "31ff"              # 4c on_exit: xor edi, edi
    "b8e7000000"        # 4e          mov eax, 231                exit_group(0)
    "0f05"              # 53          syscall
    "b80f000000"        # 55 restorer: mov eax, 15                rt_sigreturn
    "0f05"              # 5a          syscall
    "72656164790a"      # 5c msg:     "ready\n"
    "660f1f440000"      # 62          nop (pad to 0x68)
)
ON_EXIT, RESTORER = 0x4C, 0x55


def function_elf() -> bytes:
    at = BASE + CODE_OFFSET
    act = struct.pack("<QQQQ", at + ON_EXIT, SA_RESTORER, at + RESTORER, 0)     # act at 0x68
    return static_elf(CODE + act)


def _layer() -> bytes:
    return executable_layer("function", function_elf())


def build(out: Path, name: str = IMAGE_NAME) -> str:
    return write_image(out, name, _layer(), {"Entrypoint": ["/function"],
                                             "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]})


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "function-oci.tar")))
