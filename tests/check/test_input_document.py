"""The input document against opa-envoy-plugin: every golden case, then every edge its source defines."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import any_pb2, descriptor_pb2, json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.check import input_document
from authz_ledger.check.input_document import build_input, load_descriptor_set
from authz_ledger.check.result import request_parse_error_response
from authz_ledger.errors import ConfigError, RequestParseError
from authz_ledger.record import gojson
from tests.conftest import VECTORS

GOLDEN = json.loads((VECTORS / "opa-envoy-golden.json").read_text())
INPUT_CASES = {case["name"]: case for case in GOLDEN["input_cases"]}


def canonical(document: Any) -> str:
    """Key order aside, the JSON the policy engine receives (numbers compared by value here; by text below)."""
    return json.dumps(plain(document), sort_keys=True)


def plain(value: Any) -> Any:
    """A document as plain Python values: numbers held as their text (gojson.number) read back as int/float."""
    return json.loads(gojson.compact(value))


def request_from_json(check_request: dict[str, Any]) -> Any:
    return json_format.ParseDict(check_request, external_auth_pb2.CheckRequest())


def attributes_as_plugin(check_request: dict[str, Any]) -> dict[str, Any]:
    """The golden convention for attributes: protobuf JSON, but time as {seconds, nanos}, int64 as numbers."""
    attributes = copy.deepcopy(check_request["attributes"])
    request = attributes.get("request", {})
    if "time" in request:
        when = request["time"]
        stamp = datetime.fromisoformat(when[:19]).replace(tzinfo=UTC)
        request["time"] = {"seconds": int(stamp.timestamp()), "nanos": int(when[20:-1].ljust(9, "0"))}
    http = request.get("http", {})
    if "size" in http:
        http["size"] = int(http["size"])
    return attributes


# --- Golden cases -------------------------------------------------------------------------------------------
#
# Where the plugin's current source (envoyauth/request.go at HEAD) differs from the v1.4.2 recording, the
# current behaviour wins; each override says why. The recording marks only two of them as superseded.


def _with(name: str, **changes: Any) -> dict[str, Any]:
    case = INPUT_CASES[name]
    expected = copy.deepcopy(case["input"]) if "input" in case else None
    if expected is None:
        expected = {
            "attributes": attributes_as_plugin(case["check_request"]),
            "version": {"ext_authz": "v3", "encoding": "protojson"},
            "parsed_query": {},
        }
    expected.update(changes)
    return expected


OVERRIDES: dict[str, dict[str, Any]] = {
    # superseded: the 2026 security fix stopped parsing "//admin" as a URL authority.
    "double slash at start keeps segments": _with(
        "double slash at start keeps segments", parsed_path=["admin", "people"]
    ),
    # superseded: plugin PR #809 (2026) honours x-envoy-auth-partial-body instead of failing to parse.
    "partial body header": _with("partial body header", parsed_path=["json"], parsed_body=None, truncated_body=True),
    # Not marked in the recording: the same 2026 fix replaced url.Parse by strings.Cut(path, "?") and
    # url.ParseQuery, so "#frag" is no longer stripped; it stays in the query value.
    "path with fragment-like text": _with("path with fragment-like text", parsed_query={"x": ["1#frag"]}),
    # Not marked in the recording: PR #732 (July 2025, after v1.4.2) added input.source_principal.
    "mTLS principals": _with("mTLS principals", source_principal="spiffe://cluster.local/ns/default/sa/frontend"),
}


@pytest.mark.parametrize("case", GOLDEN["input_cases"], ids=[c["name"] for c in GOLDEN["input_cases"]])
def test_golden_input_case(case: dict[str, Any]) -> None:
    request = request_from_json(case["check_request"])
    name = case["name"]
    if name in OVERRIDES:
        assert canonical(build_input(request)) == canonical(OVERRIDES[name])
    elif "input" in case:
        assert canonical(build_input(request)) == canonical(case["input"])
    else:
        with pytest.raises(RequestParseError) as info:
            build_input(request)
        outcome = request_parse_error_response(info.value, decision_id="id-1")
        got = json_format.MessageToDict(outcome.response)
        assert got.pop("dynamicMetadata") == {"decision_id": "id-1"}  # our one addition (see result.py)
        assert got == case["response"]


def test_golden_attribute_convention_matches_every_recorded_input() -> None:
    # The helper that builds expectations for the partial-body case is itself checked against the recording.
    for case in GOLDEN["input_cases"]:
        if "input" in case:
            assert attributes_as_plugin(case["check_request"]) == case["input"]["attributes"], case["name"]


@pytest.mark.parametrize("case", GOLDEN["input_cases"], ids=[c["name"] for c in GOLDEN["input_cases"]])
def test_generic_protomap_walk_gives_the_same_attributes(case: dict[str, Any], monkeypatch: Any) -> None:
    request = request_from_json(case["check_request"])
    fast = input_document._attributes_document(request)
    monkeypatch.setattr(input_document, "_FAST_PATH", False)
    assert canonical(input_document._attributes_document(request)) == canonical(fast)


# --- Golden cases for numbers, broken Unicode and refused bodies (part 12) -----------------------------------
#
# Recorded from the same plugin with an echo policy; every number in "input" is the plugin's literal text.


def with_number_text(data: str | bytes) -> Any:
    """JSON read with every number kept as ("number", its text): 1E2, 100 and 1e+02 stay different."""
    return json.loads(data, parse_int=lambda t: ("number", t), parse_float=lambda t: ("number", t))


def without_number_text(value: Any) -> Any:
    if isinstance(value, tuple):
        return json.loads(value[1])
    if isinstance(value, dict):
        return {k: without_number_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_number_text(v) for v in value]
    return value


NUMBERS_GOLDEN = with_number_text((VECTORS / "opa-envoy-golden-numbers.json").read_text())
NUMBER_CASES = NUMBERS_GOLDEN["input_cases"]


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[f"{c['kind']}: {c['name']}" for c in NUMBER_CASES])
def test_golden_numbers_case(case: dict[str, Any]) -> None:
    request = request_from_json(without_number_text(case["check_request"]))
    if "input" in case:
        assert with_number_text(gojson.compact(build_input(request))) == case["input"]
        return
    # Refused as the plugin refuses it. The message is Go's encoding/json wording, which changes with the Go
    # release the plugin is built with (this recording: Go 1.27), so only the refusal itself is compared.
    with pytest.raises(RequestParseError) as info:
        build_input(request)
    outcome = request_parse_error_response(info.value, decision_id="id-1")
    got = json_format.MessageToDict(outcome.response)
    want = without_number_text(case["response"])
    assert got["status"]["code"] == want["status"]["code"]
    assert got["deniedResponse"]["status"] == want["deniedResponse"]["status"]
    assert got["deniedResponse"]["body"].startswith("request_parse_error: ")


def test_golden_numbers_cover_every_kind_the_recording_names() -> None:
    kinds = {case["kind"] for case in NUMBER_CASES}
    assert kinds == {"body-number-range", "body-number-text", "control", "parse-error", "struct-number", "unicode"}
    assert len(NUMBER_CASES) == 190


# --- Helpers for our own cases ------------------------------------------------------------------------------


def http_request(
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    body: str = "",
    raw_body: bytes = b"",
) -> Any:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method = "POST"
    http.path = path
    http.headers.update(headers or {})
    http.body = body
    http.raw_body = raw_body
    return request


def parse(path: str = "/", **kwargs: Any) -> dict[str, Any]:
    return build_input(
        http_request(path, **{k: v for k, v in kwargs.items() if k != "pool"}),
        descriptor_pool=kwargs.get("pool"),
    )


def parse_error(path: str = "/", **kwargs: Any) -> str:
    with pytest.raises(RequestParseError) as info:
        parse(path, **kwargs)
    return str(info.value)


def body_of(content_type: str, body: str = "", raw_body: bytes = b"", **headers: str) -> tuple[Any, bool]:
    doc = parse("/b", headers={"content-type": content_type, **headers}, body=body, raw_body=raw_body)
    return plain(doc["parsed_body"]), doc["truncated_body"]


# --- parsed_path and parsed_query ---------------------------------------------------------------------------

PATHS = {
    "a double slash keeps the admin segment": ("//admin/people", ["admin", "people"], {}),
    "three leading slashes are all trimmed": ("///x", ["x"], {}),
    "an empty path is one empty segment": ("", [""], {}),
    "a lone question mark gives an empty path and no parameters": ("?", [""], {}),
    "root with an empty query": ("/?", [""], {}),
    "an encoded slash splits the segment after decoding": ("/a%2Fb", ["a", "b"], {}),
    "a plus in the path stays a plus": ("/a+b", ["a+b"], {}),
    "escapes decode to UTF-8": ("/%C3%A9t%C3%A9", ["été"], {}),
    "a decoded byte that is not UTF-8 becomes U+FFFD": ("/%FF", ["\ufffd"], {}),
    "a hash without a query stays in the path segment": ("/p#frag", ["p#frag"], {}),
    "a hash after the query stays in the last value": ("/p?x=1#frag", ["p"], {"x": ["1#frag"]}),
    "a second question mark is part of the query": ("/p?a=1?b=2", ["p"], {"a": ["1?b=2"]}),
    "repeated keys keep every value in order": ("/p?a=1&b=2&a=3", ["p"], {"a": ["1", "3"], "b": ["2"]}),
    "plus is a space in keys and values": ("/p?a+b=c+d", ["p"], {"a b": ["c d"]}),
    "an encoded plus is a plus": ("/p?a=%2B", ["p"], {"a": ["+"]}),
    "empty pairs are skipped": ("/p?&&a=1&", ["p"], {"a": ["1"]}),
    "a key without equals has an empty value": ("/p?flag", ["p"], {"flag": [""]}),
    "an empty key is kept": ("/p?=v", ["p"], {"": ["v"]}),
    "only the first equals splits": ("/p?a=b=c", ["p"], {"a": ["b=c"]}),
    "dot segments are left alone": ("/a/./../b", ["a", ".", "..", "b"], {}),
}


@pytest.mark.parametrize(("path", "segments", "query"), PATHS.values(), ids=PATHS.keys())
def test_parsed_path_and_query(path: str, segments: list[str], query: dict[str, list[str]]) -> None:
    doc = parse(path)
    assert doc["parsed_path"] == segments
    assert doc["parsed_query"] == query


PATH_ERRORS = {
    "a bad escape in the path": ("/a%zzb", 'invalid URL escape "%zz"'),
    "a truncated escape at the end of the path": ("/a%4", 'invalid URL escape "%4"'),
    "a lone percent at the end of the path": ("/a%", 'invalid URL escape "%"'),
    "a bad escape shows the whole character when it fits in three bytes": ("/%é", 'invalid URL escape "%é"'),
    "a bad escape quotes at most three bytes even mid-character": ("/%aé", 'invalid URL escape "%a\\xc3"'),
    "a bad escape in a query value": ("/p?a=%zz", 'invalid URL escape "%zz"'),
    "a bad escape in a query key": ("/p?%g1=1", 'invalid URL escape "%g1"'),
    "a semicolon in the query": ("/p?a=1;b=2", "invalid semicolon separator in query"),
    "a semicolon wins over an earlier bad escape": ("/p?a=%zz&b;", "invalid semicolon separator in query"),
    "the first bad escape is the one reported": ("/p?a=%zz&b=%yy", 'invalid URL escape "%zz"'),
    "more than ten thousand query parameters": (
        "/p?" + "&" * 10000,
        "number of URL query parameters exceeded limit",
    ),
}


@pytest.mark.parametrize(("path", "message"), PATH_ERRORS.values(), ids=PATH_ERRORS.keys())
def test_path_and_query_errors_are_request_parse_errors(path: str, message: str) -> None:
    assert parse_error(path) == message


def test_ten_thousand_query_parameters_are_still_accepted() -> None:
    assert parse("/p?" + "&" * 9999 + "a=1")["parsed_query"] == {"a": ["1"]}


def test_a_path_error_is_reported_even_when_the_body_is_not_parsed() -> None:
    with pytest.raises(RequestParseError):
        build_input(http_request("/%zz"), skip_request_body_parse=True)


# --- JSON bodies --------------------------------------------------------------------------------------------


def test_json_body_is_parsed() -> None:
    assert body_of("application/json", '{"a": [1, 2.5, "x", null, true]}') == (
        {"a": [1, 2.5, "x", None, True]},
        False,
    )


def test_json_in_raw_body_is_parsed_when_body_is_empty() -> None:
    assert body_of("application/json", raw_body=b'{"packed": 1}') == ({"packed": 1}, False)


def test_body_wins_over_raw_body() -> None:
    assert body_of("application/json", '{"from": "body"}', raw_body=b"not json") == ({"from": "body"}, False)


def test_empty_json_body_is_not_parsed() -> None:
    assert body_of("application/json", **{"content-length": "100"}) == (None, False)


def test_content_length_equal_to_the_body_is_not_truncated() -> None:
    assert body_of("application/json", '{"a": 1}', **{"content-length": "8"}) == ({"a": 1}, False)


def test_content_length_counts_utf8_bytes_not_characters() -> None:
    body = '{"n": "日本"}'
    assert body_of("application/json", body, **{"content-length": str(len(body.encode()))}) == (
        {"n": "日本"},
        False,
    )


def test_content_length_longer_than_the_body_marks_it_truncated() -> None:
    assert body_of("application/json", '{"a": 1', **{"content-length": "1000"}) == (None, True)


def test_content_length_of_minus_one_is_ignored() -> None:
    assert body_of("application/json", '{"a": 1}', **{"content-length": "-1"}) == ({"a": 1}, False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ("", 'strconv.ParseInt: parsing "": invalid syntax'),
        ("99999999999999999999", 'strconv.ParseInt: parsing "99999999999999999999": value out of range'),
    ],
    ids=["a non-numeric content-length", "an empty content-length", "a content-length beyond int64"],
)
def test_bad_content_length_is_a_request_parse_error(value: str, message: str) -> None:
    assert parse_error("/", headers={"content-type": "application/json", "content-length": value}, body="{}") == message


def test_partial_body_header_marks_any_body_truncated_without_parsing() -> None:
    assert body_of("text/plain", "abc", **{"x-envoy-auth-partial-body": "true"}) == (None, True)


def test_partial_body_header_other_than_true_is_ignored() -> None:
    assert body_of("application/json", "{}", **{"x-envoy-auth-partial-body": "false"}) == ({}, False)


def test_content_type_is_matched_as_a_substring() -> None:
    assert body_of("application/json-patch+json; x=application/json", "[]") == ([], False)


def test_skip_request_body_parse_leaves_both_keys_out() -> None:
    doc = build_input(
        http_request(headers={"content-type": "application/json"}, body="{bad"), skip_request_body_parse=True
    )
    assert "parsed_body" not in doc
    assert "truncated_body" not in doc


def test_trailing_null_after_a_json_value_is_accepted_like_opa() -> None:
    # OPA's UnmarshalJSON checks trailing data with Decoder.Token(), which returns (nil, nil) for null.
    assert body_of("application/json", '{"a": 1} null') == ({"a": 1}, False)


JSON_ERRORS = {
    "an unterminated object": ('{"a": 1', "unexpected EOF"),
    "whitespace only": ("   ", "EOF"),
    "a key without a colon": ('{"a" 1}', "invalid character '1' after object key"),
    "a missing comma between members": (
        '{"a": 1 "b": 2}',
        "invalid character '\"' after object key:value pair",
    ),
    "an unquoted key": ("{not json", "invalid character 'n' looking for beginning of object key string"),
    "a trailing comma in an object": (
        '{"a": 1,}',
        "invalid character '}' looking for beginning of object key string",
    ),
    "a missing comma between array elements": ("[1 2]", "invalid character '2' after array element"),
    "a trailing comma in an array": ("[1,]", "invalid character ']' looking for beginning of value"),
    "a misspelt literal": ('{"a": tru}', "invalid character '}' in literal true (expecting 'e')"),
    "NaN": ("NaN", "invalid character 'N' looking for beginning of value"),
    "minus Infinity": ("-Infinity", "invalid character 'I' in numeric literal"),
    "a single quote": ("'a'", "invalid character '\\'' looking for beginning of value"),
    "a decimal point without digits": ("1.x", "invalid character 'x' after decimal point in numeric literal"),
    "an exponent without digits": ("1ex", "invalid character 'x' in exponent of numeric literal"),
    "a number cut after the exponent sign": ("1e+", "unexpected EOF"),
    "a bad string escape": ('"\\x"', "invalid character 'x' in string escape code"),
    "a bad unicode escape": ('"\\u12G4"', "invalid character 'G' in \\u hexadecimal character escape"),
    "a raw tab inside a string": ('"a\tb"', "invalid character '\\t' in string literal"),
    "a second object": ("{} {}", "error: invalid character '{' after top-level value"),
    "a stray closing brace": ("{}}", "invalid character '}' looking for beginning of value"),
    "a second number": ("{} 12", "error: invalid character '12' after top-level value"),
    "a second string": ('{} "x"', "error: invalid character 'x' after top-level value"),
    "a second boolean": ("{} true", "error: invalid character '%!s(bool=true)' after top-level value"),
    "trailing garbage": ("{} x", "invalid character 'x' looking for beginning of value"),
    "a leading zero": ("01", "error: invalid character '1' after top-level value"),
    "a byte order mark": ("\ufeff{}", "invalid character 'ï' looking for beginning of value"),
}


@pytest.mark.parametrize(("body", "message"), JSON_ERRORS.values(), ids=JSON_ERRORS.keys())
def test_malformed_json_gives_go_encoding_json_messages(body: str, message: str) -> None:
    assert parse_error("/", headers={"content-type": "application/json"}, body=body) == message


def test_malformed_json_in_raw_body_reports_the_raw_byte() -> None:
    message = parse_error("/", headers={"content-type": "application/json"}, raw_body=b"\xff")
    assert message == "invalid character 'ÿ' looking for beginning of value"


# --- Form bodies --------------------------------------------------------------------------------------------


def test_form_body_is_parsed_like_a_query() -> None:
    assert body_of("application/x-www-form-urlencoded", "a=1&a=2&b=%20x+y&c") == (
        {"a": ["1", "2"], "b": [" x y"], "c": [""]},
        False,
    )


def test_form_falls_back_to_raw_body() -> None:
    assert body_of("application/x-www-form-urlencoded", raw_body=b"k=v") == ({"k": ["v"]}, False)


def test_empty_form_is_not_parsed() -> None:
    assert body_of("application/x-www-form-urlencoded") == (None, False)


def test_form_shorter_than_content_length_is_truncated() -> None:
    assert body_of("application/x-www-form-urlencoded", "a=1", **{"content-length": "10"}) == (None, True)


@pytest.mark.parametrize(
    ("body", "message"),
    [("a=1;b=2", "invalid semicolon separator in query"), ("a=%zz", 'invalid URL escape "%zz"')],
    ids=["a semicolon in a form body", "a bad escape in a form body"],
)
def test_malformed_form_is_a_request_parse_error(body: str, message: str) -> None:
    assert parse_error("/", headers={"content-type": "application/x-www-form-urlencoded"}, body=body) == message


# --- Multipart bodies ---------------------------------------------------------------------------------------


def multipart(*parts: str, boundary: str = "XyZ", nl: str = "\r\n", close: bool = True) -> str:
    out = "".join(f"--{boundary}{nl}{part}{nl}" for part in parts)
    return out + (f"--{boundary}--{nl}" if close else "")


def field(name: str, value: str, *headers: str, nl: str = "\r\n") -> str:
    lines = [f'Content-Disposition: form-data; name="{name}"', *headers]
    return nl.join(lines) + nl + nl + value


MULTIPART_CT = "multipart/form-data; boundary=XyZ"


def test_multipart_json_part_is_parsed_and_text_parts_are_strings() -> None:
    body = multipart(field("j", '{"k": [1, 2]}', "Content-Type: application/json"), field("t", "hello"))
    assert body_of(MULTIPART_CT, body) == ({"j": [{"k": [1, 2]}], "t": ["hello"]}, False)


def test_multipart_unnamed_and_non_form_data_parts_are_skipped() -> None:
    body = multipart(
        "Content-Disposition: form-data\r\n\r\nunnamed",
        'Content-Disposition: attachment; name="a"\r\n\r\nnot form-data',
        "\r\nno headers at all",
        field("kept", "yes"),
    )
    assert body_of(MULTIPART_CT, body) == ({"kept": ["yes"]}, False)


def test_multipart_with_only_unnamed_parts_is_an_empty_object() -> None:
    assert body_of(MULTIPART_CT, multipart("Content-Disposition: form-data\r\n\r\nx")) == ({}, False)


def test_multipart_without_boundary_parameter_is_not_parsed() -> None:
    assert body_of("multipart/form-data", multipart(field("a", "1"))) == (None, False)


def test_multipart_quoted_boundary_preamble_and_epilogue() -> None:
    body = "preamble line\r\n" + multipart(field("a", "1")) + "epilogue"
    assert body_of('multipart/form-data; boundary="XyZ"', body) == ({"a": ["1"]}, False)


def test_multipart_with_bare_newlines() -> None:
    body = multipart(field("a", "1", nl="\n"), field("a", "2", nl="\n"), nl="\n")
    assert body_of(MULTIPART_CT, body) == ({"a": ["1", "2"]}, False)


def test_multipart_final_boundary_without_newline() -> None:
    body = multipart(field("a", "1"), close=False) + "--XyZ--"
    assert body_of(MULTIPART_CT, body) == ({"a": ["1"]}, False)


def test_multipart_value_may_contain_the_boundary_text_not_at_a_line_start() -> None:
    body = multipart(field("a", "x--XyZ y\r\n--XyZa"))
    assert body_of(MULTIPART_CT, body) == ({"a": ["x--XyZ y\r\n--XyZa"]}, False)


def test_multipart_quoted_printable_part_is_decoded() -> None:
    body = multipart(field("a", "caf=C3=A9", "Content-Transfer-Encoding: quoted-printable"))
    assert body_of(MULTIPART_CT, body) == ({"a": ["café"]}, False)


def test_multipart_falls_back_to_raw_body() -> None:
    assert body_of(MULTIPART_CT, raw_body=multipart(field("a", "1")).encode()) == ({"a": ["1"]}, False)


def test_multipart_shorter_than_content_length_is_truncated() -> None:
    assert body_of(MULTIPART_CT, multipart(field("a", "1")), **{"content-length": "999"}) == (None, True)


MULTIPART_ERRORS = {
    "a parameter without a value": ("multipart/form-data; boundary", "x", "mime: invalid media parameter"),
    "a duplicated boundary parameter": (
        "multipart/form-data; boundary=a; boundary=b",
        "x",
        "mime: duplicate parameter name",
    ),
    "an empty boundary": ('multipart/form-data; boundary=""', "x", "multipart: boundary is empty"),
    "no delimiter in the body": (MULTIPART_CT, "just text\r\n", "multipart: NextPart: EOF"),
    "a named part without a closing boundary": (
        MULTIPART_CT,
        "--XyZ\r\n" + field("a", "never closed"),
        "unexpected EOF",
    ),
    "an unnamed part without a closing boundary": (
        MULTIPART_CT,
        "--XyZ\r\n\r\ndangling",
        "multipart: NextPart: EOF",
    ),
    "headers cut off by the end of the body": (
        MULTIPART_CT,
        '--XyZ\r\nContent-Disposition: form-data; name="a"\r\n',
        "EOF",
    ),
    "a header line without a colon": (
        MULTIPART_CT,
        "--XyZ\r\nbogus\r\n\r\nv\r\n--XyZ--",
        'malformed MIME header: missing colon: "bogus"',
    ),
    "garbage after the final boundary marker": (
        MULTIPART_CT,
        "--XyZ\r\n" + field("a", "1") + "\r\n--XyZ--junk\r\n",
        'multipart: expecting a new Part; got line "--XyZ--junk\\r\\n"',
    ),
    "an invalid JSON part": (
        MULTIPART_CT,
        multipart(field("j", "{bad", "Content-Type: application/json")),
        "invalid character 'b' looking for beginning of object key string",
    ),
}


@pytest.mark.parametrize(("content_type", "body", "message"), MULTIPART_ERRORS.values(), ids=MULTIPART_ERRORS.keys())
def test_malformed_multipart_is_a_request_parse_error(content_type: str, body: str, message: str) -> None:
    assert parse_error("/", headers={"content-type": content_type}, body=body) == message


# --- gRPC bodies --------------------------------------------------------------------------------------------


def greeter_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """test.v1.Greeter: unary SayHello(HelloRequest), client-streaming Chat; HelloRequest uses an import."""
    common = descriptor_pb2.FileDescriptorProto(name="test/v1/common.proto", package="test.v1", syntax="proto3")
    mood = common.enum_type.add(name="Mood")
    mood.value.add(name="MOOD_UNSPECIFIED", number=0)
    mood.value.add(name="MOOD_HAPPY", number=1)

    greeter = descriptor_pb2.FileDescriptorProto(
        name="test/v1/greeter.proto", package="test.v1", syntax="proto3", dependency=["test/v1/common.proto"]
    )
    message = greeter.message_type.add(name="HelloRequest")
    fd = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="name", number=1, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL, json_name="name")
    message.field.add(name="visit_count", number=2, type=fd.TYPE_INT64, label=fd.LABEL_OPTIONAL, json_name="visitCount")
    message.field.add(
        name="mood",
        number=3,
        type=fd.TYPE_ENUM,
        type_name=".test.v1.Mood",
        label=fd.LABEL_OPTIONAL,
        json_name="mood",
    )
    service = greeter.service.add(name="Greeter")
    service.method.add(name="SayHello", input_type=".test.v1.HelloRequest", output_type=".test.v1.HelloRequest")
    service.method.add(
        name="Chat",
        input_type=".test.v1.HelloRequest",
        output_type=".test.v1.HelloRequest",
        client_streaming=True,
    )
    # Dependents first: the loader must order them itself, as protodesc.NewFiles does.
    return descriptor_pb2.FileDescriptorSet(file=[greeter, common])


@pytest.fixture(scope="module")
def greeter_pool(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("fds") / "greeter.pb"
    path.write_bytes(greeter_descriptor_set().SerializeToString())
    return load_descriptor_set(path)


def hello_message(name: str = "ada", visits: int = 5, mood: int = 1) -> bytes:
    # Wire format by hand: field 1 string, field 2 varint, field 3 varint.
    data = name.encode()
    return bytes([0x0A, len(data)]) + data + bytes([0x10, visits, 0x18, mood])


def grpc_frame(message: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    size = len(message) if declared is None else declared
    return bytes([1 if compressed else 0]) + size.to_bytes(4, "big") + message


def grpc_body(pool: Any, raw: bytes, path: str = "/test.v1.Greeter/SayHello") -> tuple[Any, bool]:
    doc = parse(path, headers={"content-type": "application/grpc"}, raw_body=raw, pool=pool)
    return doc["parsed_body"], doc["truncated_body"]


def test_grpc_body_is_decoded_to_protojson(greeter_pool: Any) -> None:
    # protojson: int64 as a string, enums by name, lowerCamelCase names.
    assert grpc_body(greeter_pool, grpc_frame(hello_message())) == (
        {"name": "ada", "visitCount": "5", "mood": "MOOD_HAPPY"},
        False,
    )


def test_grpc_body_reads_only_the_first_message(greeter_pool: Any) -> None:
    raw = grpc_frame(hello_message("one")) + grpc_frame(hello_message("two"))
    assert grpc_body(greeter_pool, raw)[0]["name"] == "one"


def test_grpc_plus_proto_content_type_is_grpc(greeter_pool: Any) -> None:
    doc = parse(
        "/test.v1.Greeter/SayHello",
        headers={"content-type": "application/grpc+proto"},
        raw_body=grpc_frame(hello_message()),
        pool=greeter_pool,
    )
    assert doc["parsed_body"]["name"] == "ada"


def test_compressed_grpc_body_is_not_parsed(greeter_pool: Any) -> None:
    assert grpc_body(greeter_pool, grpc_frame(b"\x1f\x8b...", compressed=True)) == (None, False)


def test_grpc_frame_longer_than_the_body_is_truncated(greeter_pool: Any) -> None:
    assert grpc_body(greeter_pool, grpc_frame(hello_message(), declared=1000)) == (None, True)


def test_grpc_unknown_service_or_method_is_not_parsed(greeter_pool: Any) -> None:
    raw = grpc_frame(hello_message())
    assert grpc_body(greeter_pool, raw, "/test.v1.Nope/SayHello") == (None, False)
    assert grpc_body(greeter_pool, raw, "/test.v1.Greeter/Nope") == (None, False)
    assert grpc_body(greeter_pool, raw, "/test.v1.HelloRequest/SayHello") == (None, False)


def test_grpc_client_streaming_method_is_not_parsed(greeter_pool: Any) -> None:
    assert grpc_body(greeter_pool, grpc_frame(hello_message()), "/test.v1.Greeter/Chat") == (None, False)


def test_grpc_without_descriptor_set_or_raw_body_is_not_parsed(greeter_pool: Any) -> None:
    assert grpc_body(None, grpc_frame(hello_message())) == (None, False)
    assert grpc_body(greeter_pool, b"") == (None, False)


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("/test.v1.Greeter/SayHello", b"\x00\x00\x00", "less than 5 bytes"),
        ("/test.v1.Greeter/SayHello/extra", grpc_frame(hello_message()), "invalid parsed path"),
        ("/test.v1.Greeter", grpc_frame(hello_message()), "invalid parsed path"),
        (
            "/test.v1.Greeter/SayHello",
            grpc_frame(b"\x0a\x05ab"),
            "proto: cannot parse invalid wire-format data",
        ),
    ],
    ids=[
        "a gRPC body shorter than its frame header",
        "a gRPC path with three segments",
        "a gRPC path with one segment",
        "a gRPC message with invalid wire data",
    ],
)
def test_malformed_grpc_is_a_request_parse_error(greeter_pool: Any, path: str, raw: bytes, message: str) -> None:
    assert parse_error(path, headers={"content-type": "application/grpc"}, raw_body=raw, pool=greeter_pool) == message


def test_descriptor_set_with_a_missing_import_is_a_config_error(tmp_path: Path) -> None:
    fds = greeter_descriptor_set()
    del fds.file[1]
    path = tmp_path / "broken.pb"
    path.write_bytes(fds.SerializeToString())
    with pytest.raises(ConfigError, match="not in the set"):
        load_descriptor_set(path)


def test_unreadable_descriptor_set_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_descriptor_set(tmp_path / "missing.pb")
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ConfigError):
        load_descriptor_set(garbage)


def test_descriptor_set_compiled_by_protoc_loads(tmp_path: Path) -> None:
    grpc_tools = pytest.importorskip("grpc_tools.protoc")
    (tmp_path / "svc.proto").write_text(
        'syntax = "proto3"; package demo; message Req { string q = 1; }\nservice S { rpc Get(Req) returns (Req); }'
    )
    out = tmp_path / "svc.pb"
    assert (
        grpc_tools.main(["protoc", f"-I{tmp_path}", "--include_imports", f"-o{out}", str(tmp_path / "svc.proto")]) == 0
    )
    pool = load_descriptor_set(out)
    assert grpc_body(pool, grpc_frame(b"\x0a\x02hi"), "/demo.S/Get") == ({"q": "hi"}, False)


# --- attributes ---------------------------------------------------------------------------------------------


def rich_request() -> Any:
    """Every rare attribute the plugin converts, with the values that expose protojson differences."""
    request = external_auth_pb2.CheckRequest()
    a = request.attributes
    src = a.source
    src.address.socket_address.address = "10.0.0.1"
    src.address.socket_address.named_port = "http"
    src.address.socket_address.protocol = 1  # UDP: the plugin gives the enum number
    src.service = "frontend"
    src.labels["app"] = "web"
    src.principal = "spiffe://td/sa/frontend"
    src.certificate = "-----BEGIN CERTIFICATE-----"
    a.destination.address.pipe.path = "/run/envoy.sock"
    a.destination.address.pipe.mode = 0o600
    a.request.time.seconds = 1764150000  # nanos 0: left out
    http = a.request.http
    http.id = "1"
    http.method = "GET"
    http.path = "/x"
    http.query = "q=1"
    http.fragment = "f"
    http.size = 2**40
    http.header_map.headers.add(key="x-raw", raw_value=b"\x00\x01")
    a.context_extensions["virtual_host"] = "vh"
    a.metadata_context.filter_metadata["envoy.filters.http.jwt_authn"].update(
        {"claims": {"sub": "alice", "exp": 1764150000, "ratio": 2.5, "groups": ["a", "b"], "none": None}}
    )
    packed = any_pb2.Any()
    packed.Pack(address_pb2.Pipe(path="/p"))
    a.metadata_context.typed_filter_metadata["typed"].CopyFrom(packed)
    a.route_metadata_context.filter_metadata["route"].update({"k": "v"})
    a.tls_session.sni = "example.com"
    return request, packed


def test_rare_attributes_follow_the_plugin_protomap() -> None:
    request, packed = rich_request()
    attributes = plain(build_input(request)["attributes"])
    assert attributes == {
        "source": {
            "address": {"socketAddress": {"address": "10.0.0.1", "namedPort": "http", "protocol": 1}},
            "service": "frontend",
            "labels": {"app": "web"},
            "principal": "spiffe://td/sa/frontend",
            "certificate": "-----BEGIN CERTIFICATE-----",
        },
        "destination": {"address": {"pipe": {"path": "/run/envoy.sock", "mode": 0o600}}},
        "request": {
            "time": {"seconds": 1764150000},
            "http": {
                "id": "1",
                "method": "GET",
                "path": "/x",
                "query": "q=1",
                "fragment": "f",
                "size": 2**40,
                "headerMap": {"headers": [{"key": "x-raw", "rawValue": "AAE="}]},
            },
        },
        "contextExtensions": {"virtual_host": "vh"},
        "metadataContext": {
            "filterMetadata": {
                "envoy.filters.http.jwt_authn": {
                    "claims": {
                        "sub": "alice",
                        "exp": 1764150000,
                        "ratio": 2.5,
                        "groups": ["a", "b"],
                        "none": None,
                    }
                }
            },
            "typedFilterMetadata": {
                "typed": {"typeUrl": packed.type_url, "value": base64.b64encode(packed.value).decode()}
            },
        },
        "routeMetadataContext": {"filterMetadata": {"route": {"k": "v"}}},
        "tlsSession": {"sni": "example.com"},
    }


def test_rare_attributes_are_the_same_through_the_generic_walk(monkeypatch: Any) -> None:
    request, _ = rich_request()
    fast = canonical(build_input(request))
    monkeypatch.setattr(input_document, "_FAST_PATH", False)
    assert canonical(build_input(request)) == fast


def test_fast_path_is_active_for_the_installed_envoy_protos() -> None:
    assert input_document._FAST_PATH


def test_fast_path_turns_itself_off_when_a_message_gains_a_field(monkeypatch: Any) -> None:
    known = copy.deepcopy(input_document._KNOWN_FIELDS)
    known["envoy.service.auth.v3.AttributeContext.Peer"].discard("certificate")
    monkeypatch.setattr(input_document, "_KNOWN_FIELDS", known)
    assert not input_document._fast_path_matches(external_auth_pb2.DESCRIPTOR.pool)


def test_empty_check_request() -> None:
    assert build_input(external_auth_pb2.CheckRequest()) == {
        "version": {"ext_authz": "v3", "encoding": "protojson"},
        "parsed_path": [""],
        "parsed_query": {},
        "parsed_body": None,
        "truncated_body": False,
    }


def test_set_but_empty_messages_are_empty_objects() -> None:
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.time.SetInParent()
    request.attributes.source.SetInParent()
    assert build_input(request)["attributes"] == {"source": {}, "request": {"time": {}}}


def test_port_zero_set_explicitly_is_kept() -> None:
    # port_value is in a oneof: set means present, even at 0.
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.address.socket_address.port_value = 0
    assert build_input(request)["attributes"]["source"] == {"address": {"socketAddress": {"portValue": 0}}}


def test_source_principal_is_copied_only_when_set() -> None:
    request = http_request()
    assert "source_principal" not in build_input(request)
    request.attributes.source.principal = "spiffe://td/ns/a/sa/b"
    assert build_input(request)["source_principal"] == "spiffe://td/ns/a/sa/b"


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(st.text(alphabet="abcdefgh-", min_size=1, max_size=6), texts, max_size=4),
    strings=st.lists(texts, min_size=8, max_size=8),
    numbers=st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 999_999_999), st.integers(0, 65535), st.integers(0, 1)),
    raw=st.binary(max_size=6),
    flags=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_fast_path_equals_the_generic_walk_on_generated_requests(
    headers: dict[str, str],
    strings: list[str],
    numbers: tuple[int, int, int, int],
    raw: bytes,
    flags: list[bool],
) -> None:
    request = external_auth_pb2.CheckRequest()
    a = request.attributes
    if flags[0]:
        a.source.address.socket_address.address = strings[0]
        a.source.address.socket_address.port_value = numbers[2]
        a.source.address.socket_address.protocol = numbers[3]
        a.source.principal = strings[1]
        a.source.labels.update({strings[2]: strings[3]})
    if flags[1]:
        a.destination.service = strings[4]
        a.destination.address.socket_address.ipv4_compat = flags[3]
    if flags[2]:
        a.request.time.seconds = numbers[0]
        a.request.time.nanos = numbers[1]
    http = a.request.http
    http.headers.update(headers)
    http.host = strings[5]
    http.scheme = strings[6]
    http.protocol = strings[7]
    http.size = numbers[0]
    http.raw_body = raw
    a.context_extensions.update(headers)
    fast = canonical(input_document._attributes_document(request))
    generic = canonical(input_document._protomap(request))
    assert fast == generic


def test_struct_numbers_reach_the_policy_as_go_prints_them() -> None:
    # OPA's FloatNumberTerm: strconv.FormatFloat(f, 'g', -1, 64).
    request = attribute_context_pb2.AttributeContext()
    request.metadata_context.filter_metadata["m"].update(
        {"int": 3, "big": 1e300, "frac": 0.5, "exp": 1764150000, "million": 1e6, "small": 1.5e-7}
    )
    values = input_document._protomap(request)["metadataContext"]["filterMetadata"]["m"]
    want = '{"big":1e+300,"exp":1.76415e+09,"frac":0.5,"int":3,"million":1e+06,"small":1.5e-07}'
    assert gojson.canonical(values) == want
    assert isinstance(values["int"], int)  # a plain integer text stays a Python int (orjson writes it the same)
