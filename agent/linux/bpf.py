"""bpf(2): load a cgroup device program and attach it to (or detach it from) a cgroup v2 directory."""
import ctypes
import os

from .libc import libc, SYSCALL_NUMBERS

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2  # as runc: programs of parent groups keep running too, and ours can be swapped later
_LOG_SIZE = 1 << 16


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _ProgAttach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


class BpfLoadError(OSError):
    """The kernel refused a program; `log` is the verifier's explanation."""

    def __init__(self, err: int, log: str):
        super().__init__(err, f"BPF_PROG_LOAD: {os.strerror(err)}" + (f": {log.strip()}" if log else ""))
        self.log = log


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    result = libc.syscall(SYSCALL_NUMBERS["bpf"], ctypes.c_int(cmd), ctypes.byref(attr),
                          ctypes.c_uint(ctypes.sizeof(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def load_device_program(insns: bytes, license: bytes, name: bytes = b"rund_devices") -> int:
    """The program's fd (close-on-exec). On a refusal, loads again with the verifier log to say why."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license)
    attr = _ProgLoad(prog_type=BPF_PROG_TYPE_CGROUP_DEVICE, insn_cnt=len(insns) // 8,
                     insns=ctypes.addressof(code), license=ctypes.addressof(lic), prog_name=name[:15])
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as exc:
        log = ctypes.create_string_buffer(_LOG_SIZE)
        attr.log_level, attr.log_size, attr.log_buf = 1, _LOG_SIZE, ctypes.addressof(log)
        try:
            os.close(_bpf(BPF_PROG_LOAD, attr))
        except OSError:
            pass
        raise BpfLoadError(exc.errno, log.value.decode(errors="replace")[-2000:]) from None


def attach_device_program(cgroup_dir_fd: int, prog_fd: int) -> None:
    _bpf(BPF_PROG_ATTACH, _ProgAttach(target_fd=cgroup_dir_fd, attach_bpf_fd=prog_fd,
                                      attach_type=BPF_CGROUP_DEVICE, attach_flags=BPF_F_ALLOW_MULTI))


def detach_device_program(cgroup_dir_fd: int, prog_fd: int) -> None:
    _bpf(BPF_PROG_DETACH, _ProgAttach(target_fd=cgroup_dir_fd, attach_bpf_fd=prog_fd,
                                      attach_type=BPF_CGROUP_DEVICE))
