"""C2SP tlog-checkpoint bodies: strict parsing, round trips, signing and opening with the origin rule."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz_ledger.errors import NoteError
from authz_ledger.tlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from authz_ledger.tlog.note import Signer, Verifier, add_signatures, generate_signer, open_note, sign_note
from tests.conftest import VECTORS

NOTE_VECTORS = {v["id"]: v for v in json.loads((VECTORS / "signed_note_vectors.json").read_text())["vectors"]}
COSIGNED = NOTE_VECTORS["DERIVED-checkpoint-with-cosignature-v1"]

ROOT8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
ROOT8_B64 = base64.b64encode(ROOT8).decode()
ORIGIN = "authz-ledger.example/prod-eu-1"
URLSAFE_ROOT_B64 = base64.urlsafe_b64encode(b"\xfb" * 32).decode()


def test_text_layout() -> None:
    cp = Checkpoint("example.com/research-log", 8, ROOT8)
    assert cp.to_text() == COSIGNED["checkpointTextUtf8"].encode()
    assert Checkpoint.parse(cp.to_text()) == cp


def test_extension_lines_round_trip() -> None:
    cp = Checkpoint(ORIGIN, 0, ROOT8, ("ext one", "ext two"))
    assert cp.to_text().endswith(b"\next one\next two\n")
    assert Checkpoint.parse(cp.to_text()) == cp


_LINE_CHARS = st.characters(min_codepoint=0x20, blacklist_categories=("Cs",))  # text, not lone surrogates


@given(
    st.text(_LINE_CHARS, min_size=1),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(_LINE_CHARS, min_size=1), max_size=3),
)
def test_every_checkpoint_round_trips(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(cp.to_text()) == cp


@pytest.mark.parametrize(
    ("origin", "extensions"),
    [
        pytest.param("\ud800", (), id="an origin with a lone surrogate is refused"),
        pytest.param("o", ("x\udfff",), id="an extension line with a lone surrogate is refused"),
    ],
)
def test_text_that_cannot_be_utf8_is_refused_on_construction(origin: str, extensions: tuple[str, ...]) -> None:
    with pytest.raises(NoteError, match="not valid Unicode"):
        Checkpoint(origin, 0, bytes(32), extensions)


MALFORMED = {
    "an empty origin": f"\n8\n{ROOT8_B64}\n",
    "no root line": "o\n8\n",
    "no final newline": f"o\n8\n{ROOT8_B64}",
    "a leading zero in the size": f"o\n08\n{ROOT8_B64}\n",
    "a negative size": f"o\n-8\n{ROOT8_B64}\n",
    "a plus sign in the size": f"o\n+8\n{ROOT8_B64}\n",
    "a space after the size": f"o\n8 \n{ROOT8_B64}\n",
    "an underscore in the size": f"o\n1_000\n{ROOT8_B64}\n",
    "non-ASCII digits in the size": f"o\n\u0668\n{ROOT8_B64}\n",
    "an empty size": f"o\n\n{ROOT8_B64}\n",
    "a size beyond uint64": f"o\n{2**64}\n{ROOT8_B64}\n",
    "a 31-byte root": f"o\n8\n{base64.b64encode(ROOT8[:31]).decode()}\n",
    "a 33-byte root": f"o\n8\n{base64.b64encode(ROOT8 + b'x').decode()}\n",
    "unpadded base64 root": f"o\n8\n{ROOT8_B64.rstrip('=')}\n",
    "URL-safe base64 root": f"o\n8\n{URLSAFE_ROOT_B64}\n",
    "a non-canonical base64 root": f"o\n8\n{ROOT8_B64[:-2]}h=\n",
    "an empty extension line": f"o\n8\n{ROOT8_B64}\n\next\n",
    "a trailing empty line": f"o\n8\n{ROOT8_B64}\n\n",
    "a carriage return": f"o\r\n8\n{ROOT8_B64}\n",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=[f"checkpoint with {k} is rejected" for k in MALFORMED])
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text.encode())


def test_invalid_utf8_is_rejected() -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(b"\xff\n8\n" + ROOT8_B64.encode() + b"\n")


@pytest.mark.parametrize(
    "fields",
    [
        ("", 1, ROOT8, ()),
        ("o", -1, ROOT8, ()),
        ("o", 1, ROOT8[:1], ()),
        ("o", 1, ROOT8, ("",)),
        ("a\nb", 1, ROOT8, ()),
    ],
    ids=["empty origin", "negative size", "short root", "empty extension", "newline in origin"],
)
def test_invalid_checkpoints_cannot_be_constructed(fields: tuple[str, int, bytes, tuple[str, ...]]) -> None:
    with pytest.raises(NoteError):
        Checkpoint(*fields)


def test_sign_and_open() -> None:
    signer = generate_signer(ORIGIN)
    cp = Checkpoint(ORIGIN, 8, ROOT8)
    got, note = open_checkpoint(sign_checkpoint(cp, [signer]), [signer.verifier()], origin=ORIGIN)
    assert got == cp
    assert [s.name for s in note.verified] == [ORIGIN]


def test_a_checkpoint_for_another_origin_is_rejected() -> None:
    signer = generate_signer(ORIGIN)
    msg = sign_checkpoint(Checkpoint(ORIGIN, 8, ROOT8), [signer])
    with pytest.raises(NoteError, match=r"want 'authz-ledger\.example/other'"):
        open_checkpoint(msg, [signer.verifier()], origin="authz-ledger.example/other")


def test_a_checkpoint_verified_only_by_a_key_named_otherwise_is_rejected() -> None:
    log, witness = generate_signer(ORIGIN), generate_signer("witness.example")
    msg = add_signatures(sign_checkpoint(Checkpoint(ORIGIN, 8, ROOT8), [log]), [witness])
    with pytest.raises(NoteError, match="named like the origin"):
        open_checkpoint(msg, [witness.verifier()])
    _, note = open_checkpoint(msg, [log.verifier(), witness.verifier()])
    assert [s.name for s in note.verified] == [ORIGIN, "witness.example"]


def test_signing_needs_a_key_named_like_the_origin() -> None:
    with pytest.raises(NoteError):
        sign_checkpoint(Checkpoint(ORIGIN, 8, ROOT8), [generate_signer("someone-else")])


def test_rotation_old_and_new_log_keys_each_open_the_checkpoint() -> None:
    old, new = generate_signer(ORIGIN), generate_signer(ORIGIN)
    msg = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT8), [old, new])
    for key in (old, new):
        assert open_checkpoint(msg, [Verifier.from_vkey(key.verifier_key())])[0].size == 3


def test_a_signed_note_that_is_not_a_checkpoint_is_rejected() -> None:
    signer = generate_signer(ORIGIN)
    with pytest.raises(NoteError):
        open_checkpoint(sign_note(f"{ORIGIN}\n8\n".encode(), [signer]), [signer.verifier()])


# --- The derived cosigned checkpoint vector ---------------------------------------------------------------


def test_derived_cosigned_checkpoint_is_reproduced_byte_for_byte() -> None:
    log = Signer.from_private_key_string(COSIGNED["logSkey"])
    assert log.verifier_key() == COSIGNED["logVkey"]
    cp = Checkpoint.parse(COSIGNED["checkpointTextUtf8"].encode())
    full = COSIGNED["fullNoteUtf8"].encode()
    log_only = full[: full.index("— Known".encode())]
    assert sign_note(cp.to_text(), [log]) == log_only


def test_derived_cosigned_checkpoint_opens_with_the_log_key_and_ignores_the_cosignature() -> None:
    full = COSIGNED["fullNoteUtf8"].encode()
    note = open_note(full, [Verifier.from_vkey(COSIGNED["logVkey"])])
    cp = Checkpoint.parse(note.text)
    assert (cp.origin, cp.size, cp.root) == ("example.com/research-log", 8, ROOT8)
    assert [s.name for s in note.verified] == ["Log"]
    known = next(s for s in note.signatures if s.name == "Known")
    # The tlog-cosignature (type 0x04) payload is an 8-byte timestamp then the signature.
    assert int.from_bytes(known.sig[:8], "big") == COSIGNED["timestamp"]
    assert f"{known.key_id:08x}" == COSIGNED["witnessCosigVkey_alg04"].split("+")[1]


def test_derived_cosigned_checkpoint_fails_the_origin_rule() -> None:
    # Its log key is named "Log", not "example.com/research-log": open_checkpoint requires the key name to be
    # the origin, so only open_note + Checkpoint.parse accept this vector.
    with pytest.raises(NoteError, match="named like the origin"):
        open_checkpoint(COSIGNED["fullNoteUtf8"].encode(), [Verifier.from_vkey(COSIGNED["logVkey"])])


def test_cosignature_vkey_is_not_an_ed25519_note_verifier() -> None:
    with pytest.raises(NoteError, match="unknown algorithm 0x04"):
        Verifier.from_vkey(COSIGNED["witnessCosigVkey_alg04"])
