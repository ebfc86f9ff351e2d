"""The one check every id passes before it may name a file, a socket or a cgroup.

containerd's own rule (`pkg/identifiers`): letters and digits, single `.`, `_` or `-` between them, at most 76
characters. So `.`, `..`, `/`, NUL, whitespace and over-long ids are refused. containerd applies it to container and
exec ids and namespaces, but not to annotation values (CRI's sandbox-id), nor to requests sent straight to the shim
socket: rund validates them all at its edge, once, and builds paths only from validated ids.
"""
from __future__ import annotations

import re

from rund.errors import InvalidArgument

MAX_LENGTH = 76
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*")


def validate(value: object, what: str) -> str:
    """`value` if it is a valid identifier, else InvalidArgument naming `what` (e.g. "container id")."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > MAX_LENGTH:
        raise InvalidArgument(f"{what} is {len(value)} characters long, the limit is {MAX_LENGTH}")
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidArgument(f"{what} {value[:MAX_LENGTH]!r} is not a valid identifier: letters and digits, "
                              f"separated by single '.', '_' or '-'")
    return value


def validate_optional(value: str, what: str) -> str:
    """As validate, but "" (no exec id: the init process) passes."""
    return validate(value, what) if value else value
