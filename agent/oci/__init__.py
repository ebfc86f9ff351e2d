"""OCI runtime-spec documents (JSON bytes) validated into immutable NamedTuples (cheaper to define than dataclasses under TCG). Pure: no I/O."""
