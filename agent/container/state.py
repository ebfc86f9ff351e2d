"""A container's lifecycle states, as runc names them."""
import enum


class ContainerState(enum.Enum):
    CREATED = "created"   # init is set up and waits for StartContainer
    RUNNING = "running"   # init exec'd
    STOPPED = "stopped"   # init exited

    def __str__(self) -> str:
        return self.value
