"""The pack's text formats and archive: strict parsing that names the line, and the same bytes for the same
contents."""

from __future__ import annotations

import base64
import hashlib

import pytest

from authz_ledger.errors import ProofError
from authz_ledger.evidence import pack
from authz_ledger.record.entry import DecisionRecord

H = hashlib.sha256(b"x").digest()
B64 = base64.b64encode(H)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(b"0 2 " + B64, "no newline", id="a last line without its newline is refused"),
        pytest.param(b"0 2 " + B64[:-2] + b"==\n", "line 1", id="a hash that is not 32 bytes is refused"),
        pytest.param(b"00 2 " + B64 + b"\n", "line 1", id="a number with a leading zero is refused"),
        pytest.param(b"2 2 " + B64 + b"\n", "non-empty", id="an empty range is refused"),
        pytest.param(b"2 4 " + B64 + b"\n0 2 " + B64 + b"\n", "line 2", id="unsorted ranges are refused"),
        pytest.param(b"0 2 " + B64 + b"\n0 2 " + B64 + b"\n", "line 2", id="a repeated range is refused"),
        pytest.param(b"0 2  " + B64 + b"\n", "line 1", id="an extra space is refused"),
    ],
)
def test_proof_nodes_parse_strictly_and_name_the_line(text: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        pack.parse_nodes(text)


def test_proof_nodes_round_trip() -> None:
    nodes = {(0, 2): H, (2, 3): hashlib.sha256(b"y").digest(), (4, 8): hashlib.sha256(b"z").digest()}
    assert pack.parse_nodes(pack.format_nodes(nodes)) == nodes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(B64, "no newline", id="a last line without its newline is refused"),
        pytest.param(b"not base64!\n", "line 1", id="text that is not base64 is refused"),
        pytest.param(B64 + b"\n" + base64.b64encode(b"short") + b"\n", "line 2", id="a short hash is refused"),
    ],
)
def test_hash_lists_parse_strictly(text: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        pack.parse_hashes(text)


def test_an_empty_hash_list_is_the_empty_proof() -> None:
    assert pack.parse_hashes(b"") == []
    assert pack.parse_hashes(pack.format_hashes([H, H])) == [H, H]


def test_the_manifest_round_trips_and_refuses_another_format() -> None:
    m = pack.Manifest(
        origin="o.example/log",
        selection=pack.Selection(1, 2, "user:alice"),
        created_ns=3,
        complete=False,
        first_index=4,
        end_index=9,
        entries=2,
        checkpoint_size=10,
        latest_size=12,
        user_headers=("x-user",),
        digests={"README.txt": "ab" * 32},
    )
    assert pack.Manifest.parse(m.to_bytes()) == m
    with pytest.raises(ProofError, match="format"):
        pack.Manifest.parse(m.to_bytes().replace(pack.FORMAT.encode(), b"authz-ledger-evidence/9"))
    with pytest.raises(ProofError, match="'entries'"):
        pack.Manifest.parse(m.to_bytes().replace(b'"entries": 2', b'"entries": "2"'))


def test_the_same_members_give_the_same_archive_bytes() -> None:
    members = {name: name.encode() * 3 for name in pack.MEMBERS}
    assert pack.write_zip(members) == pack.write_zip(dict(members))
    opened = pack.read_zip(pack.write_zip(members))
    assert opened.members == members and not opened.problems


def test_a_damaged_member_is_named_and_the_others_are_still_read() -> None:
    members = {name: (name * 40).encode() for name in pack.MEMBERS}
    archive = bytearray(pack.write_zip(members))
    # Flip a byte of the deflated data of entries.jsonl: between its local header's name and the next member.
    at = archive.find(pack.ENTRIES.encode()) + len(pack.ENTRIES) + 3
    archive[at] ^= 0x40
    opened = pack.read_zip(bytes(archive))
    assert [name for name, _ in opened.problems] == [pack.ENTRIES]
    assert set(opened.members) == set(pack.MEMBERS) - {pack.ENTRIES}


def test_an_archive_that_is_not_a_zip_is_named() -> None:
    assert pack.read_zip(b"not a zip").problems[0][0] == "(archive)"


@pytest.mark.parametrize(
    ("input_json", "shown"),
    [
        pytest.param(b'{"a":1}', b'"input": {"a":1}', id="a JSON document is placed as recorded"),
        pytest.param(
            b'{"n":123456789012345678901234567890}', b"123456789012345678901234567890", id="large integers stay exact"
        ),
        pytest.param(b"", b'"input": null', id="no document is null"),
        pytest.param(
            b'{"a":\n1}', b'"input": {"undecodable": "{\\"a\\":\\n1}"}', id="a document on two lines is quoted"
        ),
        pytest.param(b"{not json", b'"input": {"undecodable": "{not json"}', id="text that is not JSON is quoted"),
    ],
)
def test_entry_lines_are_json_with_the_recorded_documents(input_json: bytes, shown: bytes) -> None:
    import json

    data = DecisionRecord(time_unix_nano=5, decision_id="d-1", input_json=input_json, result_json=b"true").encode()
    line = pack.entry_line(7, data)
    assert shown in line and b"\n" not in line
    doc = json.loads(line)
    assert (doc["index"], doc["decision_id"], doc["result"]) == (7, "d-1", True)
    assert base64.b64decode(doc["entry_b64"]) == data
    assert list(doc)[:3] == ["index", "decision_id", "entry_b64"] and list(doc)[-2:] == ["input", "result"]
