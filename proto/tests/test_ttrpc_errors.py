"""Status codes <-> typed exceptions."""
from __future__ import annotations

import pytest

from proto import ttrpc

CLASSES = {
    1: ttrpc.Canceled, 2: ttrpc.Unknown, 3: ttrpc.InvalidArgument, 4: ttrpc.DeadlineExceeded, 5: ttrpc.NotFound,
    6: ttrpc.AlreadyExists, 7: ttrpc.PermissionDenied, 8: ttrpc.ResourceExhausted, 9: ttrpc.FailedPrecondition,
    10: ttrpc.Aborted, 11: ttrpc.OutOfRange, 12: ttrpc.Unimplemented, 13: ttrpc.Internal, 14: ttrpc.Unavailable,
    15: ttrpc.DataLoss, 16: ttrpc.Unauthenticated,
}


def test_code_values_are_google_rpc():
    assert [c.value for c in ttrpc.Code] == list(range(17))
    assert ttrpc.Code.CANCELED is ttrpc.Code.CANCELLED
    assert ttrpc.Code.UNAUTHENTICATED == 16


@pytest.mark.parametrize("code", sorted(CLASSES))
def test_error_for_every_code(code):
    err = ttrpc.error_for(code, f"message {code}")
    assert type(err) is CLASSES[code]
    assert err.code == code
    assert isinstance(err, ttrpc.TtrpcError)
    assert str(err) == err.message == f"message {code}"


def test_unknown_code_becomes_unknown_and_ok_is_not_an_error():
    assert type(ttrpc.error_for(99, "x")) is ttrpc.Unknown
    with pytest.raises(ValueError):
        ttrpc.error_for(0, "")


def test_connection_closed_is_unavailable():
    err = ttrpc.ConnectionClosed("gone")
    assert isinstance(err, ttrpc.Unavailable)
    assert err.code == ttrpc.Code.UNAVAILABLE
