"""The few libseccomp calls the agent needs, through ctypes. libseccomp is loaded on first use only: most
sandboxes never need it, and the agent's own start does not pay for it."""
import ctypes

from ..errors import SetupFailed

SONAME = "libseccomp.so.2"
NR_SCMP_ERROR = -1               # seccomp_syscall_resolve_name: not a syscall libseccomp knows
SCMP_FLTATR_CTL_NNP = 3          # filter attributes (enum scmp_filter_attr)
SCMP_FLTATR_CTL_TSYNC = 4
SCMP_FLTATR_CTL_LOG = 6
SCMP_FLTATR_CTL_SSB = 7

_lib: ctypes.CDLL | None = None


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp"""
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def lib() -> ctypes.CDLL:
    """The library with its prototypes; SetupFailed when this system has none (never a silent skip)."""
    global _lib
    if _lib is None:
        try:
            handle = ctypes.CDLL(SONAME, use_errno=True)
        except OSError as exc:
            raise SetupFailed("seccomp", f"{SONAME} is not available to compile linux.seccomp: {exc}") from None
        handle.seccomp_init.restype = ctypes.c_void_p
        handle.seccomp_init.argtypes = [ctypes.c_uint32]
        handle.seccomp_release.argtypes = [ctypes.c_void_p]
        handle.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        handle.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        handle.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        handle.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        handle.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                                  ctypes.POINTER(ArgCmp)]
        handle.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        handle.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _lib = handle
    return _lib
