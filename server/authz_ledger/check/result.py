"""The result contract: a policy decision becomes the ``CheckResponse`` opa-envoy-plugin would send.

Facts from the plugin's ``internal/internal.go`` (``check``) and ``envoyauth/response.go``.

* ``true`` -> status OK, no http_response; ``false`` -> PERMISSION_DENIED, no http_response (Envoy sends 403).
* An object needs a boolean ``allowed``. Allowed: ``OkHttpResponse`` with ``headers``,
  ``request_headers_to_remove`` (as headers_to_remove), ``response_headers_to_add``,
  ``query_parameters_to_set`` and ``query_parameters_to_remove``. Denied: ``DeniedHttpResponse`` with
  ``headers``, ``body`` and ``http_status`` (default 403; must be a code of Envoy's ``type.v3.StatusCode``).
  The other branch's keys are ignored, not validated. ``dynamic_metadata`` (an object) becomes the response's
  dynamic metadata either way.
* Headers are ``{name: value | [values]}`` or a list of such objects; each value is one HeaderValueOption
  with ``append`` unset. The plugin walks Go maps (random order); we emit names sorted, so one decision
  always gives the same bytes to the ledger.
* ``decision_id`` is always set in dynamic metadata (overriding a policy key of that name).
* Dry-run turns a non-OK response into OK with an empty OkHttpResponse, keeping dynamic metadata;
  :attr:`Outcome.allowed` stays the real decision. Shape errors are raised even in dry-run, as in the plugin.
* A wrong shape raises :class:`PolicyResultError` with the plugin's message, including its ``failed to get
  ...:`` prefix; the Check RPC then fails with UNKNOWN as the plugin's does (the gRPC layer maps it). Value
  types are named as the plugin names the Go values (``json.Number``, ``string``, ``[]interface {}``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2  # type: ignore[import-untyped, unused-ignore]
from google.rpc import code_pb2, status_pb2

from authz_ledger.errors import ConfigError, PolicyResultError, RequestParseError

__all__ = [
    "Outcome",
    "ResponseCache",
    "check_response",
    "fail_closed_response",
    "is_envoy_status_code",
    "request_parse_error_response",
]

_OK = code_pb2.OK
_PERMISSION_DENIED = code_pb2.PERMISSION_DENIED
_UNAVAILABLE = code_pb2.UNAVAILABLE

# Envoy's StatusCode enum without Empty (0): the plugin requires both http.StatusText(code) != "" and a name
# in this enum; every named code except 0 has a Go status text.
_ENVOY_STATUS_CODES = frozenset(v.number for v in http_status_pb2.StatusCode.DESCRIPTOR.values if v.number != 0)


def is_envoy_status_code(code: int) -> bool:
    """Whether ``code`` is an HTTP status Envoy's ext_authz DeniedHttpResponse can carry."""
    return code in _ENVOY_STATUS_CODES


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the Check RPC answers, and what it means.

    ``allowed`` is the policy's real decision (before dry-run; False for parse errors and fail-closed).
    ``http_status`` is what the client gets from Envoy's side of the check: 200 whenever the request is let
    through (allowed, or dry-run), else the denied status (403 unless the policy chose one).
    """

    response: Any  # envoy.service.auth.v3.CheckResponse
    allowed: bool
    http_status: int
    decision_id: str


def _go_type(value: Any) -> str:
    """The Go type name (``%T``) of the value the plugin would hold for this JSON value."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "json.Number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def _go_number_text(value: int | float) -> str:
    # json.Number keeps the literal; a Python float prints its shortest round-trip form.
    return str(value) if isinstance(value, int) else repr(value)


def _expected(wrap: str, expectation: str, value: Any, sep: str = ",") -> PolicyResultError:
    """The plugin's ``type assertion error`` messages, behind their ``failed to get ...`` wrap."""
    return PolicyResultError(f"{wrap}: type assertion error{sep} expected {expectation} but got '{_go_type(value)}'")


class _NotHeaders(ValueError):
    def __init__(self, value: Any) -> None:
        super().__init__(f"type assertion error, expected headers to be of type 'object' but got '{_go_type(value)}'")


def _header_options(value: Any, out: list[Any]) -> None:
    """transformAnyInputToHeadersBag: an object, or a list of objects."""
    if isinstance(value, dict):
        _header_map(value, out)
        return
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                raise _NotHeaders(item)
            _header_map(item, out)
        return
    raise _NotHeaders(value)


def _header_map(headers: dict[str, Any], out: list[Any]) -> None:
    option, header = base_pb2.HeaderValueOption, base_pb2.HeaderValue
    for key in sorted(headers):
        value = headers[key]
        if isinstance(value, str):
            out.append(option(header=header(key=key, value=value)))
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, str):
                    raise ValueError(f"invalid value type {_go_type(item)} for header '{key}'")
                out.append(option(header=header(key=key, value=item)))
        else:
            raise ValueError(f"type assertion error for header '{key}'")


