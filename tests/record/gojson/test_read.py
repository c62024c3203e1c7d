"""JSON as Go reads it for OPA: number text, broken Unicode, depth, and what any body becomes, written back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.check.input import build_input
from authz_ledger.errors import RequestParseError
from authz_ledger.record import gojson
from authz_ledger.record.gojson.read import _GoParser
from tests.check.input.support import http_request


def number_text(data: bytes | str) -> Any:
    """JSON read with every number kept as ("n", its text): 1E2, 100 and 1e+02 stay different."""
    return json.loads(data, parse_int=lambda t: ("n", t), parse_float=lambda t: ("n", t))


# --- Number text --------------------------------------------------------------------------------------------

NUMBER_TEXTS = {
    "an exponent with a capital E": "1E2",
    "trailing zeros": "2.50",
    "negative zero": "-0",
    "negative zero with a fraction and exponent": "-0.0e-0",
    "beyond float64": "1e400",
    "below minus float64": "-1e400",
    "an exponent beyond any float": "1e99999",
    "an underflow to zero": "2e-324",
    "an integer beyond 64 bits": "123456789012345678901234567890",
    "a long mantissa": "1234567890.1234567890123456789e-5",
    "an explicit plus exponent": "1e+0",
}


@pytest.mark.parametrize("text", NUMBER_TEXTS.values(), ids=NUMBER_TEXTS.keys())
def test_a_number_keeps_its_text_through_parse_and_write(text: str) -> None:
    body = f'{{"n": {text}, "l": [{text}]}}'
    assert gojson.compact(gojson.unmarshal(body)) == f'{{"n":{text},"l":[{text}]}}'.encode()
    assert gojson.canonical(gojson.unmarshal(body)) == f'{{"l":[{text}],"n":{text}}}'


def test_the_slow_parser_keeps_number_text_too() -> None:
    deep = "[" * 2000 + "1E2, 2.50, -0, 1e400" + "]" * 2000
    assert gojson.compact(gojson.unmarshal(deep)) == ("[" * 2000 + "1E2,2.50,-0,1e400" + "]" * 2000).encode()


# --- Strings: Go's U+FFFD rules -----------------------------------------------------------------------------

STRING_CASES = {
    "a lone high surrogate escape is one U+FFFD": (b'"\\ud800"', "\ufffd"),
    "a lone low surrogate escape is one U+FFFD": (b'"\\udc00"', "\ufffd"),
    "two high surrogates are two": (b'"\\ud800\\ud800"', "\ufffd\ufffd"),
    "a reversed pair is two": (b'"\\ude00\\ud83d"', "\ufffd\ufffd"),
    "a high surrogate before a plain escape keeps the escape": (b'"\\ud800\\u0041"', "\ufffdA"),
    "a valid escaped pair is one character": (b'"\\ud83d\\ude00"', "\U0001f600"),
    "a truncated 3-byte sequence is one U+FFFD per byte": (b'"\xe2\x82"', "\ufffd\ufffd"),
    "a truncated 4-byte sequence is one U+FFFD per byte": (b'"\xf0\x9f\x98"', "\ufffd\ufffd\ufffd"),
    "an encoded surrogate is three": (b'"\xed\xa0\x80"', "\ufffd\ufffd\ufffd"),
    "a stray continuation byte is one": (b'"a\x80b"', "a\ufffdb"),
    "an overlong encoding is one per byte": (b'"\xc0\xaf"', "\ufffd\ufffd"),
}


@pytest.mark.parametrize(("body", "want"), STRING_CASES.values(), ids=STRING_CASES.keys())
def test_broken_unicode_becomes_what_go_makes_of_it(body: bytes, want: str) -> None:
    assert gojson.unmarshal(body) == want
    assert _GoParser(body).document() == want  # the slow path agrees


def test_a_lone_surrogate_in_a_key_is_replaced_too() -> None:
    assert gojson.unmarshal(b'{"\\ud800": [{"\\udfff": "\\ud800"}]}') == {"\ufffd": [{"\ufffd": "\ufffd"}]}


# --- Depth --------------------------------------------------------------------------------------------------


def nested(depth: int, inner: str = "") -> str:
    return "[" * depth + inner + "]" * depth


def test_go_accepts_ten_thousand_levels_and_refuses_one_more() -> None:
    assert gojson.compact(gojson.unmarshal(nested(10000))) == nested(10000).encode()
    with pytest.raises(gojson.GoJSONError, match=r"^exceeded max depth$"):
        gojson.unmarshal(nested(10001))


def test_a_smaller_depth_budget_is_refused_with_its_reason() -> None:
    assert gojson.unmarshal(nested(50), max_depth=50) is not None
    with pytest.raises(gojson.GoJSONError, match="nested deeper than 50 levels"):
        gojson.unmarshal(nested(51, "1"), max_depth=50)


DEPTHS = {
    "a body of 9,998 levels reaches the policy": (9998, None),
    "a body of 9,999 levels is refused: the engine could not read it": (9999, "nested deeper than 9998 levels"),
    "a body of 10,001 levels is refused, as the plugin refuses it": (10001, "exceeded max depth"),
}


@pytest.mark.parametrize(("depth", "refusal"), DEPTHS.values(), ids=DEPTHS.keys())
def test_json_body_depth_in_the_input_document(depth: int, refusal: str | None) -> None:
    request = http_request("/", headers={"content-type": "application/json"}, body=nested(depth))
    if refusal is None:
        document = build_input(request)
        assert gojson.compact(document["parsed_body"]) == nested(depth).encode()
        text = gojson.compact(document)  # the input document itself, 9,999 levels: written without recursion
        assert text.endswith(b'"parsed_body":' + nested(depth).encode() + b',"truncated_body":false}')
    else:
        with pytest.raises(RequestParseError, match=refusal):
            build_input(request)


# --- Properties ---------------------------------------------------------------------------------------------

digits = st.text("0123456789", min_size=1, max_size=25)
json_numbers = st.builds(
    lambda sign, whole, fraction, exponent: sign + whole + fraction + exponent,
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.builds(lambda a, b: a + b, st.sampled_from("123456789"), st.text("0123456789"))),
    st.one_of(st.just(""), digits.map(lambda d: "." + d)),
    st.one_of(
        st.just(""),
        st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), digits),
    ),
)
plain_strings = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


class Literal:
    """A generated JSON value: its text with odd whitespace, and the compact text Go's parser should give back."""

    def __init__(self, text: str, compact: str) -> None:
        self.text, self.compact = text, compact


