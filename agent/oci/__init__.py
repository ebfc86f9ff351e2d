"""OCI runtime-spec documents (JSON bytes) validated into frozen dataclasses. Pure: no I/O."""
