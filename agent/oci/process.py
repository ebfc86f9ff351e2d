"""The OCI `process` object: what to run and as whom."""
from typing import NamedTuple

from ..errors import InvalidArgument
from ..linux.capabilities import NUMBER as CAPABILITY_NUMBER
from .fields import Fields, check_absolute

RLIMIT_NUMBER = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4, "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
U64_MAX = 2**64 - 1
_CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


class User(NamedTuple):
    uid: int
    gid: int
    umask: int | None = None
    additional_gids: tuple[int, ...] = ()


class Capabilities(NamedTuple):
    """Capability numbers per set."""
    bounding: tuple[int, ...] = ()
    effective: tuple[int, ...] = ()
    inheritable: tuple[int, ...] = ()
    permitted: tuple[int, ...] = ()
    ambient: tuple[int, ...] = ()


class Rlimit(NamedTuple):
    resource: int
    soft: int
    hard: int


class ProcessSpec(NamedTuple):
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: User
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (rows, columns)
    capabilities: Capabilities | None = None     # None: keep the agent's (full root) set
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None

    def env_dict(self) -> dict[str, str]:
        env = {}
        for item in self.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env


def parse_process(f: Fields) -> ProcessSpec:
    args = f.str_list("args", required=True)
    if not args:
        raise InvalidArgument(f.name("args"), "must not be empty")
    if not args[0]:
        raise InvalidArgument(f.name("args") + "[0]", "must not be empty")
    env = f.str_list("env")
    for i, item in enumerate(env):
        if "=" not in item or item.startswith("="):
            raise InvalidArgument(f"{f.name('env')}[{i}]", f"must be KEY=VALUE, got {item!r}")
    cwd = check_absolute(f.str("cwd", required=True), f.name("cwd"))
    console = f.obj("consoleSize")
    console_size = None
    if console is not None:
        console_size = (console.int("height", 0, minimum=0, maximum=0xFFFF),
                        console.int("width", 0, minimum=0, maximum=0xFFFF))
    return ProcessSpec(
        args=args,
        env=env,
        cwd=cwd,
        user=_parse_user(f.obj("user", required=True)),
        terminal=f.bool("terminal"),
        console_size=console_size,
        capabilities=_parse_capabilities(f.obj("capabilities")),
        rlimits=tuple(_parse_rlimit(r) for r in f.obj_list("rlimits")),
        no_new_privileges=f.bool("noNewPrivileges"),
        oom_score_adj=f.int("oomScoreAdj", minimum=-1000, maximum=1000),
    )


def _parse_user(f: Fields) -> User:
    gids = []
    for name, gid in f.list("additionalGids"):
        if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid < 2**32:
            raise InvalidArgument(name, "must be a group id (0..2^32-1)")
        gids.append(gid)
    if f.str("username"):
        raise InvalidArgument(f.name("username"), "is Windows-only; give uid and gid")
    return User(
        uid=f.int("uid", required=True, minimum=0, maximum=2**32 - 2),
        gid=f.int("gid", required=True, minimum=0, maximum=2**32 - 2),
        umask=f.int("umask", minimum=0, maximum=0o777),
        additional_gids=tuple(gids),
    )


def _parse_capabilities(f: Fields | None) -> Capabilities | None:
    if f is None:
        return None
    sets = {}
    for key in _CAPABILITY_SETS:
        numbers = []
        for i, name in enumerate(f.str_list(key)):
            number = CAPABILITY_NUMBER.get(name)
            if number is None:
                raise InvalidArgument(f"{f.name(key)}[{i}]", f"unknown capability {name!r}")
            numbers.append(number)
        sets[key] = tuple(numbers)
    return Capabilities(**sets)


def _parse_rlimit(f: Fields) -> Rlimit:
    kind = f.str("type", required=True)
    number = RLIMIT_NUMBER.get(kind)
    if number is None:
        raise InvalidArgument(f.name("type"), f"unknown rlimit {kind!r}")
    hard = f.int("hard", required=True, minimum=0, maximum=U64_MAX)
    soft = f.int("soft", required=True, minimum=0, maximum=U64_MAX)
    if soft > hard:
        raise InvalidArgument(f.name("soft"), f"{soft} exceeds the hard limit {hard}")
    return Rlimit(number, soft, hard)