whitespace = st.text(" \t\r\n", max_size=2)


def _array(items: list[Literal], ws: str) -> Literal:
    text = f"[{ws}" + ",".join(f"{ws}{i.text}{ws}" for i in items) + "]"
    return Literal(text, "[" + ",".join(i.compact for i in items) + "]")


def _object(pairs: dict[str, Literal], ws: str) -> Literal:
    text = "{" + ",".join(f"{ws}{json.dumps(k)}{ws}:{ws}{v.text}" for k, v in pairs.items()) + ws + "}"
    compact = "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{v.compact}" for k, v in pairs.items()) + "}"
    return Literal(text, compact)


scalars = st.one_of(
    json_numbers.map(lambda n: Literal(n, n)),
    st.builds(
        lambda s, ascii_only: Literal(json.dumps(s, ensure_ascii=ascii_only), json.dumps(s, ensure_ascii=False)),
        plain_strings,
        st.booleans(),
    ),
    st.sampled_from([Literal("true", "true"), Literal("false", "false"), Literal("null", "null")]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.builds(_array, st.lists(children, max_size=5), whitespace),
        st.builds(_object, st.dictionaries(plain_strings, children, max_size=5), whitespace),
    ),
    max_leaves=30,
)


@settings(max_examples=400)
@given(documents)
def test_any_json_go_accepts_is_parsed_with_its_number_text(doc: Literal) -> None:
    assert gojson.compact(gojson.unmarshal(doc.text)).decode() == doc.compact
    assert gojson.compact(_GoParser(doc.text.encode()).document()).decode() == doc.compact


@settings(max_examples=300)
@given(documents, st.booleans())
def test_any_json_body_go_accepts_makes_an_input_document_opa_can_read(doc: Literal, raw: bool) -> None:
    body = {"raw_body": doc.text.encode()} if raw else {"body": doc.text}
    document = build_input(http_request("/", headers={"content-type": "application/json"}, **body))
    text = gojson.compact(document)
    # Valid UTF-8, strict JSON (no NaN or Infinity): what OPA's decoder accepts.
    json.loads(text.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    # ...and the body's numbers reach the policy as written.
    assert number_text(text)["parsed_body"] == number_text(doc.compact)


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_any_bytes_either_parse_or_are_refused_with_a_go_message(raw: bytes) -> None:
    try:
        value = gojson.unmarshal(raw)
    except gojson.GoJSONError as e:
        message = str(e)
        assert message.startswith(("invalid character", "unexpected EOF", "EOF", "error: invalid character"))
        return
    text = gojson.compact(value)
    text.decode("utf-8")  # never a surrogate or an invalid byte
    json.loads(text)
