"""JSON as Go writes it for OPA: documents at any depth, and float64 numbers in Go's text."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from authz_ledger.record import gojson


def test_the_writers_handle_any_depth_orjson_refuses() -> None:
    value: Any = "x"
    for i in range(3000):
        value = {"k": [value, i]} if i % 2 else [value]
    text = gojson.compact(value)
    assert text.startswith(b'{"k":[[{"k":[[') and text.endswith(b"],2997]}],2999]}")
    assert gojson.compact(gojson.unmarshal(text)) == text
    assert gojson.canonical(value) == text.decode()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_go_float_text_round_trips_and_follows_the_g_rule(value: float) -> None:
    text = gojson.go_float_text(value)
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    if value != 0:
        exponent = Decimal(repr(abs(value))).adjusted()
        assert ("e" in text) == (exponent < -4 or exponent >= 6)
        if "e" in text:
            assert re.fullmatch(r"-?\d(\.\d+)?e[+-]\d{2,3}", text)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_struct_number_is_written_as_go_writes_a_float64(value: float) -> None:
    # go_float_value leaves some floats to orjson, whose text must then be Go's too.
    assert gojson.compact(gojson.go_float_value(value)).decode() == gojson.go_float_text(value)
    assert gojson.canonical(gojson.go_float_value(value)) == gojson.go_float_text(value)
