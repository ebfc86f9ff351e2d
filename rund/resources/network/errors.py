"""Errors of the pod network plumbing (a FailedPrecondition for containerd: the netns is not what CNI should make)."""
from rund.errors import FailedPrecondition


class NetworkError(FailedPrecondition):
    """The pod's network namespace cannot be joined, has no usable interface, or refuses a tap or a filter."""
