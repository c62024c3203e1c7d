"""Redaction: secrets never reach the ledger in plaintext, yet stay correlatable."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from authz_ledger.record.redact import DEFAULT_DIGEST_HEADERS, DEFAULT_DIGEST_QUERY_PARAMS, RedactionRules, Redactor

SECRET = b"k" * 32


def doc(headers: dict[str, str], path: str = "/x", **extra: Any) -> dict[str, Any]:
    http: dict[str, Any] = {"headers": headers, "path": path, "method": "GET"}
    http.update(extra)
    return {
        "attributes": {"request": {"http": http}},
        "parsed_path": ["x"],
        "parsed_query": {},
        "parsed_body": None,
    }


def test_default_secret_headers_are_digested_and_equal_values_correlate() -> None:
    r = Redactor(RedactionRules(), SECRET)
    a = r.redact_input(doc({"authorization": "Bearer tok", "cookie": "s=1", "x-user": "alice"}))
    b = r.redact_input(doc({"authorization": "Bearer tok"}))
    h = a["attributes"]["request"]["http"]["headers"]
    assert h["x-user"] == "alice"
    assert h["authorization"].startswith("hmac-sha256:")
    assert h["authorization"] == b["attributes"]["request"]["http"]["headers"]["authorization"]
    assert "tok" not in json.dumps(a) and "s=1" not in json.dumps(a)


def test_the_policy_view_is_not_modified() -> None:
    original = doc({"authorization": "Bearer tok"}, body='{"a":1}')
    before = copy.deepcopy(original)
    Redactor(RedactionRules(), SECRET).redact_input(original)
    assert original == before


def test_a_document_without_secrets_is_returned_as_is() -> None:
    d = doc({"x-user": "alice"})
    assert Redactor(RedactionRules(), SECRET).redact_input(d) is d


@pytest.mark.parametrize(
    ("body_rule", "expect_body"),
    [
        pytest.param("digest", "hmac", id="bodies are digested by default"),
        pytest.param("remove", None, id="bodies can be removed"),
        pytest.param("unsafe_keep", "secret-body", id="bodies are kept only with the unsafe setting"),
    ],
)
def test_request_bodies(body_rule: str, expect_body: str | None) -> None:
    rules = RedactionRules(body=body_rule)
    d = doc({}, body="secret-body")
    d["parsed_body"] = {"password": "secret-body"}
    out = Redactor(rules, SECRET).redact_input(d)
    http = out["attributes"]["request"]["http"]
    if expect_body is None:
        assert "body" not in http
    else:
        assert expect_body in http["body"]
    if body_rule != "unsafe_keep":
        assert "secret-body" not in json.dumps(out)


def test_sensitive_query_parameters_are_digested_in_path_query_and_parsed_query() -> None:
    r = Redactor(RedactionRules(), SECRET)
    d = doc({}, path="/cb?access_token=abc123&x=1", query="access_token=abc123&x=1")
    d["parsed_query"] = {"access_token": ["abc123"], "x": ["1"]}
    out = r.redact_input(d)
    assert "abc123" not in json.dumps(out)
    assert out["parsed_query"]["x"] == ["1"]
    assert r.redact_path("/cb?access_token=abc123&x=1").endswith("&x=1")
    assert "abc123" not in r.redact_path("/cb?access_token=abc123&x=1")


def test_configured_headers_can_be_removed() -> None:
    rules = RedactionRules.build([], ["x-internal"], [], "digest", name_pattern="", detect_values=False)
    out = Redactor(rules, SECRET).redact_input(doc({"x-internal": "v", "authorization": "plain"}))
    headers = out["attributes"]["request"]["http"]["headers"]
    assert "x-internal" not in headers
    assert headers["authorization"] == "plain"  # no list, no pattern, no value detection: nothing digested


def test_a_percent_encoded_sensitive_parameter_name_is_still_digested() -> None:
    r = Redactor(RedactionRules(), SECRET)
    assert "abc123" not in r.redact_path("/cb?access%5Ftoken=abc123")
    assert r.redact_path("/plain?x=1&y=2") == "/plain?x=1&y=2"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/x?Access_Token=S3CRET", id="a parameter name in another case"),
        pytest.param("/x?a=1;access_token=S3CRET", id="a parameter after a semicolon"),
        pytest.param("/x?API_KEY=S3CRET&b=2", id="an upper-case api key"),
    ],
)
def test_sensitive_query_parameters_are_found_whatever_their_case_or_separator(path: str) -> None:
    assert "S3CRET" not in Redactor(RedactionRules(), SECRET).redact_path(path)


def test_headers_sent_as_envoys_raw_header_map_are_redacted_too() -> None:
    import base64

    raw = base64.b64encode(b"Bearer SECRET-TOKEN").decode()
    d = doc({})
    d["attributes"]["request"]["http"]["headerMap"] = {
        "headers": [
            {"key": "Authorization", "rawValue": raw},
            {"key": "cookie", "value": "sid=COOKIE-SECRET"},
            {"key": ":path", "value": "/x?access_token=PATH-SECRET"},
            {"key": "x-user", "value": "alice"},
        ]
    }
    out = json.dumps(Redactor(RedactionRules(), SECRET).redact_input(d))
    for secret in (raw, "COOKIE-SECRET", "PATH-SECRET"):
        assert secret not in out
    assert "alice" in out


def test_header_names_in_another_case_are_redacted() -> None:
    out = Redactor(RedactionRules(), SECRET).redact_input(doc({"Authorization": "Bearer MIXED-CASE"}))
    assert "MIXED-CASE" not in json.dumps(out)


def test_quoted_request_text_in_error_messages_is_digested() -> None:
    r = Redactor(RedactionRules(), SECRET)
    msg = r.redact_message('malformed MIME header: missing colon: "password=Hunter2-SECRET"')
    assert "Hunter2-SECRET" not in msg
    assert msg.startswith('malformed MIME header: missing colon: "hmac-sha256:')
    assert r.redact_message("invalid character 'n' looking for beginning of value") == (
        "invalid character 'n' looking for beginning of value"
    )


# --- Policy results -----------------------------------------------------------------------------------------

TOKEN = "Bearer upstream-secret-token"
COOKIE = "session=server-side-secret"


def digest_of(value: str) -> str:
    return Redactor(RedactionRules(), SECRET).digest(value)


@pytest.mark.parametrize(
    ("result", "stored"),
    [
        (
            {"allowed": True, "headers": {"authorization": TOKEN, "x-user": "alice"}},
            {"allowed": True, "headers": {"authorization": digest_of(TOKEN), "x-user": "alice"}},
        ),
        (
            {"allowed": True, "headers": {"Authorization": [TOKEN, "Basic b3RoZXI="]}},
            {"allowed": True, "headers": {"Authorization": [digest_of(TOKEN), digest_of("Basic b3RoZXI=")]}},
        ),
        (
            {"allowed": True, "response_headers_to_add": [{"set-cookie": COOKIE}, {"x-trace": "t1"}]},
            {"allowed": True, "response_headers_to_add": [{"set-cookie": digest_of(COOKIE)}, {"x-trace": "t1"}]},
        ),
        (
            {"allowed": False, "headers": {"cookie": COOKIE}, "body": "denied"},
            {"allowed": False, "headers": {"cookie": digest_of(COOKIE)}, "body": "denied"},
        ),
        (
            {"allowed": True, "query_parameters_to_set": {"access_token": "qs-secret", "page": "2"}},
            {"allowed": True, "query_parameters_to_set": {"access_token": digest_of("qs-secret"), "page": "2"}},
        ),
        (
            {"allowed": False, "http_status": 302, "headers": {"Location": "https://idp/cb?page=1&access_token=t0k"}},
            {
                "allowed": False,
                "http_status": 302,
                "headers": {"Location": f"https://idp/cb?page=1&access_token={digest_of('t0k')}"},
            },
        ),
    ],
    ids=[
        "a token the policy injects into the upstream request is digested",
        "every value of a multi-valued header is digested, whatever the name's case",
        "a cookie the policy sets on the response is digested in the list-of-objects form",
        "a denied response's secret headers are digested too",
        "a sensitive query parameter the policy sets is digested",
        "a sensitive query parameter in a redirect's location is digested",
    ],
)
def test_secrets_in_a_policy_result_are_digested_before_storing(result: Any, stored: Any) -> None:
    original = copy.deepcopy(result)
    assert Redactor(RedactionRules(), SECRET).redact_result(result) == stored
    assert result == original  # what Envoy is answered with is untouched


@pytest.mark.parametrize(
    "result",
    [
        {"allowed": True, "headers": {"authorization": ["ok", ["Bearer nested-secret"]]}},
        {"allowed": True, "headers": {"authorization": {"v": "Bearer nested-secret"}}},
        {"allowed": True, "headers": [[{"authorization": "Bearer nested-secret"}]]},
        {"allowed": True, "response_headers_to_add": {"set-cookie": 1234567}},
        {"allowed": True, "query_parameters_to_set": {"access_token": {"t": "nested-secret"}}},
    ],
    ids=[
        "a list inside a header's values",
        "an object as a header's value",
        "header objects inside a list of lists",
        "a number as a cookie",
        "an object as a sensitive query parameter's value",
    ],
)
def test_a_result_of_the_wrong_shape_is_stored_without_its_secrets(result: Any) -> None:
    """The contract rejects these results, and the Check is still recorded (as a policy error) with its result."""
    stored = json.dumps(Redactor(RedactionRules(), SECRET).redact_result(result))
    assert "nested-secret" not in stored
    assert "1234567" not in stored
    assert "hmac-sha256:" in stored


def test_headers_configured_for_removal_are_dropped_from_a_stored_result() -> None:
    rules = RedactionRules.build(DEFAULT_DIGEST_HEADERS, ["x-internal-secret"], DEFAULT_DIGEST_QUERY_PARAMS, "digest")
    result = {"allowed": True, "headers": {"x-internal-secret": "s3", "x-user": "alice"}}
    assert Redactor(rules, SECRET).redact_result(result) == {"allowed": True, "headers": {"x-user": "alice"}}


@pytest.mark.parametrize(
    "result",
    [True, False, {"allowed": True, "headers": {"x-user": "alice"}}, {"allowed": True, "headers": [{"x-a": "1"}]}],
    ids=["an allow", "a deny", "an object without secrets", "header objects in a list without secrets"],
)
def test_a_result_without_secrets_is_stored_as_is(result: Any) -> None:
    assert Redactor(RedactionRules(), SECRET).redact_result(result) is result
