"""Where the guest's time goes: named marks on the start path, printed as one line per operation on the agent's
stderr (the guest console, the VM's console.log on the host).

Off unless the guest kernel's command line has `rund.agent_spans=1` (rund's `[guest] kernel_params`), or the
environment RUND_AGENT_SPANS=1 (the agent as a host process); off, a mark is one attribute test. A setup child
inherits the agent's marks and starts its own list after the fork (see reset()).

Each operation's line ends with its start on the guest's monotonic clock (t0=, ms), the page faults it took and the
process's CPU time in it; `rund-agent io read|write <bytes> at <ms> cpu <ms>` lines mark the host channel's traffic
(a request's wait before its handler is its read's time to its t0=), and idle jobs get a line of their own. The
clone's console.log then reads as a timeline of the guest's side of a start. The lines cost console writes (a few ms
each under TCG): compare runs with the switch on against each other, not against runs without it."""
import os
import resource
import time

_marks: list[tuple[str, float]] = []
_faults = 0     # the process's page faults (minor + major) when the operation started
_cpu0 = 0.0     # and its CPU time
_enabled: bool | None = None
_out = 2


def enabled() -> bool:
    global _enabled
    if _enabled is None:
        _enabled = os.environ.get("RUND_AGENT_SPANS") == "1"
        try:
            with open("/proc/cmdline") as f:
                _enabled = _enabled or "rund.agent_spans=1" in f.read().split()
        except OSError:
            pass
    return _enabled


def reset(first: str = "") -> None:
    """Start a new operation (the first mark, when named, is its zero)."""
    global _faults, _cpu0
    if _enabled:
        _marks.clear()
        _faults = _fault_count()
        _cpu0 = time.process_time()
        if first:
            _marks.append((first, time.monotonic()))


def mark(name: str) -> None:
    if _enabled:
        _marks.append((name, time.monotonic()))


def keep_output() -> None:
    """In a child about to dup its stdio over 0-2: keep writing to the console through a copy of fd 2."""
    global _out
    if _enabled:
        _out = os.dup(2)


def io(kind: str, length: int) -> None:
    """A read from or write to the host's channel: one line at once, with the guest's monotonic time (ms), to line
    up with the operations' lines (each names its own start, t0=): what a request spent before its handler ran and
    after it answered."""
    if _enabled:
        _write(f"rund-agent io {kind} {length} at {time.monotonic() * 1000:.1f} cpu {time.process_time() * 1000:.1f}\n")


def note(what: str, started: float) -> None:
    """One line for work outside an operation (an idle job): its ms since `started` and its start (t0=)."""
    if _enabled:
        _write(f"rund-agent spans {what}: took={(time.monotonic() - started) * 1000:.1f} t0={started * 1000:.1f}\n")


def dump(what: str) -> None:
    """Print `what`, then each mark's ms since the first, and forget them."""
    if not _enabled or not _marks:
        return
    t0 = _marks[0][1]
    line = (f"rund-agent spans {what}: " + " ".join(f"{n}={(t - t0) * 1000:.1f}" for n, t in _marks)
            + f" t0={t0 * 1000:.1f} faults={_fault_count() - _faults} cpu0={_cpu0 * 1000:.1f}"
            + f" cpu={(time.process_time() - _cpu0) * 1000:.1f}\n")
    _marks.clear()
    _write(line)


def _fault_count() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def _write(line: str) -> None:
    try:
        os.write(_out, line.encode())
    except OSError:
        pass
