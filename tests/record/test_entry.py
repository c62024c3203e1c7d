"""The ledger entry encoding: the sequence number the writer prepends to what a handler encoded."""

from __future__ import annotations

import pytest

from authz_ledger.record.entry import sequence_prefix


@pytest.mark.parametrize(
    ("seq", "expected"),
    [
        pytest.param(0, b"\x08\x00", id="sequence 0 is still written, so every entry starts with field 1"),
        pytest.param(1, b"\x08\x01", id="one byte varint"),
        pytest.param(300, b"\x08\xac\x02", id="two byte varint as protobuf encodes 300"),
        pytest.param(2**21, b"\x08\x80\x80\x80\x01", id="the first four byte varint"),
        pytest.param(2**28 - 1, b"\x08\xff\xff\xff\x7f", id="the last four byte varint"),
        pytest.param(2**40, b"\x08\x80\x80\x80\x80\x80\x20", id="large sequence numbers"),
    ],
)
def test_sequence_prefix_is_the_protobuf_encoding_of_field_1(seq: int, expected: bytes) -> None:
    assert sequence_prefix(seq) == expected
