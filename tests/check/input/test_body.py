"""parsed_body and truncated_body: JSON, form and gRPC bodies, content-length, descriptor sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from authz_ledger.check.input import build_input, load_descriptor_set
from authz_ledger.errors import ConfigError
from tests.check.input.support import body_of, http_request, parse, parse_error

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
