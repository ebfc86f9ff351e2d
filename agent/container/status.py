"""Messages on the CLOEXEC socket between the agent and a child it is setting up.

Child -> agent: READY (setup done, waiting for START; may carry the pty master fd) or ERROR.
Agent -> child: START. The child's end closes on a successful execve, so EOF means "exec'd".
"""
import json

from ..errors import AgentError, InvalidArgument, SetupFailed

READY = b"ready"
START = b"start"


def encode_error(exc: BaseException) -> bytes:
    if isinstance(exc, InvalidArgument):
        body = {"kind": "invalid", "field": exc.field, "problem": exc.problem}
    elif isinstance(exc, SetupFailed):
        body = {"kind": "setup", "step": exc.step, "problem": exc.problem}
    else:
        body = {"kind": "setup", "step": "container setup", "problem": f"{type(exc).__name__}: {exc}"}
    return b"error" + json.dumps(body).encode()


def decode(message: bytes) -> AgentError | None:
    """None for READY; the child's error otherwise."""
    if message == READY:
        return None
    if message.startswith(b"error"):
        body = json.loads(message[5:])
        if body["kind"] == "invalid":
            return InvalidArgument(body["field"], body["problem"])
        return SetupFailed(body["step"], body["problem"])
    return SetupFailed("container setup", f"unexpected message from the child: {message[:64]!r}")
