"""The error tree: every class has its own stable code, and the one gRPC mapping covers each of them."""

from __future__ import annotations

import inspect
import re

import grpc
import pytest

from authz_ledger import errors
from authz_ledger.rpc import status

CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.AuthzLedgerError) and cls.__module__ == errors.__name__
]


def test_every_error_class_has_a_code_of_its_own() -> None:
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes)), sorted(codes)
    for cls in CLASSES:
        assert "code" in vars(cls), f"{cls.__name__} inherits its parent's code"
        assert re.fullmatch(r"[a-z][a-z_]*", cls.code), cls.code


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(errors.LedgerMapFullError("full"), grpc.StatusCode.UNAVAILABLE, id="a full map is unavailable"),
        pytest.param(
            errors.PolicyTimeoutError("slow"), grpc.StatusCode.DEADLINE_EXCEEDED, id="a slow policy is a deadline"
        ),
        pytest.param(errors.RequestParseError("bad"), grpc.StatusCode.INVALID_ARGUMENT, id="a bad request is invalid"),
        pytest.param(errors.SigningKeyError("no key"), grpc.StatusCode.INTERNAL, id="anything unmapped is internal"),
    ],
)
def test_the_status_follows_the_class_not_the_message(
    error: errors.AuthzLedgerError, expected: grpc.StatusCode
) -> None:
    assert status.status_for(error) == expected


def test_a_full_map_is_still_a_write_error_for_callers_that_only_know_that() -> None:
    assert issubclass(errors.LedgerMapFullError, errors.LedgerWriteError)
