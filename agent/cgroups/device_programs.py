"""Loaded device programs, one per distinct allowlist, kept for the agent's life: most containers of a pod (and
every clone of a template, which restores the agent's open fds with its memory) ask for the same rules, and the
kernel's verifier pass is the costly part of attaching one (~50-70 ms in a TCG guest, a few µs to attach)."""
import os

from ..linux import bpf
from .device_filter import program

MAX_PROGRAMS = 32
_loaded: dict[bytes, int] = {}
_code: dict = {}       # DevicePolicy -> its instructions (building them is ~30 ms of Python in a TCG guest)


def code_for(policy) -> bytes:
    """The BPF instructions of a device policy (agent/cgroups/device_filter.py), built once per policy: most
    containers fold to runc's defaults, and a template's warm-up container leaves them built for its clones."""
    code = _code.get(policy)
    if code is None:
        if len(_code) >= MAX_PROGRAMS:
            _code.pop(next(iter(_code)))
        code = _code[policy] = program(policy)
    return code


def program_fd(code: bytes, license: bytes) -> int:
    """A new fd (the caller closes it) of the loaded program for `code`, loading it on first use."""
    fd = _loaded.get(code)
    if fd is None:
        fd = bpf.load_device_program(code, license)
        if len(_loaded) >= MAX_PROGRAMS:            # a bound, not a policy: attached programs live on anyway
            os.close(_loaded.pop(next(iter(_loaded))))
        _loaded[code] = fd
    return os.dup(fd)
