"""Runs in a forked child once it sees the container's root: become the OCI process and execve it."""
import os
import resource

from ..errors import InvalidArgument, SetupFailed
from ..linux import capabilities as caps
from ..linux import seccomp
from ..linux.prctl import PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS, prctl
from ..oci.process import U64_MAX, ProcessSpec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_inherited_oom_score_adj: int | None = None    # the agent's, which its children start with (note_oom_score_adj)


def note_oom_score_adj() -> None:
    """Read the agent's oom_score_adj once (it never changes it): a child whose process asks for the same value need
    not write it (a /proc write from a setup child: an open, a write and a close in a TCG guest)."""
    global _inherited_oom_score_adj
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _inherited_oom_score_adj = int(os.read(fd, 32))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        _inherited_oom_score_adj = None


def become(process: ProcessSpec, seccomp_filter: seccomp.SeccompFilter | None = None
           ) -> tuple[str, dict[str, str]]:
    """Apply limits, identity, capabilities and cwd; return the executable's path and the environment."""
    _apply_rlimits(process)
    _set_oom_score_adj(process)
    if seccomp_filter is not None and not process.no_new_privileges:
        _install_seccomp(seccomp_filter)  # runc: without no_new_privs this needs CAP_SYS_ADMIN: before the drop
    _switch_user(process)
    os.umask(process.user.umask if process.user.umask is not None else 0o022)
    try:
        os.chdir(process.cwd)
    except OSError as exc:
        raise InvalidArgument("process.cwd", f"{process.cwd}: {exc.strerror}") from None
    env = process.env_dict()
    env.setdefault("HOME", _home_of(process.user.uid))
    return find_executable(process.args[0], env.get("PATH", DEFAULT_PATH)), env


def _set_oom_score_adj(process: ProcessSpec) -> None:
    if process.oom_score_adj is not None and process.oom_score_adj != _inherited_oom_score_adj:
        _write("/proc/self/oom_score_adj", str(process.oom_score_adj), "process.oomScoreAdj")


def find_executable(name: str, search_path: str) -> str:
    if "/" in name:
        if not os.path.isfile(name):
            raise InvalidArgument("process.args[0]", f"{name}: no such file")
        return name
    for directory in search_path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise InvalidArgument("process.args[0]", f"executable file {name!r} not found in $PATH")


def execute(path: str, process: ProcessSpec, env: dict[str, str],
            seccomp_filter: seccomp.SeccompFilter | None = None) -> None:
    """The last steps: no_new_privs, seccomp (when no_new_privs lets it wait this long), execve.
    Returns only by raising."""
    if process.no_new_privileges:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if seccomp_filter is not None:
            _install_seccomp(seccomp_filter)  # last, so the profile need not allow the agent's own setup
    try:
        os.execve(path, list(process.args), env)
    except OSError as exc:
        raise InvalidArgument("process.args[0]", f"exec {path}: {exc.strerror}") from None


def _install_seccomp(seccomp_filter: seccomp.SeccompFilter) -> None:
    try:
        seccomp.install(seccomp_filter)
    except OSError as exc:
        raise SetupFailed("seccomp", f"installing the filter ({seccomp_filter.length} instructions): "
                                     f"{exc.strerror}") from None


def _apply_rlimits(process: ProcessSpec) -> None:
    for limit in process.rlimits:
        soft = resource.RLIM_INFINITY if limit.soft == U64_MAX else limit.soft
        hard = resource.RLIM_INFINITY if limit.hard == U64_MAX else limit.hard
        try:
            resource.setrlimit(limit.resource, (soft, hard))
        except (OSError, ValueError) as exc:
            raise InvalidArgument("process.rlimits", f"setrlimit({limit.resource}): {exc}") from None


def _switch_user(process: ProcessSpec) -> None:
    """Each set*id, setgroups and prctl here commits new credentials (~2-3 ms in a TCG guest): the ones that would
    change nothing (a root container's uid and gid, the agent's; keepcaps without a uid change) are skipped, reading
    the current ids instead (no commit)."""
    user, wanted = process.user, process.capabilities
    last = caps.last_cap()
    new_uid = os.getresuid() != (user.uid, user.uid, user.uid)
    try:
        if wanted is not None:
            caps.drop_bounding(caps.mask(c for c in wanted.bounding if c <= last), last)
            if new_uid:
                prctl(PR_SET_KEEPCAPS, 1)  # keep permitted caps across setuid to a non-root uid
        if sorted(os.getgroups()) != sorted(user.additional_gids):
            os.setgroups(list(user.additional_gids))
        if os.getresgid() != (user.gid, user.gid, user.gid):
            os.setresgid(user.gid, user.gid, user.gid)
        if new_uid:
            os.setresuid(user.uid, user.uid, user.uid)
        if wanted is not None:
            if new_uid:
                prctl(PR_SET_KEEPCAPS, 0)
            caps.capset(caps.mask(c for c in wanted.effective if c <= last),
                        caps.mask(c for c in wanted.permitted if c <= last),
                        caps.mask(c for c in wanted.inheritable if c <= last))
            caps.set_ambient(caps.mask(c for c in wanted.ambient if c <= last), last)
    except OSError as exc:
        raise InvalidArgument("process.user", f"switching to uid {user.uid} gid {user.gid}: {exc.strerror}") from None


def _home_of(uid: int) -> str:
    try:
        fd = os.open("/etc/passwd", os.O_RDONLY | os.O_CLOEXEC)  # bytes: no text-file machinery in the child
    except OSError:
        return "/"
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return "/"
    finally:
        os.close(fd)
    wanted = str(uid).encode()
    for line in b"".join(chunks).split(b"\n"):
        fields = line.split(b":")
        if len(fields) >= 6 and fields[2] == wanted:
            return os.fsdecode(fields[5]) or "/"
    return "/"


def _write(path: str, value: str, field: str) -> None:
    """Bytes through os.open: the first text-mode open() in a child costs ~30-60 ms in a TCG guest (io, codecs)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise InvalidArgument(field, f"writing {path}: {exc.strerror}") from None


def write_sysctls(sysctl: tuple[tuple[str, str], ...]) -> None:
    for key, value in sysctl:
        path = "/proc/sys/" + (key if "/" in key else key.replace(".", "/"))
        _write(path, value, f"linux.sysctl.{key}")

