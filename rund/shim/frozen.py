"""A frozen record for the modules the thin `start` imports (flags.py, peer.py): what a frozen dataclass gives
(fields set once, compared and hashed by value, a readable repr) without `dataclasses` (inspect, re, ...: ~15 ms of
imports) or a namedtuple (`collections` and the class it compiles: ~1.5 ms)."""
from __future__ import annotations


class Frozen:
    __slots__ = ()      # a subclass names its fields here, in its __init__'s order

    def _set(self, *values) -> None:
        """For __init__: the fields' values, in __slots__ order."""
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name}")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name}")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._values() == self._values()

    def __hash__(self):
        return hash(self._values())

    def __reduce__(self):           # copy and pickle through __init__ (its parameters are the fields, in order)
        return type(self), self._values()

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"