def _headers(decision: dict[str, Any], key: str, wrap: str) -> list[Any]:
    out: list[Any] = []
    if key in decision:
        try:
            _header_options(decision[key], out)
        except ValueError as exc:
            raise PolicyResultError(f"{wrap}: {exc}") from None
    return out


def _strings(decision: dict[str, Any], key: str, wrap: str) -> list[str]:
    """getStringSliceFromDecision."""
    if key not in decision:
        return []
    value = decision[key]
    if not isinstance(value, list):
        raise _expected(wrap, f"{key} to be of type '[]string'", value)
    for item in value:
        if not isinstance(item, str):
            raise _expected(wrap, f"{key} value to be of type 'string'", item)
    return value


def _query_parameters_to_set(decision: dict[str, Any]) -> list[Any]:
    wrap = "failed to get request query parameters to set"
    if "query_parameters_to_set" not in decision:
        return []
    params = decision["query_parameters_to_set"]
    if not isinstance(params, dict):
        raise _expected(wrap, "query_parameters_to_set to be a map", params)
    out: list[Any] = []
    parameter = base_pb2.QueryParameter
    for key in sorted(params):
        value = params[key]
        if isinstance(value, str):
            out.append(parameter(key=key, value=value))
        elif isinstance(value, list):
            for item in value:
                if not isinstance(item, str):
                    raise _expected(wrap, "array element to be string", item, sep=":")
                out.append(parameter(key=key, value=item))
        else:
            raise _expected(wrap, "value to be string or array", value)
    return out


def _dynamic_metadata(decision: dict[str, Any]) -> Any:
    wrap = "failed to get dynamic metadata"
    metadata = struct_pb2.Struct()
    if "dynamic_metadata" in decision:
        value = decision["dynamic_metadata"]
        if not isinstance(value, dict):
            raise _expected(wrap, "dynamic_metadata to be of type 'object'", value)
        try:
            metadata.update(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PolicyResultError(f"{wrap}: {exc}") from None
    return metadata


def _http_status(decision: dict[str, Any]) -> int:
    """GetResponseHTTPStatus + GetResponseEnvoyHTTPStatus."""
    wrap = "failed to get response http status"
    if "http_status" not in decision:
        return 403
    value = decision["http_status"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _expected(wrap, "http_status to be of type 'number'", value)
    text = _go_number_text(value)
    convert = "error converting JSON number to int: strconv.ParseInt"
    if isinstance(value, float):
        # json.Number.Int64() is strconv.ParseInt on the literal: 401.0 and 4e2 are not integers to Go.
        raise PolicyResultError(f'{wrap}: {convert}: parsing "{text}": invalid syntax')
    if not -(2**63) <= value < 2**63:
        raise PolicyResultError(f'{wrap}: {convert}: parsing "{text}": value out of range')
    if value not in _ENVOY_STATUS_CODES:
        raise PolicyResultError(f"{wrap}: invalid HTTP status code {value}")
    return value


def _allowed(result: Any) -> bool:
    """IsAllowed."""
    wrap = "failed to get response status"
    if isinstance(result, bool):
        return result
    if isinstance(result, dict):
        if "allowed" not in result:
            raise PolicyResultError(f'{wrap}: unable to determine evaluation result due to missing "allowed" key')
        allowed = result["allowed"]
        if not isinstance(allowed, bool):
            raise _expected(wrap, "allowed to be of type 'boolean'", allowed)
        return allowed
    raise PolicyResultError(f"{wrap}: illegal value for policy evaluation result: {_go_type(result)}")


def check_response(result: Any, *, decision_id: str, dry_run: bool) -> Outcome:
    """The CheckResponse for a policy result (the decoded JSON value of the decision document).

    Raises PolicyResultError where the plugin fails the RPC; checks run in the plugin's order, so the first
    error reported is the plugin's.
    """
    allowed = _allowed(result)
    response = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=_OK if allowed else _PERMISSION_DENIED))
    http_status = 200 if allowed else 403

    if isinstance(result, dict):
        headers = _headers(result, "headers", "failed to get response headers")
        metadata = _dynamic_metadata(result)
        response.dynamic_metadata.CopyFrom(metadata)
        if allowed:
            ok = external_auth_pb2.OkHttpResponse(
                headers=headers,
                headers_to_remove=_strings(
                    result, "request_headers_to_remove", "failed to get request headers to remove"
                ),
                response_headers_to_add=_headers(
                    result, "response_headers_to_add", "failed to get response headers to send to client"
                ),
                query_parameters_to_remove=_strings(
                    result, "query_parameters_to_remove", "failed to get request query parameters to remove"
                ),
                query_parameters_to_set=_query_parameters_to_set(result),
            )
            response.ok_response.CopyFrom(ok)
        else:
            body = result.get("body", "")
            if not isinstance(body, str):
                raise _expected("failed to get response body", "body to be of type 'string'", body)
            http_status = _http_status(result)
            response.denied_response.CopyFrom(
                external_auth_pb2.DeniedHttpResponse(
                    status=http_status_pb2.HttpStatus(code=http_status), headers=headers, body=body
                )
            )

    if dry_run and not allowed:
        # The plugin's dry-run: let the request through, keep the metadata, record the real decision.
        response.status.CopyFrom(status_pb2.Status(code=_OK))
        response.ok_response.CopyFrom(external_auth_pb2.OkHttpResponse())
        http_status = 200

    response.dynamic_metadata.fields["decision_id"].string_value = decision_id
    return Outcome(response=response, allowed=allowed, http_status=http_status, decision_id=decision_id)


