"""The shim binary's command line, as containerd passes it (Go `flag` syntax: single-dash long flags, `-k v` or
`-k=v`, the action last): `-namespace NS -address GRPC -publish-binary BIN -id ID [-bundle B] [-debug] start|delete`.
"""
from __future__ import annotations

import os

from rund.errors import InvalidArgument
from rund.shim.frozen import Frozen

ACTIONS = ("start", "delete", "serve")
_VALUE_FLAGS = {"namespace", "address", "publish-binary", "id", "bundle", "socket"}
_BOOL_FLAGS = {"debug", "v", "version", "info"}


class ShimArgs(Frozen):     # not a dataclass: the thin `start` parses its argv here (frozen.py)
    __slots__ = ("action", "namespace", "address", "publish_binary", "id", "bundle", "socket", "debug", "version",
                 "info")

    def __init__(self, action: str, namespace: str = "", address: str = "", publish_binary: str = "", id: str = "",
                 bundle: str = "", socket: str = "", debug: bool = False, version: bool = False, info: bool = False):
        """action: start | delete | serve ("serve" is our own daemon child); address: containerd's gRPC socket (a
        plain path)."""
        self._set(action, namespace, address, publish_binary, id, bundle, socket, debug, version, info)

    @property
    def ttrpc_address(self) -> str:
        """containerd's ttrpc socket for events: $TTRPC_ADDRESS, else `<address>.ttrpc` (1.6's rule)."""
        return os.environ.get("TTRPC_ADDRESS") or (self.address + ".ttrpc" if self.address else "")


def parse(argv: list[str]) -> ShimArgs:
    values: dict[str, object] = {}
    action = ""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and arg not in ("-", "--"):
            name, eq, inline = arg.lstrip("-").partition("=")
            if name in _BOOL_FLAGS:
                values[name] = (inline.lower() not in ("false", "0")) if eq else True
            elif name in _VALUE_FLAGS:
                if eq:
                    values[name] = inline
                elif i + 1 < len(argv):
                    i += 1
                    values[name] = argv[i]
                else:
                    raise InvalidArgument(f"flag -{name} needs a value")
            else:
                raise InvalidArgument(f"unknown flag -{name}")
        elif not action:
            action = arg
        else:
            raise InvalidArgument(f"unexpected argument {arg!r}")
        i += 1
    if values.get("v") or values.get("version"):
        return ShimArgs(action=action or "version", version=True)
    if action not in ACTIONS and not values.get("info"):
        raise InvalidArgument(f"action must be one of {', '.join(ACTIONS[:2])}, got {action!r}")
    return ShimArgs(
        action=action, namespace=str(values.get("namespace", "")), address=str(values.get("address", "")),
        publish_binary=str(values.get("publish-binary", "")), id=str(values.get("id", "")),
        bundle=str(values.get("bundle", "")), socket=str(values.get("socket", "")),
        debug=bool(values.get("debug", False)), info=bool(values.get("info", False)))
