"""Typed agent errors. The ttrpc edge (agent/service.py) maps each kind to a status code."""


class AgentError(Exception):
    """Base of every error the agent answers with on purpose."""


class InvalidArgument(AgentError):
    """A request field (often inside an OCI document) is invalid; `field` names it."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(AgentError):
    """An unknown container or exec id."""


class AlreadyExists(AgentError):
    """An id that is already in use."""


class FailedPrecondition(AgentError):
    """The object is in the wrong state for the request."""


class SetupFailed(AgentError):
    """An operating-system step failed that no request field is to blame for."""

    def __init__(self, step: str, problem: str):
        super().__init__(f"{step}: {problem}")
        self.step = step
        self.problem = problem
