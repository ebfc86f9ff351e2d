"""A container's device allowlist as runc computes it: the spec's rules, then runc's defaults, folded the way
cgroup v1's devices controller folds devices.allow/deny writes (runc's devices emulator). Pure.

The result is a default (allow or deny everything) plus exceptions that all have the opposite action, so the
order of the exceptions does not matter to the BPF program built from them (agent/cgroups/device_filter.py).
"""
from typing import NamedTuple

from ..errors import InvalidArgument
from ..oci.resources import DeviceRule

# runc's specconv.AllowedDevices, appended to every container's rules (so a spec cannot take them away).
RUNC_DEFAULT_RULES = (
    DeviceRule(True, "c", None, None, "m"),    # mknod of any device; using it is another matter
    DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3, "rwm"),        # /dev/null
    DeviceRule(True, "c", 1, 8, "rwm"),        # /dev/random
    DeviceRule(True, "c", 1, 7, "rwm"),        # /dev/full
    DeviceRule(True, "c", 5, 0, "rwm"),        # /dev/tty
    DeviceRule(True, "c", 1, 5, "rwm"),        # /dev/zero
    DeviceRule(True, "c", 1, 9, "rwm"),        # /dev/urandom
    DeviceRule(True, "c", 136, None, "rwm"),   # /dev/pts/*
    DeviceRule(True, "c", 5, 2, "rwm"),        # /dev/ptmx
    DeviceRule(True, "c", 10, 200, "rwm"),     # /dev/net/tun
)

_Key = tuple[str, int | None, int | None]


class DevicePolicy(NamedTuple):
    default_allow: bool
    exceptions: tuple[DeviceRule, ...]  # each with allow == not default_allow; sorted

    def allows(self, kind: str, major: int, minor: int, access: str) -> bool:
        """What the kernel would decide for one access (a reference for tests of the BPF program)."""
        for rule in self.exceptions:
            if (rule.type == kind and rule.major in (None, major) and rule.minor in (None, minor)
                    and set(access) <= set(rule.access)):
                return rule.allow
        return self.default_allow


def effective_policy(spec_rules: tuple[DeviceRule, ...], field: str = "linux.resources.devices") -> DevicePolicy:
    """The spec's rules followed by runc's defaults."""
    return fold(tuple(spec_rules) + RUNC_DEFAULT_RULES, field, from_spec=len(spec_rules))


def fold(rules: tuple[DeviceRule, ...], field: str = "linux.resources.devices", from_spec: int | None = None
         ) -> DevicePolicy:
    """`from_spec`: how many leading rules came from the spec (the rest are named as defaults in errors)."""
    from_spec = len(rules) if from_spec is None else from_spec
    default_allow = False  # an empty list denies everything, as a fresh cgroup v1 child of a denying parent
    exceptions: dict[_Key, set[str]] = {}
    for i, rule in enumerate(rules):
        if rule.type == "a":  # "a" resets the whole list, whatever its numbers and access
            default_allow, exceptions = rule.allow, {}
            continue
        key = (rule.type, rule.major, rule.minor)
        access = set(rule.access)
        if rule.allow != default_allow:
            exceptions.setdefault(key, set()).update(access)
            continue
        where = f"{field}[{i}]" if i < from_spec else f"{field} (with runc's default rules)"
        _check_no_hole_in_wildcard(exceptions, key, access, where)
        remaining = exceptions.get(key, set()) - access
        if remaining:
            exceptions[key] = remaining
        else:
            exceptions.pop(key, None)
    ordered = sorted(exceptions.items(), key=lambda item: (item[0][0], _n(item[0][1]), _n(item[0][2])))
    return DevicePolicy(default_allow, tuple(
        DeviceRule(not default_allow, kind, major, minor, "".join(c for c in "rwm" if c in access))
        for (kind, major, minor), access in ordered))


def _check_no_hole_in_wildcard(exceptions: dict[_Key, set[str]], key: _Key, access: set[str], field: str) -> None:
    """cgroup v1 silently ignores removing part of a wildcard exception; runc refuses it, and so do we."""
    kind, major, minor = key
    for wider in ((kind, None, minor), (kind, major, None), (kind, None, None)):
        if wider != key and exceptions.get(wider, set()) & access:
            raise InvalidArgument(field, f"cannot punch a hole in the wildcard rule {_show(wider)} "
                                         f"{''.join(sorted(exceptions[wider]))}")


def _n(number: int | None) -> int:
    return -1 if number is None else number


def _show(key: _Key) -> str:
    kind, major, minor = key
    return f"{kind} {'*' if major is None else major}:{'*' if minor is None else minor}"
