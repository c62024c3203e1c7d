"""The one place that maps the error tree to gRPC status codes.

Policy errors fail the Check RPC, as opa-envoy-plugin does (it returns a plain Go error, which gRPC sends as
UNKNOWN; the recorded golden responses show exactly that), so Envoy applies ``failure_mode_allow`` and
``status_on_error``. Timeouts and unreachable engines get the more precise DEADLINE_EXCEEDED / UNAVAILABLE;
Envoy treats every non-OK RPC status alike.
"""

from __future__ import annotations

import grpc

from authz_ledger.errors import (
    AuthzLedgerError,
    BackpressureError,
    CallerNotAllowedError,
    ConfigError,
    InvalidRequestError,
    LedgerClosedError,
    LedgerCorruptError,
    LedgerError,
    NotFoundError,
    OutOfRangeError,
    PolicyError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    ProofError,
    RequestParseError,
    TooManyStreamsError,
)

_CODES: tuple[tuple[type[AuthzLedgerError], grpc.StatusCode], ...] = (
    # Most specific first: the first isinstance match wins.
    (PolicyTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (PolicyUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (PolicyError, grpc.StatusCode.UNKNOWN),
    (BackpressureError, grpc.StatusCode.UNAVAILABLE),
    (LedgerClosedError, grpc.StatusCode.UNAVAILABLE),
    (LedgerCorruptError, grpc.StatusCode.DATA_LOSS),  # read side: stored data that does not verify
    (LedgerError, grpc.StatusCode.UNAVAILABLE),
    (RequestParseError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProofError, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (TooManyStreamsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CallerNotAllowedError, grpc.StatusCode.PERMISSION_DENIED),
)


def status_for(error: AuthzLedgerError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def code_number(code: grpc.StatusCode) -> int:
    value: tuple[int, str] = code.value
    return value[0]


def abort(context: grpc.ServicerContext, error: AuthzLedgerError) -> None:
    """Set the RPC status from ``error`` (the handler then returns an empty message, which gRPC discards)."""
    context.set_code(status_for(error))
    context.set_details(f"{type(error).__name__}: {error}")


_CLIENT_ERRORS: dict[grpc.StatusCode, type[AuthzLedgerError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.DATA_LOSS: LedgerCorruptError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooManyStreamsError,
}


def error_from_status(code: grpc.StatusCode, details: str, where: str) -> AuthzLedgerError:
    """The client side of the mapping: a failed audit RPC as an error of the tree (``where`` names the server)."""
    cls = _CLIENT_ERRORS.get(code, LedgerError)
    return cls(f"{where} answered {code.name}: {details}")