class ResponseCache:
    """The CheckResponse of recently seen policy results, keyed by the result's compact JSON.

    Most Checks repeat a handful of decisions (the same allow with the same headers for the same caller), and
    building one costs ~13 µs (HeaderValueOptions, the metadata Struct), copying a finished one ~1.5 µs. Equal
    JSON text is an equal result, so the cached answer is exactly what :func:`check_response` would build; only
    ``decision_id`` differs per Check and is set on the copy. Not cached: results that fail the contract (every
    such Check raises anew) and results whose JSON holds ``null`` (orjson writes NaN and infinities as null, so
    that text may stand for another result). Bounded: when ``max_entries`` is reached the cache starts over,
    which is cheap, takes no lock and keeps memory at ``max_entries`` results of at most ``max_result_bytes``.
    """

    def __init__(self, *, dry_run: bool, max_entries: int = 1024, max_result_bytes: int = 4096) -> None:
        self.dry_run = dry_run
        self.max_entries = max_entries
        self.max_result_bytes = max_result_bytes
        self._outcomes: dict[bytes, Outcome] = {}

    def check_response(self, result: Any, result_json: bytes, *, decision_id: str) -> Outcome:
        """:func:`check_response` for ``result`` (whose compact JSON is ``result_json``)."""
        template = self._outcomes.get(result_json)
        if template is None:
            if len(result_json) > self.max_result_bytes or b"null" in result_json:
                # null may stand for NaN or an infinity (orjson writes them so): that key is not one result.
                return check_response(result, decision_id=decision_id, dry_run=self.dry_run)
            template = check_response(result, decision_id="", dry_run=self.dry_run)
            if len(self._outcomes) >= self.max_entries:
                self._outcomes = {}
            self._outcomes[result_json] = template
        response = external_auth_pb2.CheckResponse()
        response.CopyFrom(template.response)  # the template is shared: never hand it out or change it
        response.dynamic_metadata.fields["decision_id"].string_value = decision_id
        return Outcome(response, template.allowed, template.http_status, decision_id)


def request_parse_error_response(error: RequestParseError, *, decision_id: str) -> Outcome:
    """The plugin's answer when the input document cannot be built: a normal response, not an RPC error.

    PERMISSION_DENIED with ``request_parse_error: <message>`` as both the status message and the 400 body.
    One deliberate addition: the plugin sends no dynamic metadata here (DynamicMetadata: nil), but a malformed
    request is exactly the one an operator wants to find in the ledger from Envoy's access log, so decision_id
    is set as on every other answer. Envoy ignores metadata it does not log; policies never see it.
    """
    message = f"request_parse_error: {error}"
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_PERMISSION_DENIED, message=message),
        denied_response=external_auth_pb2.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=400), body=message),
    )
    response.dynamic_metadata.fields["decision_id"].string_value = decision_id
    return Outcome(response=response, allowed=False, http_status=400, decision_id=decision_id)


def request_too_large_response(message: str, *, decision_id: str) -> Outcome:
    """A Check larger than ``server.max_recv_msg_size``: denied with 413, as a parse error is with 400 (the
    plugin's gRPC server would refuse the call at the transport instead, leaving Envoy only its failure mode)."""
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_PERMISSION_DENIED, message=message),
        denied_response=external_auth_pb2.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=413), body=message),
    )
    response.dynamic_metadata.fields["decision_id"].string_value = decision_id
    return Outcome(response=response, allowed=False, http_status=413, decision_id=decision_id)


def fail_closed_response(*, decision_id: str, http_status: int, reason: str) -> Outcome:
    """Deny because the decision cannot be recorded (ledger full, closed or failing); no plugin equivalent.

    Status UNAVAILABLE (14): Envoy denies on any non-OK status whatever its failure_mode_allow, and sends the
    DeniedHttpResponse's status. ``reason`` goes only into the gRPC status message (Envoy does not forward
    it), never to the client. decision_id is in dynamic metadata so access logs can join on it. Raises
    ConfigError if ``http_status`` is not a status Envoy accepts.
    """
    if not is_envoy_status_code(http_status):
        raise ConfigError(f"fail-closed HTTP status {http_status} is not one Envoy's ext_authz can send")
    response = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_UNAVAILABLE, message=reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(status=http_status_pb2.HttpStatus(code=http_status)),
    )
    response.dynamic_metadata.fields["decision_id"].string_value = decision_id
    return Outcome(response=response, allowed=False, http_status=http_status, decision_id=decision_id)
