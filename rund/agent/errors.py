"""ttrpc statuses from the agent -> rund's typed errors (the original stays as __cause__)."""
from proto import ttrpc
from rund import errors


class AgentFailed(errors.RundError):
    """The agent answered Unknown or Internal: a setup step in the guest failed, or an agent bug."""


class AgentTimeout(errors.Unavailable):
    """The agent did not answer within the call's deadline (a hung, stopped or overloaded guest)."""


_BY_TTRPC = {
    ttrpc.InvalidArgument: errors.InvalidArgument,
    ttrpc.NotFound: errors.NotFound,
    ttrpc.AlreadyExists: errors.AlreadyExists,
    ttrpc.FailedPrecondition: errors.FailedPrecondition,
    ttrpc.Unavailable: errors.Unavailable,        # includes ConnectionClosed
    ttrpc.DeadlineExceeded: AgentTimeout,         # the agent did not answer in time
    ttrpc.ResourceExhausted: errors.ResourceExhausted,
    ttrpc.Unimplemented: errors.Unimplemented,
}


def translate(exc: ttrpc.TtrpcError) -> errors.RundError:
    for ttrpc_class in type(exc).__mro__:
        rund_class = _BY_TTRPC.get(ttrpc_class)
        if rund_class is not None:
            return rund_class(f"agent: {exc.message}")
    return AgentFailed(f"agent: {exc.message}")
