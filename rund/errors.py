"""Typed errors of the host runtime. The shim maps each class to a ttrpc status code at its edge; nothing matches
errors by their text."""


class RundError(Exception):
    """Base of every error rund raises on purpose."""


class InvalidArgument(RundError):
    """Malformed input: a bad request, spec or config value."""


class NotFound(RundError):
    """An unknown container, exec or sandbox id."""


class AlreadyExists(RundError):
    """A duplicate container or exec id."""


class FailedPrecondition(RundError):
    """The object is in the wrong state for the request."""


class Unavailable(RundError):
    """A dependency is gone or not answering: the VM died, the guest agent stopped responding."""


class ResourceExhausted(RundError):
    """Out of something: disk, memory, pool capacity, slot size."""


class Unimplemented(RundError):
    """A request rund does not support (e.g. Checkpoint)."""
