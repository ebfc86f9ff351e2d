"""The ttrpc edge: typed agent errors become their status codes; any other exception is Internal and logged."""
import pytest

from agent import errors
from agent.service import edge
from proto import ttrpc


class Handlers:
    def __init__(self, exc):
        self.exc = exc

    @edge
    async def Method(self, ctx, req):
        raise self.exc


@pytest.mark.parametrize("exc, expected", [
    (errors.InvalidArgument("process.cwd", "bad"), ttrpc.InvalidArgument),
    (errors.NotFound("x"), ttrpc.NotFound),
    (errors.AlreadyExists("x"), ttrpc.AlreadyExists),
    (errors.FailedPrecondition("x"), ttrpc.FailedPrecondition),
    (errors.SetupFailed("mount", "EPERM"), ttrpc.Unknown),
    (KeyError("bug"), ttrpc.Internal),
])
async def test_errors_map_to_ttrpc_codes(exc, expected, caplog):
    with pytest.raises(expected) as info:
        await Handlers(exc).Method(None, None)
    assert type(info.value) is expected
    if expected is ttrpc.Internal:
        assert "Method crashed" in caplog.text
    else:
        assert info.value.message == str(exc)


class DeviceRuleInvalid(errors.InvalidArgument):
    """A subclass the edge has no entry for: it answers as its nearest mapped base."""


class NewKind(errors.AgentError):
    pass


@pytest.mark.parametrize("exc, expected", [
    (DeviceRuleInvalid("linux.resources.devices[0]", "bad"), ttrpc.InvalidArgument),
    (NewKind("x"), ttrpc.Unknown),
])
async def test_error_subclasses_map_by_their_base(exc, expected):
    with pytest.raises(expected) as info:
        await Handlers(exc).Method(None, None)
    assert type(info.value) is expected and info.value.message == str(exc)
