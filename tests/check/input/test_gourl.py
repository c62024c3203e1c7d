"""parsed_path and parsed_query against Go's net/url: decoding, splitting and the errors the plugin reports."""

from __future__ import annotations

import pytest

from authz_ledger.check.input import build_input
from authz_ledger.errors import RequestParseError
from tests.check.input.support import http_request, parse, parse_error

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
