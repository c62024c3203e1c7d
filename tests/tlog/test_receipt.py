"""C2SP tlog-proof receipts: the exact text format, strict parsing, offline verification. Pure: no disk, no sockets.

Trees and proofs here come from the test's own RFC 9162 implementation (tests/rfc9162.py), not from the ledger.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.errors import NoteError, ProofError
from authz_ledger.tlog import checkpoint, note
from authz_ledger.tlog.receipt import Receipt, build_receipt, parse_receipt, verify_receipt
from tests.support import rfc9162

ORIGIN = "authz-ledger.test/receipts"
SIGNER = note.generate_signer(ORIGIN)
OTHER = note.generate_signer(ORIGIN)  # same name, different key
ENTRIES = [b"entry %d" % i for i in range(13)]


def signed_checkpoint(entries: list[bytes], signers: list[note.Signer] | None = None) -> bytes:
    cp = checkpoint.Checkpoint(ORIGIN, len(entries), rfc9162.mth(entries))
    return checkpoint.sign_checkpoint(cp, signers or [SIGNER])


def receipt_for(index: int, entries: list[bytes] = ENTRIES, extra: bytes | None = None) -> bytes:
    return build_receipt(index, rfc9162.path(index, entries), signed_checkpoint(entries), extra)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# --- the format --------------------------------------------------------------------------------------------


def test_the_text_is_exactly_the_specs_format() -> None:
    hashes = [bytes([i]) * 32 for i in range(3)]
    cp = signed_checkpoint(ENTRIES)
    got = build_receipt(73894, hashes, cp, extra=b"context")
    want = (
        "c2sp.org/tlog-proof@v1\n"
        f"extra {b64(b'context')}\n"
        "index 73894\n" + "".join(f"{b64(h)}\n" for h in hashes) + "\n"
    ).encode() + cp
    assert got == want


def test_without_extra_data_the_extra_line_is_omitted() -> None:
    got = receipt_for(0)
    assert got.split(b"\n")[:2] == [b"c2sp.org/tlog-proof@v1", b"index 0"]


def test_a_one_entry_tree_has_no_proof_lines() -> None:
    cp = signed_checkpoint(ENTRIES[:1])
    got = build_receipt(0, [], cp)
    assert got == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + cp
    assert verify_receipt(got, ENTRIES[0], [SIGNER.verifier()]).size == 1


def test_the_specs_example_parses() -> None:
    # The example in c2sp.org/tlog-proof (its signatures are elided, so it parses but cannot verify).
    example = (
        "c2sp.org/tlog-proof@v1\n"
        "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
        "index 73894\n"
        "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
        "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
        "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
        "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
        "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
        "\n"
        "example.com/fancylog\n"
        "109482\n"
        "sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=\n"
        "\n"
        "— example.com/fancylog hI2DJw[...]1roloI=\n"
    ).encode()
    parsed = parse_receipt(example)
    assert parsed.index == 73894
    assert len(parsed.proof) == 5
    assert parsed.extra == base64.b64decode("YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ")
    assert parsed.checkpoint.startswith(b"example.com/fancylog\n109482\n")


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, 2**64 - 1),
    hashes=st.lists(st.binary(min_size=32, max_size=32), max_size=64),
    extra=st.none() | st.binary(max_size=200),
)
def test_parse_gives_back_exactly_what_was_built(index: int, hashes: list[bytes], extra: bytes | None) -> None:
    cp = signed_checkpoint(ENTRIES)
    assert parse_receipt(build_receipt(index, hashes, cp, extra)) == Receipt(index, tuple(hashes), cp, extra)


GOOD = receipt_for(5, extra=b"x")
HEADER, _, CHECKPOINT = GOOD.partition(b"\n\n")
H = b64(b"\x07" * 32)

MALFORMED: dict[str, bytes] = {
    "an empty input": b"",
    "a wrong version line": GOOD.replace(b"c2sp.org/tlog-proof@v1", b"c2sp.org/tlog-proof@v2", 1),
    "no version line": GOOD.split(b"\n", 1)[1],
    "an index with a leading zero": GOOD.replace(b"index 5\n", b"index 05\n"),
    "a negative index": GOOD.replace(b"index 5\n", b"index -5\n"),
    "an index beyond uint64": GOOD.replace(b"index 5\n", b"index 18446744073709551616\n"),
    "an index in capitals": GOOD.replace(b"index 5\n", b"Index 5\n"),
    "no index line": GOOD.replace(b"index 5\n", b""),
    "the extra line after the index line": HEADER.replace(b"extra eA==\nindex 5", b"index 5\nextra eA==")
    + b"\n\n"
    + CHECKPOINT,
    "extra data that is not canonical base64": GOOD.replace(b"extra eA==", b"extra eB=="),
    "a proof hash of 31 bytes": HEADER + f"\n{b64(bytes(31))}".encode() + b"\n\n" + CHECKPOINT,
    "a proof hash in URL-safe base64": HEADER
    + b"\n"
    + b64(b"\xfb" * 32).replace("+", "-").encode()
    + b"\n\n"
    + CHECKPOINT,
    "a proof hash with trailing space": HEADER + f"\n{H} ".encode() + b"\n\n" + CHECKPOINT,
    "65 proof hashes": b"c2sp.org/tlog-proof@v1\nindex 0\n" + f"{H}\n".encode() * 65 + b"\n" + CHECKPOINT,
    "no empty line before the checkpoint": HEADER + b"\n" + CHECKPOINT,
    "no checkpoint after the empty line": HEADER + b"\n\n",
    "non-ASCII in the header": GOOD.replace(b"index 5", "index \uff15".encode()),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_receipt_is_refused(data: bytes) -> None:
    with pytest.raises(ProofError, match="receipt"):
        parse_receipt(data)


def test_build_refuses_what_it_could_not_write_faithfully() -> None:
    cp = signed_checkpoint(ENTRIES)
    with pytest.raises(ProofError):
        build_receipt(-1, [], cp)
    with pytest.raises(ProofError):
        build_receipt(0, [b"short"], cp)
    with pytest.raises(ProofError):
        build_receipt(0, [], b"not a signed note")


# --- verification -------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_entry_of_random_trees_verifies_offline(data: st.DataObject) -> None:
    entries = data.draw(st.lists(st.binary(max_size=40), min_size=1, max_size=70))
    index = data.draw(st.integers(0, len(entries) - 1))
    r = build_receipt(index, rfc9162.path(index, entries), signed_checkpoint(entries))
    cp = verify_receipt(r, entries[index], [SIGNER.verifier()], ORIGIN)
    assert (cp.origin, cp.size, cp.root) == (ORIGIN, len(entries), rfc9162.mth(entries))


def test_extra_data_plays_no_part_in_verification() -> None:
    assert verify_receipt(receipt_for(5, extra=b"anything at all"), ENTRIES[5], [SIGNER.verifier()]).size == 13


def test_witness_cosignatures_by_unknown_keys_do_not_stop_verification() -> None:
    witness = note.generate_signer("witness.example")
    cp = note.add_signatures(signed_checkpoint(ENTRIES), [witness])
    r = build_receipt(3, rfc9162.path(3, ENTRIES), cp)
    assert verify_receipt(r, ENTRIES[3], [SIGNER.verifier()]).size == 13


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ 1]) + out[i][1:]
    return out


PATH5 = rfc9162.path(5, ENTRIES)
CP = signed_checkpoint(ENTRIES)
BAD: dict[str, tuple[bytes, bytes, list[note.Signer], str | None, type[Exception]]] = {
    "other entry bytes": (receipt_for(5), ENTRIES[6], [SIGNER], None, ProofError),
    "the entry with one byte more": (receipt_for(5), ENTRIES[5] + b"\x00", [SIGNER], None, ProofError),
    "the receipt's index changed": (build_receipt(4, PATH5, CP), ENTRIES[5], [SIGNER], None, ProofError),
    "a proof hash flipped": (build_receipt(5, _flip(PATH5, 1), CP), ENTRIES[5], [SIGNER], None, ProofError),
    "a proof hash left out": (build_receipt(5, PATH5[:-1], CP), ENTRIES[5], [SIGNER], None, ProofError),
    "a proof hash too many": (build_receipt(5, [*PATH5, PATH5[0]], CP), ENTRIES[5], [SIGNER], None, ProofError),
    "an index beyond the tree": (build_receipt(13, PATH5, CP), ENTRIES[5], [SIGNER], None, ProofError),
    "a checkpoint of a smaller tree": (
        build_receipt(5, PATH5, signed_checkpoint(ENTRIES[:12])),
        ENTRIES[5],
        [SIGNER],
        None,
        ProofError,
    ),
    "a checkpoint signed by another key of the same name": (
        build_receipt(5, PATH5, signed_checkpoint(ENTRIES, [OTHER])),
        ENTRIES[5],
        [SIGNER],
        None,
        NoteError,
    ),
    "a checkpoint whose text was edited after signing": (
        build_receipt(5, PATH5, CP.replace(b"\n13\n", b"\n14\n", 1)),
        ENTRIES[5],
        [SIGNER],
        None,
        NoteError,
    ),
    "a checkpoint for another origin than required": (
        receipt_for(5),
        ENTRIES[5],
        [SIGNER],
        "other.example/log",
        NoteError,
    ),
}


@pytest.mark.parametrize(("data", "entry", "signers", "origin", "error"), BAD.values(), ids=BAD.keys())
def test_a_receipt_that_does_not_prove_the_entry_is_refused(
    data: bytes, entry: bytes, signers: list[note.Signer], origin: str | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        verify_receipt(data, entry, [s.verifier() for s in signers], origin)
