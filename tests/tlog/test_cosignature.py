"""C2SP tlog-cosignature v1: the derived vector byte for byte, key IDs of type 0x04, round trips, tampering."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authz_ledger.errors import NoteError
from authz_ledger.tlog import checkpoint, cosignature, note
from authz_ledger.tlog.cosignature import CosignatureVerifier, Cosigner, add_cosignatures, verify_cosignature
from tests.conftest import VECTORS

NOTE_VECTORS = {v["id"]: v for v in json.loads((VECTORS / "signed_note_vectors.json").read_text())["vectors"]}
COSIGNED = NOTE_VECTORS["DERIVED-checkpoint-with-cosignature-v1"]
TEXT = COSIGNED["checkpointTextUtf8"].encode()
TIMESTAMP = COSIGNED["timestamp"]


def seed_of(skey: str) -> bytes:
    raw = base64.b64decode(skey.split("+", 4)[4])  # PRIVATE+KEY+<name>+<id>+<base64>
    assert raw[0] == 0x01
    return raw[1:]


@pytest.fixture
def witness() -> Cosigner:
    seed = seed_of(COSIGNED["witnessSkeySeedFrom"])
    return Cosigner("Known", Ed25519PrivateKey.from_private_bytes(seed))


@pytest.fixture
def log_verifier() -> note.Verifier:
    return note.Verifier.from_vkey(COSIGNED["logVkey"])


def cosignature_line(full_note: str) -> note.Signature:
    line = next(ln for ln in full_note.splitlines() if ln.startswith("— Known "))
    raw = base64.b64decode(line.split(" ")[2])
    return note.Signature("Known", int.from_bytes(raw[:4], "big"), raw[4:])


# --- The derived vector -------------------------------------------------------------------------------------


def test_cosigner_key_from_the_published_seed_has_the_vector_vkey_of_type_0x04(witness: Cosigner) -> None:
    assert witness.vkey() == COSIGNED["witnessCosigVkey_alg04"]
    assert base64.b64decode(witness.vkey().split("+")[2])[0] == 0x04


def test_cosigner_key_id_is_sha256_of_name_newline_0x04_and_the_public_key(witness: Cosigner) -> None:
    public = witness.verifier().public_key
    want = int.from_bytes(hashlib.sha256(b"Known\n\x04" + public).digest()[:4], "big")
    assert witness.key_id == want == 0xFDD35892
    plain = note.Verifier("Known", Ed25519PublicKey.from_public_bytes(public))
    assert plain.key_id != witness.key_id  # the same key as a 0x01 note key is another identity


def test_signed_message_is_header_time_line_and_the_checkpoint_text() -> None:
    assert cosignature.signed_message(TEXT, TIMESTAMP) == COSIGNED["cosignedMessageUtf8"].encode()


def test_cosigning_the_vector_checkpoint_reproduces_its_cosignature_line_byte_for_byte(witness: Cosigner) -> None:
    sig = witness.cosign(TEXT, TIMESTAMP)
    assert sig.line() in COSIGNED["fullNoteUtf8"].splitlines()


def test_the_vector_cosignature_verifies_with_the_raw_ed25519_key_over_the_spec_message(witness: Cosigner) -> None:
    sig = cosignature_line(COSIGNED["fullNoteUtf8"])
    assert struct.unpack(">Q", sig.sig[:8])[0] == TIMESTAMP
    public = Ed25519PublicKey.from_public_bytes(witness.verifier().public_key)
    public.verify(sig.sig[8:], COSIGNED["cosignedMessageUtf8"].encode())  # raises if wrong


def test_verify_cosignature_returns_the_vector_timestamp() -> None:
    verifier = CosignatureVerifier.from_vkey(COSIGNED["witnessCosigVkey_alg04"])
    assert verify_cosignature(verifier, cosignature_line(COSIGNED["fullNoteUtf8"]), TEXT) == TIMESTAMP


def test_the_vector_note_opens_with_log_and_witness_keys_and_both_count_as_verified(
    log_verifier: note.Verifier,
) -> None:
    witness = CosignatureVerifier.from_vkey(COSIGNED["witnessCosigVkey_alg04"])
    opened = note.open_note(COSIGNED["fullNoteUtf8"].encode(), [log_verifier, witness])
    cp = checkpoint.Checkpoint.parse(opened.text)
    assert (cp.origin, cp.size) == ("example.com/research-log", 8)
    assert [s.name for s in opened.verified] == ["Log", "Known"]


def test_with_only_the_log_key_the_cosignature_is_an_ignored_unknown_signature(log_verifier: note.Verifier) -> None:
    opened = note.open_note(COSIGNED["fullNoteUtf8"].encode(), [log_verifier])
    assert [s.name for s in opened.verified] == ["Log"]
    assert [s.name for s in opened.signatures] == ["Log", "Known"]


def test_a_cosignature_alone_does_not_make_a_checkpoint_trusted(log_verifier: note.Verifier) -> None:
    witness = CosignatureVerifier.from_vkey(COSIGNED["witnessCosigVkey_alg04"])
    # The vector's log key is named "Log", not like its origin, so our checkpoint policy refuses it even with
    # the log key; with only the witness key there is nothing by the log at all.
    for verifiers in ([witness], [log_verifier, witness]):
        with pytest.raises(NoteError, match="named like the origin"):
            checkpoint.open_checkpoint(COSIGNED["fullNoteUtf8"].encode(), verifiers)


def test_the_spec_example_cosignature_carries_its_timestamp_after_the_key_id() -> None:
    # tlog-cosignature "Format" example line for witness.example.com/w1.
    b64 = "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA=="
    raw = base64.b64decode(b64)
    assert cosignature.timestamp_of(raw[4:]) == 1679315147


# --- Round trips and tampering ------------------------------------------------------------------------------


def test_a_fresh_cosigner_round_trips_through_its_vkey() -> None:
    cosigner = Cosigner.generate("witness.test/w1")
    verifier = CosignatureVerifier.from_vkey(cosigner.vkey())
    assert verifier == cosigner.verifier()
    assert verifier.vkey() == cosigner.vkey()
    sig = cosigner.cosign(TEXT, 1_700_000_000)
    assert verify_cosignature(verifier, sig, TEXT) == 1_700_000_000


Mutation = Callable[[note.Signature, bytes], tuple[note.Signature, bytes]]


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("another checkpoint text", lambda s, t: (s, t.replace(b"\n8\n", b"\n9\n"))),
        ("the timestamp changed", lambda s, t: (note.Signature(s.name, s.key_id, b"\x00" * 8 + s.sig[8:]), t)),
        (
            "one signature bit flipped",
            lambda s, t: (note.Signature(s.name, s.key_id, s.sig[:-1] + bytes([s.sig[-1] ^ 1])), t),
        ),
        ("the signature truncated", lambda s, t: (note.Signature(s.name, s.key_id, s.sig[:-1]), t)),
        ("a plain 0x01 note signature", lambda s, t: (note.Signature(s.name, s.key_id, s.sig[8:]), t)),
    ],
)
def test_a_tampered_cosignature_does_not_verify(witness: Cosigner, case: str, mutate: Mutation) -> None:
    sig = witness.cosign(TEXT, TIMESTAMP)
    bad_sig, bad_text = mutate(sig, TEXT)
    with pytest.raises(NoteError):
        verify_cosignature(witness.verifier(), bad_sig, bad_text)
    assert not witness.verifier().verify(bad_text, bad_sig.sig)


def test_a_cosignature_by_another_key_id_or_name_is_not_this_cosigners(witness: Cosigner) -> None:
    sig = witness.cosign(TEXT, TIMESTAMP)
    for other in (note.Signature("Known", sig.key_id ^ 1, sig.sig), note.Signature("Other", sig.key_id, sig.sig)):
        with pytest.raises(NoteError, match="is not by cosigner"):
            verify_cosignature(witness.verifier(), other, TEXT)


def test_timestamps_beyond_2_to_the_63_minus_1_are_refused(witness: Cosigner) -> None:
    with pytest.raises(NoteError, match="out of range"):
        witness.cosign(TEXT, 2**63)
    sig = witness.cosign(TEXT, TIMESTAMP)
    with pytest.raises(NoteError, match="exceeds"):
        cosignature.timestamp_of(struct.pack(">Q", 2**63) + sig.sig[8:])


@pytest.mark.parametrize(
    ("case", "vkey"),
    [
        ("a 0x01 note vkey", "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs"),
        ("a key ID that does not match", "Known+fdd35893+BHAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH"),
        ("a short key", "Known+fdd35892+BHAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42Nkmd"),
        ("no key ID", "Known+BHAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH"),
        ("a name with a space", "Kno wn+fdd35892+BHAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH"),
    ],
)
def test_malformed_cosigner_vkeys_are_refused(case: str, vkey: str) -> None:
    with pytest.raises(NoteError):
        CosignatureVerifier.from_vkey(vkey)


# --- Merging cosignatures into a note -----------------------------------------------------------------------


def test_add_cosignatures_appends_and_replaces_by_key_and_keeps_the_log_signature(
    witness: Cosigner, log_verifier: note.Verifier
) -> None:
    log_signed = COSIGNED["fullNoteUtf8"].split("— Known")[0].encode()
    other = Cosigner.generate("witness.test/w2")
    verifiers = [log_verifier, witness.verifier(), other.verifier()]
    once = add_cosignatures(log_signed, verifiers, [witness.cosign(TEXT, TIMESTAMP)])
    assert once == COSIGNED["fullNoteUtf8"].encode()
    twice = add_cosignatures(once, verifiers, [other.cosign(TEXT, 1), witness.cosign(TEXT, TIMESTAMP + 60)])
    opened = note.open_note(twice, verifiers)
    assert [s.name for s in opened.verified] == ["Log", "witness.test/w2", "Known"]
    assert verify_cosignature(witness.verifier(), opened.verified[2], TEXT) == TIMESTAMP + 60


def test_add_cosignatures_refuses_a_bad_cosignature_by_a_known_key(
    witness: Cosigner, log_verifier: note.Verifier
) -> None:
    log_signed = COSIGNED["fullNoteUtf8"].split("— Known")[0].encode()
    forged = witness.cosign(TEXT.replace(b"8", b"9", 1), TIMESTAMP)
    with pytest.raises(NoteError, match="invalid signature"):
        add_cosignatures(log_signed, [log_verifier, witness.verifier()], [forged])
