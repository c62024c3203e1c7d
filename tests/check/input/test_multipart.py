"""multipart/form-data bodies against Go's mime.ParseMediaType and mime/multipart.Reader."""

from __future__ import annotations

import pytest

from tests.check.input.support import body_of, parse_error


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
