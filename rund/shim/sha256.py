"""SHA-256 for the thin `start` without `hashlib`, which loads OpenSSL's libcrypto first (~1-2 ms of a process that
lives ~10 ms): the interpreter's own implementation, the same digest."""
from __future__ import annotations

try:
    from _sha256 import sha256      # Python 3.11
except ImportError:                 # pragma: no cover - 3.12 renamed it; any other build: hashlib's
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

__all__ = ["sha256"]
