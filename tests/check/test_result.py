"""The result contract against opa-envoy-plugin: every golden result, every key, every error message."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format

from authz_ledger.check.handler import _compact_json
from authz_ledger.check.result import (
    ResponseCache,
    check_response,
    fail_closed_response,
    is_envoy_status_code,
    request_parse_error_response,
)
from authz_ledger.errors import ConfigError, PolicyResultError, RequestParseError
from tests.conftest import VECTORS

GOLDEN = json.loads((VECTORS / "opa-envoy-golden.json").read_text())
RESULT_CASES = GOLDEN["result_cases"]
DECISION_ID = "0193f1e2-7c4a-7b1e-9d2f-3a4b5c6d7e8f"


def as_json(outcome: Any) -> dict[str, Any]:
    """The response as protobuf JSON with the decision id replaced like the golden file does."""
    doc = json_format.MessageToDict(outcome.response)
    metadata = doc.get("dynamicMetadata", {})
    if metadata.get("decision_id") == DECISION_ID:
        metadata["decision_id"] = "<uuid>"
    return doc


def respond(result: Any, *, dry_run: bool = False) -> Any:
    return check_response(result, decision_id=DECISION_ID, dry_run=dry_run)


def error_of(result: Any, *, dry_run: bool = False) -> str:
    with pytest.raises(PolicyResultError) as info:
        respond(result, dry_run=dry_run)
    return str(info.value)


# --- Golden cases -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", RESULT_CASES, ids=[c["name"] for c in RESULT_CASES])
def test_golden_result_case(case: dict[str, Any]) -> None:
    if "grpc_error" in case:
        # The plugin fails the RPC (UNKNOWN); we raise PolicyResultError, which the gRPC layer maps to it.
        with pytest.raises(PolicyResultError):
            respond(case["policy_result"])
        return
    outcome = respond(case["policy_result"])
    assert as_json(outcome) == case["response"]
    assert outcome.decision_id == DECISION_ID


@pytest.mark.parametrize(
    "case",
    [c for c in RESULT_CASES if "response" in c],
    ids=[c["name"] for c in RESULT_CASES if "response" in c],
)
def test_golden_outcome_meaning(case: dict[str, Any]) -> None:
    outcome = respond(case["policy_result"])
    status = case["response"].get("status", {}).get("code", 0)
    assert outcome.allowed is (status == 0)
    denied = case["response"].get("deniedResponse")
    expected_http = 200 if status == 0 else 403
    if denied is not None:
        expected_http = outcome.response.denied_response.status.code
    assert outcome.http_status == expected_http


# --- Keys ---------------------------------------------------------------------------------------------------


def test_boolean_true_has_no_http_response() -> None:
    outcome = respond(True)
    assert outcome.response.WhichOneof("http_response") is None
    assert (outcome.allowed, outcome.http_status) == (True, 200)


def test_boolean_false_is_permission_denied_without_http_response() -> None:
    outcome = respond(False)
    assert outcome.response.status.code == 7
    assert outcome.response.WhichOneof("http_response") is None
    assert (outcome.allowed, outcome.http_status) == (False, 403)


def test_every_allow_key_lands_in_the_ok_response() -> None:
    outcome = respond(
        {
            "allowed": True,
            "headers": {"x-b": "2", "x-a": ["1", "1b"]},
            "request_headers_to_remove": ["authorization"],
            "response_headers_to_add": [{"set-cookie": "a=1"}, {"set-cookie": "b=2"}],
            "query_parameters_to_set": {"q": ["x", "y"], "p": "1"},
            "query_parameters_to_remove": ["token"],
            "dynamic_metadata": {"tenant": "t1", "nested": {"list": [1, "a", None, True]}},
            "body": 5,  # deny-only: ignored, not validated
            "http_status": "nope",  # deny-only: ignored, not validated
        }
    )
    assert as_json(outcome) == {
        "status": {},
        "okResponse": {
            "headers": [
                {"header": {"key": "x-a", "value": "1"}},
                {"header": {"key": "x-a", "value": "1b"}},
                {"header": {"key": "x-b", "value": "2"}},
            ],
            "headersToRemove": ["authorization"],
            "responseHeadersToAdd": [
                {"header": {"key": "set-cookie", "value": "a=1"}},
                {"header": {"key": "set-cookie", "value": "b=2"}},
            ],
            "queryParametersToSet": [
                {"key": "p", "value": "1"},
                {"key": "q", "value": "x"},
                {"key": "q", "value": "y"},
            ],
            "queryParametersToRemove": ["token"],
        },
        "dynamicMetadata": {
            "decision_id": "<uuid>",
            "tenant": "t1",
            "nested": {"list": [1.0, "a", None, True]},
        },
    }


def test_every_deny_key_lands_in_the_denied_response() -> None:
    outcome = respond(
        {
            "allowed": False,
            "headers": [{"www-authenticate": "Bearer"}, {"x-reason": ["a", "b"]}],
            "body": '{"error": "no"}',
            "http_status": 429,
            "dynamic_metadata": {"why": "quota"},
            "request_headers_to_remove": 5,  # allow-only: ignored, not validated
            "query_parameters_to_set": "x",
        }
    )
    assert as_json(outcome) == {
        "status": {"code": 7},
        "deniedResponse": {
            "status": {"code": "TooManyRequests"},
            "headers": [
                {"header": {"key": "www-authenticate", "value": "Bearer"}},
                {"header": {"key": "x-reason", "value": "a"}},
                {"header": {"key": "x-reason", "value": "b"}},
            ],
            "body": '{"error": "no"}',
        },
        "dynamicMetadata": {"decision_id": "<uuid>", "why": "quota"},
    }
    assert (outcome.allowed, outcome.http_status) == (False, 429)


def test_header_options_leave_append_unset() -> None:
    options = respond({"allowed": True, "headers": {"x-m": ["1", "2"]}}).response.ok_response.headers
    assert [o.HasField("append") for o in options] == [False, False]
    assert [o.append_action for o in options] == [0, 0]


def test_empty_header_list_adds_nothing() -> None:
    assert as_json(respond({"allowed": True, "headers": {"x": []}}))["okResponse"] == {}


def test_decision_id_overrides_a_policy_key_of_that_name() -> None:
    outcome = respond({"allowed": True, "dynamic_metadata": {"decision_id": "forged"}})
    assert outcome.response.dynamic_metadata.fields["decision_id"].string_value == DECISION_ID


def test_object_result_without_metadata_still_carries_the_decision_id() -> None:
    assert as_json(respond({"allowed": False}))["dynamicMetadata"] == {"decision_id": "<uuid>"}


@pytest.mark.parametrize("code", [100, 200, 302, 401, 418 - 1, 421, 511])
def test_every_envoy_status_code_is_accepted(code: int) -> None:
    assert respond({"allowed": False, "http_status": code}).response.denied_response.status.code == code


# --- Dry run ------------------------------------------------------------------------------------------------


def test_dry_run_lets_a_boolean_deny_through_and_records_the_real_decision() -> None:
    outcome = respond(False, dry_run=True)
    assert as_json(outcome) == {"status": {}, "okResponse": {}, "dynamicMetadata": {"decision_id": "<uuid>"}}
    assert (outcome.allowed, outcome.http_status) == (False, 200)


def test_dry_run_drops_the_denied_response_but_keeps_metadata() -> None:
    outcome = respond(
        {
            "allowed": False,
            "http_status": 401,
            "headers": {"x": "1"},
            "body": "no",
            "dynamic_metadata": {"k": "v"},
        },
        dry_run=True,
    )
    assert as_json(outcome) == {
        "status": {},
        "okResponse": {},
        "dynamicMetadata": {"decision_id": "<uuid>", "k": "v"},
    }
    assert (outcome.allowed, outcome.http_status) == (False, 200)


def test_dry_run_leaves_an_allow_untouched() -> None:
    result = {"allowed": True, "headers": {"x": "1"}}
    assert as_json(respond(result, dry_run=True)) == as_json(respond(result))
    assert as_json(respond(True, dry_run=True)) == as_json(respond(True))


def test_dry_run_still_rejects_a_wrong_shape() -> None:
    assert error_of({"allowed": False, "http_status": 418}, dry_run=True).endswith("invalid HTTP status code 418")


# --- Errors: the plugin's messages --------------------------------------------------------------------------

STATUS = "failed to get response status"
HEADERS = "failed to get response headers"
REMOVE = "failed to get request headers to remove: type assertion error, expected request_headers_to_remove"
QSET = "failed to get request query parameters to set: type assertion error"
METADATA = "failed to get dynamic metadata: type assertion error, expected dynamic_metadata to be of type 'object'"
HTTP = "failed to get response http status"
PARSE_INT = f"{HTTP}: error converting JSON number to int: strconv.ParseInt: parsing"
ERRORS = {
    "a null result": (None, f"{STATUS}: illegal value for policy evaluation result: <nil>"),
    "an array result": ([True], f"{STATUS}: illegal value for policy evaluation result: []interface {{}}"),
    "a number result": (1, f"{STATUS}: illegal value for policy evaluation result: json.Number"),
    "an object without allowed": (
        {},
        f'{STATUS}: unable to determine evaluation result due to missing "allowed" key',
    ),
    "allowed as a number": (
        {"allowed": 1},
        f"{STATUS}: type assertion error, expected allowed to be of type 'boolean' but got 'json.Number'",
    ),
    "allowed as null": (
        {"allowed": None},
        f"{STATUS}: type assertion error, expected allowed to be of type 'boolean' but got '<nil>'",
    ),
    "headers as a string": (
        {"allowed": True, "headers": "x: 1"},
        f"{HEADERS}: type assertion error, expected headers to be of type 'object' but got 'string'",
    ),
    "a list of headers holding a string": (
        {"allowed": False, "headers": [{"a": "1"}, "b"]},
        f"{HEADERS}: type assertion error, expected headers to be of type 'object' but got 'string'",
    ),
    "a header value that is a number": (
        {"allowed": True, "headers": {"x-n": 5}},
        f"{HEADERS}: type assertion error for header 'x-n'",
    ),
    "a header value that is an object": (
        {"allowed": True, "headers": {"x-o": {}}},
        f"{HEADERS}: type assertion error for header 'x-o'",
    ),
    "a header value list holding a number": (
        {"allowed": True, "headers": {"x-l": ["a", 1]}},
        f"{HEADERS}: invalid value type json.Number for header 'x-l'",
    ),
    "a response header value that is a boolean": (
        {"allowed": True, "response_headers_to_add": {"x": True}},
        "failed to get response headers to send to client: type assertion error for header 'x'",
    ),
    "request headers to remove as a string": (
        {"allowed": True, "request_headers_to_remove": "cookie"},
        f"{REMOVE} to be of type '[]string' but got 'string'",
    ),
    "request headers to remove holding a number": (
        {"allowed": True, "request_headers_to_remove": ["a", 2]},
        f"{REMOVE} value to be of type 'string' but got 'json.Number'",
    ),
    "query parameters to remove as an object": (
        {"allowed": True, "query_parameters_to_remove": {}},
        "failed to get request query parameters to remove: type assertion error, expected "
        "query_parameters_to_remove to be of type '[]string' but got 'map[string]interface {}'",
    ),
    "query parameters to set as a list": (
        {"allowed": True, "query_parameters_to_set": ["a"]},
        f"{QSET}, expected query_parameters_to_set to be a map but got '[]interface {{}}'",
    ),
    "a query parameter value that is a number": (
        {"allowed": True, "query_parameters_to_set": {"a": 1}},
        f"{QSET}, expected value to be string or array but got 'json.Number'",
    ),
    "a query parameter list holding null": (
        {"allowed": True, "query_parameters_to_set": {"a": ["x", None]}},
        f"{QSET}: expected array element to be string but got '<nil>'",
    ),
    "dynamic metadata as a list": (
        {"allowed": True, "dynamic_metadata": []},
        f"{METADATA} but got '[]interface {{}}'",
    ),
    "dynamic metadata as null on a deny": (
        {"allowed": False, "dynamic_metadata": None},
        f"{METADATA} but got '<nil>'",
    ),
    "a body that is not a string": (
        {"allowed": False, "body": {"error": "no"}},
        "failed to get response body: type assertion error, expected body to be of type 'string' but got "
        "'map[string]interface {}'",
    ),
    "an http status as a string": (
        {"allowed": False, "http_status": "401"},
        f"{HTTP}: type assertion error, expected http_status to be of type 'number' but got 'string'",
    ),
    "an http status as a boolean": (
        {"allowed": False, "http_status": True},
        f"{HTTP}: type assertion error, expected http_status to be of type 'number' but got 'bool'",
    ),
    "an http status with a fraction": (
        {"allowed": False, "http_status": 401.5},
        f'{PARSE_INT} "401.5": invalid syntax',
    ),
    "an http status beyond int64": (
        {"allowed": False, "http_status": 2**70},
        f'{PARSE_INT} "{2**70}": value out of range',
    ),
    "an http status Go knows but Envoy does not": (
        {"allowed": False, "http_status": 418},
        "failed to get response http status: invalid HTTP status code 418",
    ),
    "an http status of zero": (
        {"allowed": False, "http_status": 0},
        "failed to get response http status: invalid HTTP status code 0",
    ),
    "a negative http status": (
        {"allowed": False, "http_status": -403},
        "failed to get response http status: invalid HTTP status code -403",
    ),
    "an http status in no table": (
        {"allowed": False, "http_status": 299},
        "failed to get response http status: invalid HTTP status code 299",
    ),
}


@pytest.mark.parametrize(("result", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_wrong_shapes_raise_the_plugin_message(result: Any, message: str) -> None:
    assert error_of(result) == message


# --- The response cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True], ids=["normally", "in dry-run"])
@pytest.mark.parametrize("case", RESULT_CASES, ids=[c["name"] for c in RESULT_CASES])
def test_a_cached_response_is_the_one_check_response_builds(case: dict[str, Any], dry_run: bool) -> None:
    cache = ResponseCache(dry_run=dry_run)
    result = case["policy_result"]
    if "grpc_error" in case:
        for _ in range(2):  # a wrong shape is never cached: it raises every time
            with pytest.raises(PolicyResultError):
                cache.check_response(result, _compact_json(result), decision_id=DECISION_ID)
        return
    expected = check_response(result, decision_id=DECISION_ID, dry_run=dry_run)
    for _ in range(2):  # the miss that builds it, then the hit that copies it
        outcome = cache.check_response(result, _compact_json(result), decision_id=DECISION_ID)
        assert outcome == expected
        assert outcome.response.SerializeToString(deterministic=True) == expected.response.SerializeToString(
            deterministic=True
        )


def test_each_cached_response_carries_its_own_decision_id_and_leaves_the_template_alone() -> None:
    cache = ResponseCache(dry_run=False)
    result = {"allowed": True, "headers": {"x-user": "alice"}, "dynamic_metadata": {"decision_id": "policy"}}
    first = cache.check_response(result, _compact_json(result), decision_id="id-1")
    first.response.ok_response.headers[0].header.value = "mallory"  # a caller changing its answer...
    second = cache.check_response(result, _compact_json(result), decision_id="id-2")
    assert first.response.dynamic_metadata.fields["decision_id"].string_value == "id-1"
    assert second.response.dynamic_metadata.fields["decision_id"].string_value == "id-2"
    assert second.response.ok_response.headers[0].header.value == "alice"  # ...does not change the next one


def test_an_infinity_and_a_null_never_share_a_cached_answer() -> None:
    """orjson writes inf (from a JSON 1e400) as null, so both results have the same JSON text."""
    cache = ResponseCache(dry_run=False)
    for value in (float("inf"), None, float("inf")):
        result = {"allowed": True, "dynamic_metadata": {"x": value}}
        got = cache.check_response(result, _compact_json(result), decision_id=DECISION_ID)
        assert got == check_response(result, decision_id=DECISION_ID, dry_run=False)


@pytest.mark.parametrize(
    ("results", "max_entries", "max_result_bytes", "cached"),
    [
        ([True, False, True], 8, 4096, 2),
        ([{"allowed": True, "headers": {"n": str(i)}} for i in range(5)], 3, 4096, 2),
        ([{"allowed": False, "body": "x" * 100}], 8, 64, 0),
    ],
    ids=["equal results share one entry", "a full cache starts over", "a large result is not kept"],
)
def test_the_cache_stays_within_its_bounds(
    results: list[Any], max_entries: int, max_result_bytes: int, cached: int
) -> None:
    cache = ResponseCache(dry_run=False, max_entries=max_entries, max_result_bytes=max_result_bytes)
    for result in results:
        outcome = cache.check_response(result, _compact_json(result), decision_id=DECISION_ID)
        assert outcome == check_response(result, decision_id=DECISION_ID, dry_run=False)
    assert len(cache._outcomes) == cached


def test_headers_are_checked_before_allow_only_keys() -> None:
    # The plugin's order: allowed, headers, dynamic_metadata, then the branch's own keys.
    result = {"allowed": True, "headers": 1, "dynamic_metadata": 1, "request_headers_to_remove": 1}
    assert error_of(result).startswith(HEADERS + ":")
    del result["headers"]
    assert error_of(result).startswith("failed to get dynamic metadata:")


def test_body_is_checked_before_http_status() -> None:
    assert error_of({"allowed": False, "body": 1, "http_status": 418}).startswith("failed to get response body:")


def test_status_code_table_is_envoys() -> None:
    assert is_envoy_status_code(403)
    assert not is_envoy_status_code(0)
    assert not is_envoy_status_code(418)


# --- Parse errors and fail-closed ---------------------------------------------------------------------------


def test_request_parse_error_response_matches_the_plugin() -> None:
    golden = next(c for c in GOLDEN["input_cases"] if c["name"] == "invalid JSON body")
    error = RequestParseError("invalid character 'n' looking for beginning of object key string")
    outcome = request_parse_error_response(error, decision_id=DECISION_ID)
    # Identical to the plugin but for one deliberate addition: decision_id in dynamic metadata, as on every
    # other answer, so that Envoy's access log joins the ledger entry of a malformed request too.
    got = json_format.MessageToDict(outcome.response)
    assert got.pop("dynamicMetadata") == {"decision_id": DECISION_ID}
    assert got == golden["response"]
    assert (outcome.allowed, outcome.http_status, outcome.decision_id) == (False, 400, DECISION_ID)


def test_fail_closed_response_is_unavailable_with_the_configured_status() -> None:
    outcome = fail_closed_response(decision_id=DECISION_ID, http_status=503, reason="LedgerWriteError: disk full")
    assert as_json(outcome) == {
        "status": {"code": 14, "message": "LedgerWriteError: disk full"},
        "deniedResponse": {"status": {"code": "ServiceUnavailable"}},
        "dynamicMetadata": {"decision_id": "<uuid>"},
    }
    assert (outcome.allowed, outcome.http_status) == (False, 503)


def test_fail_closed_reason_never_reaches_the_client_body() -> None:
    outcome = fail_closed_response(decision_id=DECISION_ID, http_status=403, reason="secret internals")
    assert outcome.response.denied_response.body == ""


@pytest.mark.parametrize("code", [0, 418, 999], ids=["status zero", "a status Envoy lacks", "a status in no table"])
def test_fail_closed_with_an_invalid_status_is_a_config_error(code: int) -> None:
    with pytest.raises(ConfigError):
        fail_closed_response(decision_id=DECISION_ID, http_status=code, reason="x")


def test_outcome_is_frozen() -> None:
    outcome = respond(True)
    with pytest.raises(AttributeError):
        outcome.allowed = False  # type: ignore[misc]
