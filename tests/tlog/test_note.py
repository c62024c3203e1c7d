"""C2SP signed notes: golang.org/x/mod and C2SP vectors byte for byte, malformed notes, rotation."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz_ledger.errors import NoteError
from authz_ledger.tlog.note import (
    Signer,
    Verifier,
    add_signatures,
    compute_key_id,
    generate_signer,
    open_note,
    sign_note,
)
from tests.conftest import VECTORS

NOTE_VECTORS = {v["id"]: v for v in json.loads((VECTORS / "signed_note_vectors.json").read_text())["vectors"]}

PETER = NOTE_VECTORS["x-mod-sumdb-note-PeterNeumann"]
TWO = NOTE_VECTORS["x-mod-sumdb-note-two-signatures"]
TEXT = PETER["textUtf8"].encode()


def utf8(text: str) -> bytes:
    return text.encode("utf-8")


# --- Vectors ----------------------------------------------------------------------------------------------


def test_sumdb_private_key_yields_the_published_key_id_and_verifier_key() -> None:
    signer = Signer.from_private_key_string(PETER["privateKey_skey"])
    assert signer.name == "PeterNeumann"
    assert f"{signer.key_id:08x}" == PETER["keyIdHex"]
    assert signer.verifier_key() == PETER["vkey"]
    assert signer.private_key_string() == PETER["privateKey_skey"]
    assert signer.verifier().public_key.hex() == PETER["publicKeyHex"]


def test_key_id_is_sha256_of_name_newline_type_and_key() -> None:
    public = bytes.fromhex(PETER["publicKeyHex"])
    assert compute_key_id("PeterNeumann", b"\x01" + public) == int(PETER["keyIdHex"], 16)


def test_signer_from_name_and_seed_matches_the_key_string() -> None:
    seed = bytes.fromhex(PETER["privateSeedHex"])
    signer = Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))
    assert signer.private_key_string() == PETER["privateKey_skey"]


def test_sumdb_note_is_reproduced_byte_for_byte() -> None:
    signer = Signer.from_private_key_string(PETER["privateKey_skey"])
    assert sign_note(TEXT, [signer]) == utf8(PETER["signedNoteUtf8"])


def test_sumdb_note_opens_with_its_verifier_key() -> None:
    note = open_note(utf8(PETER["signedNoteUtf8"]), [Verifier.from_vkey(PETER["vkey"])])
    assert note.text == TEXT
    assert [(s.name, f"{s.key_id:08x}") for s in note.verified] == [("PeterNeumann", "c74f20a3")]


def test_two_signature_note_with_one_known_key_verifies_one_and_ignores_the_other() -> None:
    note = open_note(utf8(TWO["noteUtf8"]), [Verifier.from_vkey(TWO["vkeys"][0])])
    assert [s.name for s in note.verified] == ["PeterNeumann"]
    assert [s.name for s in note.signatures] == ["PeterNeumann", "EnochRoot"]


def test_two_signature_note_with_both_keys_verifies_both() -> None:
    note = open_note(utf8(TWO["noteUtf8"]), [Verifier.from_vkey(v) for v in TWO["vkeys"]])
    assert [s.name for s in note.verified] == ["PeterNeumann", "EnochRoot"]


def test_two_signature_note_with_no_known_key_is_rejected() -> None:
    stranger = generate_signer("PeterNeumann").verifier()  # same name, other key: still unknown
    with pytest.raises(NoteError, match="no verifiable signature"):
        open_note(utf8(TWO["noteUtf8"]), [stranger])
    with pytest.raises(NoteError):
        open_note(utf8(TWO["noteUtf8"]), [])


@pytest.mark.parametrize(
    "vkey",
    [
        pytest.param(v, id=f"sumdb rejects a verifier key with {why}")
        for v, why in zip(
            NOTE_VECTORS["x-mod-sumdb-note-bad-vkeys"]["mustReject"],
            NOTE_VECTORS["x-mod-sumdb-note-bad-vkeys"]["why"],
            strict=True,
        )
    ],
)
def test_malformed_verifier_key_vectors_are_rejected(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_vkey(vkey)


def test_c2sp_example_note_verifies() -> None:
    example = NOTE_VECTORS["c2sp-signed-note-example"]
    note = open_note(utf8(example["noteUtf8"]), [Verifier.from_vkey(example["vkey"])])
    assert note.text == b"This is an example message.\n"


@pytest.mark.parametrize(
    "pair",
    NOTE_VECTORS["transparency-dev-formats-test-keys"]["keypairs"],
    ids=lambda p: f"transparency-dev key {p['vkey'].split('+')[0]} derives its verifier key",
)
def test_transparency_dev_key_pairs(pair: dict[str, Any]) -> None:
    signer = Signer.from_private_key_string(pair["skey"])
    assert signer.verifier_key() == pair["vkey"]
    assert Verifier.from_vkey(pair["vkey"]).vkey() == pair["vkey"]
    assert signer.private_key_string() == pair["skey"]


# --- Verifier and private key strings ---------------------------------------------------------------------


def vkey_with(name: str, key: bytes) -> str:
    return f"{name}+{compute_key_id(name, key):08x}+{base64.b64encode(key).decode()}"


PUB = b"\x01" + bytes.fromhex(PETER["publicKeyHex"])

BAD_VKEYS = {
    "an empty name": vkey_with("", PUB),
    "a space in the name": vkey_with("Peter Neumann", PUB),
    "a tab in the name": vkey_with("Peter\tNeumann", PUB),
    "a non-breaking space in the name": vkey_with("Peter\u00a0Neumann", PUB),
    "a non-printable character in the name": vkey_with("Peter\u200bNeumann", PUB),
    "a control character in the name": vkey_with("Peter\x7fNeumann", PUB),
    "a short hex key id": "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "a non-hex key id": "PeterNeumann+c74f20ag+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "a key id that does not match": "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "a key id with a sign": "PeterNeumann+-74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "no key": "PeterNeumann+c74f20a3",
    "an empty key": vkey_with("PeterNeumann", b""),
    "unpadded base64": "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"[:-1],
    "a trailing newline": PETER["vkey"] + "\n",
    "the Ed25519 cosignature algorithm 0x04": vkey_with("PeterNeumann", b"\x04" + PUB[1:]),
    "a 31-byte key": vkey_with("PeterNeumann", PUB[:-1]),
    "a 33-byte key": vkey_with("PeterNeumann", PUB + b"\x00"),
}


@pytest.mark.parametrize("vkey", BAD_VKEYS.values(), ids=[f"verifier key with {k} is rejected" for k in BAD_VKEYS])
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_vkey(vkey)


def test_uppercase_hex_key_id_is_accepted_like_sumdb() -> None:
    assert Verifier.from_vkey(PETER["vkey"].replace("c74f20a3", "C74F20A3")).vkey() == PETER["vkey"]


SKEY = PETER["privateKey_skey"]
BAD_SKEYS = {
    "no PRIVATE+KEY prefix": SKEY.removeprefix("PRIVATE+KEY+"),
    "a key id that does not match": SKEY.replace("c74f20a3", "c74f20a4"),
    "a truncated seed": SKEY[:-4],
    "the wrong algorithm byte": SKEY.replace("+AYEK", "+AoEK"),
    "a space in the name": SKEY.replace("PeterNeumann", "Peter Neumann"),
}


@pytest.mark.parametrize("skey", BAD_SKEYS.values(), ids=[f"private key with {k} is rejected" for k in BAD_SKEYS])
def test_malformed_private_keys_are_rejected_without_echoing_them(skey: str) -> None:
    with pytest.raises(NoteError) as info:
        Signer.from_private_key_string(skey)
    assert "AYEKFALV" not in str(info.value)


def test_signer_repr_does_not_leak_the_private_key() -> None:
    signer = Signer.from_private_key_string(SKEY)
    assert "AYEKFALV" not in repr(signer)
    assert "c74f20a3" in repr(signer)


# --- Round trips, rotation, tampering --------------------------------------------------------------------


def test_round_trip_with_a_generated_key() -> None:
    signer = generate_signer("authz-ledger.example/test")
    msg = sign_note(b"hello\n", [signer])
    assert open_note(msg, [Verifier.from_vkey(signer.verifier_key())]).text == b"hello\n"
    again = Signer.from_private_key_string(signer.private_key_string())
    assert sign_note(b"hello\n", [again]) == msg  # Ed25519 is deterministic


def test_multiple_signatures_all_verify() -> None:
    signers = [generate_signer(f"k{i}") for i in range(5)]
    note = open_note(sign_note(b"text\n", signers), [s.verifier() for s in signers])
    assert [s.name for s in note.verified] == [f"k{i}" for i in range(5)]


def test_rotation_a_note_signed_by_old_and_new_keys_verifies_with_either() -> None:
    old, new = generate_signer("log.example/a"), generate_signer("log.example/a")
    msg = sign_note(b"rotating\n", [old, new])
    for trusted in (old, new):
        note = open_note(msg, [Verifier.from_vkey(trusted.verifier_key())])
        assert [s.key_id for s in note.verified] == [trusted.key_id]
        assert len(note.signatures) == 2


def test_add_signatures_appends_and_replaces_only_the_same_key() -> None:
    log, witness = generate_signer("log"), generate_signer("witness")
    msg = sign_note(b"head\n", [log])
    cosigned = add_signatures(msg, [witness])
    assert cosigned.startswith(msg)
    note = open_note(cosigned, [log.verifier(), witness.verifier()])
    assert [s.name for s in note.verified] == ["log", "witness"]
    assert add_signatures(cosigned, [witness]) == cosigned  # re-signing replaces, never duplicates


def test_add_signatures_preserves_unknown_lines_byte_for_byte() -> None:
    enoch_line = utf8(TWO["noteUtf8"]).split(b"\n")[-2]
    extra = generate_signer("extra")
    out = add_signatures(utf8(TWO["noteUtf8"]), [extra])
    assert enoch_line + b"\n" in out
    assert open_note(out, [extra.verifier()]).text == TEXT


def test_tampered_text_is_rejected() -> None:
    signer = generate_signer("log")
    msg = sign_note(b"amount: 10\n", [signer])
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(msg.replace(b"10", b"11"), [signer.verifier()])


def test_a_bad_signature_by_a_known_key_fails_the_note_even_with_another_good_one() -> None:
    good, bad = generate_signer("good"), generate_signer("bad")
    msg = sign_note(b"x\n", [good, bad])
    forged = add_signatures(msg.replace(b"x\n", b"y\n", 1), [good])  # bad's signature is now over the wrong text
    with pytest.raises(NoteError, match="invalid signature by bad"):
        open_note(forged, [good.verifier(), bad.verifier()])
    assert [s.name for s in open_note(forged, [good.verifier()]).verified] == ["good"]


def test_repeated_lines_count_once() -> None:
    signer = generate_signer("log")
    msg = sign_note(b"x\n", [signer])
    line = msg.split(b"\n\n")[1]
    note = open_note(msg + line, [signer.verifier()])
    assert len(note.signatures) == 1
    assert len(note.verified) == 1


def test_the_same_verifier_twice_is_harmless() -> None:
    a = generate_signer("same")
    opened = open_note(sign_note(b"x\n", [a]), [a.verifier(), Verifier.from_vkey(a.verifier_key())])
    assert opened.text == b"x\n"
    assert len(opened.verified) == 1  # one signature, counted once however many times its key is trusted


def test_two_keys_with_the_same_name_and_id_are_refused_as_ambiguous() -> None:
    a, b = generate_signer("same"), generate_signer("same")
    colliding = b.verifier()
    colliding._key_id = a.key_id  # a 32-bit key ID collision, forced rather than searched for
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(sign_note(b"x\n", [a]), [a.verifier(), colliding])


def test_text_that_looks_like_signatures_stays_text() -> None:
    signer = generate_signer("log")
    text = b"first\n\n\xe2\x80\x94 log AAAAAAA=\n\n"
    note = open_note(sign_note(text, [signer]), [signer.verifier()])
    assert note.text == text
    assert len(note.signatures) == 1


# --- Malformed notes (sumdb/note Open rules) -------------------------------------------------------------

SIGNED = utf8(PETER["signedNoteUtf8"])
SIG_LINE = SIGNED.split(b"\n\n")[1]

MALFORMED = {
    "no blank line before the signatures": SIGNED.replace(b"\n\n", b"\n"),
    "no signature lines": TEXT + b"\n",
    "no final newline": SIGNED[:-1],
    "a signature line without the em dash": SIGNED.replace("— ".encode(), b"- "),
    "an en dash instead of the em dash": SIGNED.replace("\u2014 ".encode(), "\u2013 ".encode()),
    "no space after the key name": SIGNED.replace(b"PeterNeumann ", b"PeterNeumann"),
    "two spaces after the key name": SIGNED.replace(b"PeterNeumann ", b"PeterNeumann  "),
    "a plus in the key name": SIGNED.replace(b"PeterNeumann ", b"Peter+Neumann "),
    "an empty key name": SIGNED.replace(b"PeterNeumann ", b" "),
    "unpadded base64": SIGNED.replace(b"AM=\n", b"AM\n"),
    "base64 with a character outside the alphabet": SIGNED.replace(b"x08go", b"x08g!"),
    "a signature of four bytes": TEXT + b"\n" + "— PeterNeumann AAAAAA==\n".encode(),
    "a carriage return": SIGNED.replace(b"problem,\n", b"problem,\r\n"),
    "a NUL byte in the text": b"\x00" + SIGNED,
    "invalid UTF-8": b"\xff" + SIGNED,
    "a trailing blank line": SIGNED + b"\n",
    "more than 100 signature lines": TEXT
    + b"\n"
    + b"".join(f"— k{i} AAAAAAA=\n".encode() for i in range(100))
    + SIG_LINE,
}


@pytest.mark.parametrize("msg", MALFORMED.values(), ids=[f"note with {k} is rejected" for k in MALFORMED])
def test_malformed_notes_are_rejected(msg: bytes) -> None:
    assert msg != SIGNED
    with pytest.raises(NoteError):
        open_note(msg, [Verifier.from_vkey(PETER["vkey"])])


def test_one_hundred_signature_lines_are_accepted() -> None:
    msg = TEXT + b"\n" + b"".join(f"— k{i} AAAAAAA=\n".encode() for i in range(99)) + SIG_LINE
    assert len(open_note(msg, [Verifier.from_vkey(PETER["vkey"])]).signatures) == 100


BAD_TEXTS = {
    "empty text": b"",
    "text without a final newline": b"abc",
    "text with a carriage return": b"a\r\n",
    "text with a tab": b"a\tb\n",
    "text that is not UTF-8": b"\xc3\x28\n",
}


@pytest.mark.parametrize("text", BAD_TEXTS.values(), ids=[f"signing {k} is refused" for k in BAD_TEXTS])
def test_invalid_texts_are_not_signed(text: bytes) -> None:
    with pytest.raises(NoteError):
        sign_note(text, [generate_signer("log")])


def test_signing_needs_a_signer_and_distinct_keys() -> None:
    signer = generate_signer("log")
    with pytest.raises(NoteError):
        sign_note(b"x\n", [])
    with pytest.raises(NoteError):
        sign_note(b"x\n", [signer, signer])
