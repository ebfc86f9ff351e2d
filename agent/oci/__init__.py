"""OCI runtime-spec documents (JSON bytes) validated into immutable NamedTuples. Pure: no I/O.

NamedTuple, not dataclass: each dataclass costs tens of ms to define under TCG at agent start."""
