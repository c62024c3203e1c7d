"""The audit console's browser verifier (console/static/verify.js) agrees with the project's Python, case by case.

Every case is built with the project's own code (authz_ledger.tlog, authz_ledger.record, the generated LedgerEntry)
or taken from the published vectors in tests/vectors/, and judged by that Python code. verify.js then runs it in
Node (WebCrypto, as in a browser): where Python raises, verify.js must throw a VerifyError; where Python accepts,
verify.js must accept and give the same values. Published vectors are also held to their published verdict.

All cases go to one Node process (tests/console/verify_js_cases.mjs, a module-scoped fixture); the tests below
then check the outcomes one case at a time.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from authz_ledger._proto.authzledger.v1 import ledger_pb2 as pb
from authz_ledger.errors import LedgerCorruptError, NoteError, ProofError
from authz_ledger.record import entry
from authz_ledger.tlog import checkpoint, note, proof, receipt, tree
from tests.conftest import ROOT, VECTORS
from tests.tlog.test_checkpoint import COSIGNED, ROOT8
from tests.tlog.test_checkpoint import MALFORMED as MALFORMED_CHECKPOINTS
from tests.tlog.test_note import BAD_VKEYS, NOTE_VECTORS, PETER, TWO
from tests.tlog.test_note import MALFORMED as MALFORMED_NOTES
from tests.tlog.test_receipt import BAD as BAD_RECEIPTS
from tests.tlog.test_receipt import ENTRIES as RECEIPT_ENTRIES
from tests.tlog.test_receipt import MALFORMED as MALFORMED_RECEIPTS
from tests.tlog.test_receipt import SIGNER as RECEIPT_SIGNER
from tests.tlog.test_receipt import receipt_for
from tests.tlog.test_tree import REFERENCE, store_of

RUNNER = ROOT / "tests" / "console" / "verify_js_cases.mjs"
PROBES = VECTORS / "transparency-dev-merkle" / "testdata"
PYTHON_ERRORS = (NoteError, ProofError, LedgerCorruptError)

# --- Cases and their JSON form ----------------------------------------------------------------------------------
#
# JSON carries neither bytes nor big integers: both travel tagged ({"$bytes": hex}, {"$bigint": decimal}), and
# {"$key": text} is a verifier key the runner parses with verify.js's parseVerifierKey (see verify_js_cases.mjs).


def b(data: bytes) -> dict[str, str]:
    return {"$bytes": data.hex()}


def n(value: int) -> dict[str, str]:
    return {"$bigint": str(value)}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def trusted(*signers: note.Signer) -> list[dict[str, str]]:
    return [{"$key": s.verifier_key()} for s in signers]


def verifiers(*signers: note.Signer) -> list[note.Verifier]:
    return [s.verifier() for s in signers]


@dataclass(frozen=True)
class Case:
    """One call into verify.js (``op(*args)``) and what the Python code made of the same input."""

    id: str
    op: str
    args: list[Any]
    ok: bool
    value: Any = None
    python_error: str = ""
    want_ok: bool | None = None  # the verdict the case is about (a published one, or the point of a tamper case)
    step: str | None = None  # when refused: the VerifyError's step
    match: str | None = None  # when refused: part of the VerifyError's message
    fault: str | None = None  # a browser fault to run under (verify_js_cases.mjs FAULTS)


def case(
    id: str,
    op: str,
    args: list[Any],
    python: Callable[[], Any],
    *,
    want_ok: bool | None = None,
    step: str | None = None,
    match: str | None = None,
) -> Case:
    """Judge the case with ``python`` (returning the value verify.js must return, in JSON form)."""
    try:
        value = python()
    except PYTHON_ERRORS as e:
        return Case(id, op, args, False, None, f"{type(e).__name__}: {e}", want_ok, step, match)
    return Case(id, op, args, True, value, "", want_ok, step, match)


def params(cases: Sequence[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in cases]


def js_key(v: note.Verifier, text: str) -> dict[str, Any]:
    return {"name": v.name, "keyId": v.key_id, "publicKey": b(v.public_key), "text": text}


def js_note(opened: note.Note) -> dict[str, Any]:
    verified = {(s.name, s.key_id) for s in opened.verified}
    return {
        "text": opened.text.decode(),
        "textBytes": b(opened.text),
        "verifiedBy": [s.name for s in opened.verified],
        "signatures": [
            {"name": s.name, "keyId": s.key_id, "verified": (s.name, s.key_id) in verified} for s in opened.signatures
        ],
    }


def js_checkpoint(cp: checkpoint.Checkpoint) -> dict[str, Any]:
    return {"origin": cp.origin, "size": n(cp.size), "root": b(cp.root), "extensions": list(cp.extensions)}


def js_opened_checkpoint(opened: tuple[checkpoint.Checkpoint, note.Note]) -> dict[str, Any]:
    return {"checkpoint": js_checkpoint(opened[0]), "note": js_note(opened[1])}


def js_receipt(r: receipt.Receipt) -> dict[str, Any]:
    return {
        "index": n(r.index),
        "proof": [b(h) for h in r.proof],
        "checkpoint": b(r.checkpoint),
        "extra": None if r.extra is None else b(r.extra),
    }


def text_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def js_message(msg: Message) -> dict[str, Any]:
    """The decoded message as verify.js gives it, field by field from the descriptor (so a field added to the
    .proto fails here until verify.js knows it)."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            out[f.name] = js_message(value) if msg.HasField(f.name) else None
        elif f.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            out[f.name] = n(value)
        elif f.type == FieldDescriptor.TYPE_BYTES:
            out[f.name] = b(value)
        elif f.type in (
            FieldDescriptor.TYPE_STRING,
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_ENUM,
            FieldDescriptor.TYPE_BOOL,
        ):
            out[f.name] = value
        else:
            raise AssertionError(f"field {f.name} has a type verify.js does not decode: {f.type}")
    unknown = unknown_fields.UnknownFieldSet(msg)
    out["unknown_fields"] = [
        {"number": unknown[i].field_number, "wire_type": unknown[i].wire_type} for i in range(len(unknown))
    ]
    return out


def js_ledger_entry(data: bytes) -> dict[str, Any]:
    msg = entry.decode(data)  # the project's reader: LedgerCorruptError for bytes that are not a LedgerEntry
    out = js_message(msg)
    out["input_json_text"] = text_or_none(msg.input_json)
    out["result_json_text"] = text_or_none(msg.result_json)
    out["outcome_name"] = pb.Outcome.Name(msg.outcome) if msg.outcome in pb.Outcome.values() else None
    return out


def canonical_b64(text: str) -> bytes:
    """The project's strict base64 rule (receipts, checkpoint roots): standard, padded, canonical."""
    return receipt._unb64(text, "base64 text")


# --- Keys, trees, checkpoints used throughout -------------------------------------------------------------------

ORIGIN = "authz-ledger.test/console"
LOG = note.generate_signer(ORIGIN)
OTHER = note.generate_signer(ORIGIN)  # same name, another key
NEXT = note.generate_signer(ORIGIN)  # the next log key, during a rotation
WITNESS = note.generate_signer("witness.test/w1")


def ledger_entry(seq: int) -> bytes:
    """A real entry as the writer stores it: sequence prefix + the handler's encoding."""
    record = entry.DecisionRecord(
        time_unix_nano=1_767_225_600_000_000_000 + seq * 1_000_003,
        decision_id=str(uuid.UUID(int=seq + 1)),
        request_id=f"req-{seq}",
        source_address="10.1.2.3",
        source_port=40000 + seq % 20000,
        source_principal="spiffe://cluster.local/ns/shop/sa/frontend",
        destination_address="10.9.8.7",
        destination_port=8080,
        method="GET" if seq % 3 else "POST",
        host="shop.example",
        path=f"/items/{seq}?q=caf\u00e9",
        input_json=json.dumps({"n": seq, "name": "\u00fcber"}, ensure_ascii=False).encode(),
        engine="embedded",
        decision_path="envoy/authz/allow",
        policy_version="sha256:" + "ab" * 32,
        result_json=b'{"allowed":true}' if seq % 4 else b"false",
        outcome=entry.OUTCOME_ALLOW if seq % 4 else entry.OUTCOME_DENY,
        allowed=bool(seq % 4),
        http_status=200 if seq % 4 else 403,
        eval_ns=12_345 + seq,
    )
    return entry.sequence_prefix(seq) + record.encode()


LEDGER = [ledger_entry(i) for i in range(1025)]
LEAVES = [tree.leaf_hash(e) for e in LEDGER]
STORE = store_of(LEAVES)


def root(size: int) -> bytes:
    return tree.tree_hash(size, STORE.read)


def path(index: int, size: int) -> list[bytes]:
    return proof.inclusion_proof(index, size, STORE.read)


def signed_checkpoint(size: int, signers: Sequence[note.Signer] = (LOG,), origin: str = ORIGIN) -> bytes:
    return checkpoint.sign_checkpoint(checkpoint.Checkpoint(origin, size, root(size)), signers)


def flip(data: bytes, byte: int = 0, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[byte % len(out)] ^= 1 << bit
    return bytes(out)


# --- The module's API -----------------------------------------------------------------------------------------

API = [
    {"name": "VerifyError", "kind": "class", "isErrorClass": True},
    {"name": "b64decode", "kind": "Function", "isErrorClass": False},
    {"name": "b64encode", "kind": "Function", "isErrorClass": False},
    {"name": "decodeLedgerEntry", "kind": "Function", "isErrorClass": False},
    {"name": "hex", "kind": "Function", "isErrorClass": False},
    {"name": "leafHash", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "nodeHash", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "openCheckpoint", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "openNote", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "parseCheckpoint", "kind": "Function", "isErrorClass": False},
    {"name": "parseReceipt", "kind": "Function", "isErrorClass": False},
    {"name": "parseVerifierKey", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "verifyConsistency", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "verifyEntry", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "verifyInclusion", "kind": "AsyncFunction", "isErrorClass": False},
    {"name": "verifyReceipt", "kind": "AsyncFunction", "isErrorClass": False},
]
EXPORTS_CASE = Case("the module exports exactly the console's API", "$exports", [], True, API)

# --- Hashes and base64 ---------------------------------------------------------------------------------------


def hash_case(id: str, op: str, inputs: Sequence[bytes], want: Callable[[], bytes]) -> Case:
    return case(id, op, [b(x) for x in inputs], lambda: b(want()))


def hash_cases() -> list[Case]:
    cases = []
    for v in REFERENCE["hasherVectors"]:
        if "leafHash" in v:
            data = bytes.fromhex(v["inputHex"])
            assert tree.leaf_hash(data).hex() == v["leafHash"]
            cases.append(
                hash_case(f"RFC 6962 hasher vector: {v['desc']}", "leafHash", [data], partial(tree.leaf_hash, data))
            )
        elif "nodeHash" in v:
            pair = (bytes.fromhex(v["leftHex"]), bytes.fromhex(v["rightHex"]))
            assert tree.node_hash(*pair).hex() == v["nodeHash"]
            cases.append(
                hash_case(f"RFC 6962 hasher vector: {v['desc']}", "nodeHash", pair, partial(tree.node_hash, *pair))
            )
    for seq in (0, 7, 1024):
        cases.append(
            hash_case(
                f"the leaf hash of ledger entry {seq} is the tree's",
                "leafHash",
                [LEDGER[seq]],
                partial(tree.leaf_hash, LEDGER[seq]),
            )
        )
    cases.append(hash_case("a node hash of two leaves is the tree's", "nodeHash", LEAVES[:2], lambda: root(2)))
    return cases


BASE64_TEXTS = {
    "the empty text": "",
    "one byte": "eA==",
    "two bytes": "YWI=",
    "three bytes": "YWJj",
    "a 32-byte hash": b64(LEAVES[3]),
    "every alphabet character": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    "non-zero unused bits after one byte": "eB==",
    "non-zero unused bits after two bytes": "YWJ=",
    "no padding": "YQ",
    "one of two padding characters": "YQ=",
    "a padding character too many": "YQ===",
    "padding in the middle": "YQ==YQ==",
    "padding only": "====",
    "a leading padding character": "=YWJ",
    "a newline": "YWJj\n",
    "a space": "YW Jj",
    "URL-safe characters": "-_-_",
    "a length one more than a multiple of four": "YWJjZ",
    "a non-ASCII character": "YWJ\u00e9",
    "a fullwidth letter": "YWJ\uff43",
}


def base64_cases() -> list[Case]:
    def decode(what: str, text: str) -> Case:
        return case(
            f"b64decode of {what} agrees with the project's strict base64",
            "b64decode",
            [text],
            lambda: b(canonical_b64(text)),
        )

    def encode(size: int) -> list[Case]:
        data = bytes(range(256))[7 : 7 + size]
        return [
            case(f"b64encode of {size} bytes is standard base64", "b64encode", [b(data)], lambda: b64(data)),
            case(f"hex of {size} bytes is lower-case hex", "hex", [b(data)], data.hex),
        ]

    cases = [decode(what, text) for what, text in BASE64_TEXTS.items()]
    for size in (0, 1, 2, 3, 4, 31, 32, 33, 100):
        cases += encode(size)
    return cases


# --- Verifier keys and signed notes ----------------------------------------------------------------------------


def key_case(id: str, text: str, **kw: Any) -> Case:
    return case(id, "parseVerifierKey", [text], lambda: js_key(note.Verifier.from_vkey(text), text), **kw)


def key_cases() -> list[Case]:
    cases = [
        key_case("the sumdb PeterNeumann verifier key parses", PETER["vkey"], want_ok=True),
        key_case("the sumdb EnochRoot verifier key parses", TWO["vkeys"][1], want_ok=True),
        key_case("the C2SP signed-note example key parses", NOTE_VECTORS["c2sp-signed-note-example"]["vkey"]),
        key_case(
            "an upper-case hex key ID is accepted like sumdb",
            PETER["vkey"].replace("c74f20a3", "C74F20A3"),
            want_ok=True,
        ),
        key_case("a generated log key parses", LOG.verifier_key(), want_ok=True),
        key_case(
            "a key whose name is not ASCII parses", note.generate_signer("l\u00f6g.example/\u65e5").verifier_key()
        ),
        key_case(
            "a tlog-cosignature (0x04) key is not a note verifier key",
            COSIGNED["witnessCosigVkey_alg04"],
            want_ok=False,
        ),
    ]
    for pair in NOTE_VECTORS["transparency-dev-formats-test-keys"]["keypairs"]:
        name = pair["vkey"].split("+")[0]
        cases.append(key_case(f"the transparency-dev test key {name} parses", pair["vkey"], want_ok=True))
    bad = NOTE_VECTORS["x-mod-sumdb-note-bad-vkeys"]
    for text, why in zip(bad["mustReject"], bad["why"], strict=True):
        cases.append(key_case(f"sumdb refuses a verifier key with {why}", text, want_ok=False))
    for what, text in BAD_VKEYS.items():
        cases.append(key_case(f"a verifier key with {what} is refused", text, want_ok=False))
    return cases


def note_case(id: str, msg: bytes, keys: Sequence[Any], vs: Sequence[note.Verifier], **kw: Any) -> Case:
    return case(id, "openNote", [b(msg), list(keys)], lambda: js_note(note.open_note(msg, vs)), **kw)


PETER_KEY = [{"$key": PETER["vkey"]}]
PETER_VERIFIER = [note.Verifier.from_vkey(PETER["vkey"])]
SIGNED = PETER["signedNoteUtf8"].encode()
TEXT = PETER["textUtf8"].encode()
SIG_LINE = SIGNED.split(b"\n\n")[1]
_ED25519_L = 2**252 + 27742317777372353535851937790883648493


def malleated(msg: bytes, signer: note.Signer) -> bytes:
    """The note with its signature's S replaced by S + L: the same point equation, refused by strict Ed25519."""
    text, line = msg[: msg.rindex(b"\n\n") + 2], msg[msg.rindex(b"\n\n") + 2 : -1].decode()
    raw = base64.b64decode(line.rsplit(" ", 1)[1])
    s = int.from_bytes(raw[36:68], "little") + _ED25519_L
    forged = raw[:36] + s.to_bytes(32, "little")
    return text + f"\u2014 {signer.name} {b64(forged)}\n".encode()


def note_cases() -> list[Case]:
    two = TWO["noteUtf8"].encode()
    two_keys = [note.Verifier.from_vkey(v) for v in TWO["vkeys"]]
    example = NOTE_VECTORS["c2sp-signed-note-example"]
    good, bad = note.generate_signer("good"), note.generate_signer("bad")
    forged = note.add_signatures(note.sign_note(b"x\n", [good, bad]).replace(b"x\n", b"y\n", 1), [good])
    same_a, same_b = note.generate_signer("same"), note.generate_signer("same")
    colliding = same_b.verifier()
    colliding._key_id = same_a.key_id  # a 32-bit key ID collision, forced rather than searched for
    colliding_key = {"name": "same", "keyId": same_a.key_id, "publicKey": b(colliding.public_key)}
    lines = [note.generate_signer(f"k{i}") for i in range(5)]
    log_note = note.sign_note(b"hello\n", [LOG])
    hundred = TEXT + b"\n" + b"".join(f"\u2014 k{i} AAAAAAA=\n".encode() for i in range(99)) + SIG_LINE
    tricky = b"first\n\n\xe2\x80\x94 log AAAAAAA=\n\n"
    long_sig = f"\u2014 PeterNeumann {b64(bytes.fromhex('c74f20a3') + bytes(65))}\n".encode()
    cases = [
        note_case("the sumdb note opens with its key", SIGNED, PETER_KEY, PETER_VERIFIER, want_ok=True),
        note_case(
            "a two-signature note with one trusted key verifies one and ignores the other",
            two,
            [{"$key": TWO["vkeys"][0]}],
            two_keys[:1],
            want_ok=True,
        ),
        note_case(
            "a two-signature note with both keys trusted verifies both",
            two,
            [{"$key": v} for v in TWO["vkeys"]],
            two_keys,
            want_ok=True,
        ),
        note_case("a note with no trusted key is refused", two, [], [], want_ok=False, step="note"),
        note_case(
            "a note signed by another key of the same name is refused",
            two,
            trusted(note.generate_signer("PeterNeumann")),
            [],
            want_ok=False,
            match="no note signature by a trusted key",
        ),
        note_case(
            "the C2SP example note opens",
            example["noteUtf8"].encode(),
            [{"$key": example["vkey"]}],
            [note.Verifier.from_vkey(example["vkey"])],
            want_ok=True,
        ),
        note_case(
            "the derived cosigned checkpoint opens as a note with the log key",
            COSIGNED["fullNoteUtf8"].encode(),
            [{"$key": COSIGNED["logVkey"]}],
            [note.Verifier.from_vkey(COSIGNED["logVkey"])],
            want_ok=True,
        ),
        note_case("a generated key's note opens", log_note, trusted(LOG), verifiers(LOG), want_ok=True),
        note_case(
            "a note with edited text is refused",
            log_note.replace(b"hello", b"jello"),
            trusted(LOG),
            verifiers(LOG),
            want_ok=False,
            step="note",
            match=f"does not verify with key {ORIGIN}",
        ),
        note_case(
            "five signatures all verify",
            note.sign_note(b"text\n", lines),
            trusted(*lines),
            verifiers(*lines),
            want_ok=True,
        ),
        note_case(
            "a bad signature by a trusted key fails the note even with another good one",
            forged,
            trusted(good, bad),
            verifiers(good, bad),
            want_ok=False,
            match="does not verify with key bad",
        ),
        note_case(
            "the same forged note opens when only the good key is trusted",
            forged,
            trusted(good),
            verifiers(good),
            want_ok=True,
        ),
        note_case(
            "repeated identical signature lines count once",
            log_note + log_note.split(b"\n\n")[1],
            trusted(LOG),
            verifiers(LOG),
            want_ok=True,
        ),
        note_case(
            "the same trusted key twice is harmless",
            log_note,
            [*trusted(LOG), *trusted(LOG)],
            verifiers(LOG, LOG),
            want_ok=True,
        ),
        note_case(
            "two different trusted keys with the same name and key ID are refused as ambiguous",
            note.sign_note(b"x\n", [same_a]),
            [*trusted(same_a), colliding_key],
            [same_a.verifier(), colliding],
            want_ok=False,
            match="ambiguous",
        ),
        note_case(
            "text lines that look like signatures stay text",
            note.sign_note(tricky, [LOG]),
            trusted(LOG),
            verifiers(LOG),
            want_ok=True,
        ),
        note_case("one hundred signature lines are accepted", hundred, PETER_KEY, PETER_VERIFIER, want_ok=True),
        note_case(
            "a signature whose base64 has non-zero unused bits verifies like sumdb's",
            SIGNED.replace(b"AM=\n", b"AN=\n"),
            PETER_KEY,
            PETER_VERIFIER,
            want_ok=True,
        ),
        note_case(
            "a 65-byte signature by a trusted key is refused",
            TEXT + b"\n" + long_sig,
            PETER_KEY,
            PETER_VERIFIER,
            want_ok=False,
        ),
        note_case(
            "a malleated signature (S + L) is refused",
            malleated(log_note, LOG),
            trusted(LOG),
            verifiers(LOG),
            want_ok=False,
        ),
        note_case(
            "a rotated note opens with the old key alone",
            note.sign_note(b"rotating\n", [LOG, NEXT]),
            trusted(LOG),
            verifiers(LOG),
            want_ok=True,
        ),
        note_case(
            "a rotated note opens with the new key alone",
            note.sign_note(b"rotating\n", [LOG, NEXT]),
            trusted(NEXT),
            verifiers(NEXT),
            want_ok=True,
        ),
        note_case(
            "a leading byte-order mark is part of the text",
            note.sign_note("\ufeffbom\n".encode(), [LOG]),
            trusted(LOG),
            verifiers(LOG),
            want_ok=True,
        ),
        note_case(
            "a note with a DEL character is accepted (only C0 controls are refused)",
            note.sign_note(b"del\x7f\n", [LOG]),
            trusted(LOG),
            verifiers(LOG),
            want_ok=True,
        ),
    ]
    for what, msg in MALFORMED_NOTES.items():
        cases.append(note_case(f"a note with {what} is refused", msg, PETER_KEY, PETER_VERIFIER, want_ok=False))
    enoch_line = two.split(b"\n\n")[1].split(b"\n")[1] + b"\n"
    cases += [
        note_case(
            "a repeated line by an unknown key is listed once",
            two + enoch_line,
            [{"$key": TWO["vkeys"][0]}],
            two_keys[:1],
            want_ok=True,
        ),
        note_case(
            "an unknown key's signature of only a key ID makes the note malformed",
            SIGNED + "\u2014 Stranger AAAAAA==\n".encode(),
            PETER_KEY,
            PETER_VERIFIER,
            want_ok=False,
        ),
    ]
    # Key names in signature lines: Python's str.isspace decides (note.py's is_valid_key_name), which is neither
    # JavaScript's \s (no U+0085, but U+FEFF) nor Go's unicode.IsSpace.
    for what, char, valid in (
        ("a no-break space", "\u00a0", False),
        ("a next-line character", "\u0085", False),
        ("a figure space", "\u2007", False),
        ("an ideographic space", "\u3000", False),
        ("a line separator", "\u2028", False),
        ("a zero-width space", "\u200b", True),
        ("a byte-order mark", "\ufeff", True),
        ("a Mongolian vowel separator", "\u180e", True),
    ):
        msg = SIGNED + f"\u2014 Str{char}anger {b64(bytes(68))}\n".encode()
        verdict = "is an unknown key's, ignored" if valid else "makes the note malformed"
        cases.append(
            note_case(
                f"a signature line whose key name holds {what} {verdict}",
                msg,
                PETER_KEY,
                PETER_VERIFIER,
                want_ok=valid,
            )
        )
    return cases


# --- Checkpoints ------------------------------------------------------------------------------------------------


def parse_case(id: str, text: bytes, **kw: Any) -> Case:
    return case(id, "parseCheckpoint", [b(text)], lambda: js_checkpoint(checkpoint.Checkpoint.parse(text)), **kw)


def open_case(id: str, msg: bytes, signers: Sequence[note.Signer], origin: str | None = None, **kw: Any) -> Case:
    args = [b(msg), trusted(*signers)] + ([origin] if origin is not None else [])
    return case(
        id,
        "openCheckpoint",
        args,
        lambda: js_opened_checkpoint(checkpoint.open_checkpoint(msg, verifiers(*signers), origin)),
        **kw,
    )


def checkpoint_cases() -> list[Case]:
    max_cp = checkpoint.Checkpoint(
        "l\u00f6g.example/\U0001f333 with spaces+plus", 2**64 - 1, ROOT8, ("ext \u00e9", "x")
    )
    cases = [
        parse_case("the RFC 6962 8-leaf checkpoint text parses", COSIGNED["checkpointTextUtf8"].encode(), want_ok=True),
        parse_case(
            "a checkpoint with the largest size, a non-ASCII origin and extension lines parses",
            max_cp.to_text(),
            want_ok=True,
        ),
        parse_case("a checkpoint of size 0 parses", checkpoint.Checkpoint("o", 0, ROOT8).to_text(), want_ok=True),
        parse_case(
            "invalid UTF-8 in a checkpoint is refused", b"\xff\n8\n" + b64(ROOT8).encode() + b"\n", want_ok=False
        ),
        case(
            "a checkpoint given as a string parses like its UTF-8 bytes",
            "parseCheckpoint",
            [max_cp.to_text().decode()],
            lambda: js_checkpoint(checkpoint.Checkpoint.parse(max_cp.to_text())),
            want_ok=True,
        ),
        case(
            "a checkpoint string with a lone surrogate is refused",
            "parseCheckpoint",
            [f"\ud800\n1\n{b64(ROOT8)}\n"],
            lambda: js_checkpoint(checkpoint.Checkpoint("\ud800", 1, ROOT8)),
            want_ok=False,
        ),
    ]
    for what, text in MALFORMED_CHECKPOINTS.items():
        cases.append(parse_case(f"a checkpoint with {what} is refused", text.encode(), want_ok=False))

    signed = signed_checkpoint(13)
    witnessed = note.add_signatures(signed, [WITNESS])
    only_witness = note.sign_note(checkpoint.Checkpoint(ORIGIN, 13, root(13)).to_text(), [WITNESS])
    cases += [
        open_case("a signed checkpoint opens", signed, [LOG], want_ok=True),
        open_case("a signed checkpoint opens for its own origin", signed, [LOG], ORIGIN, want_ok=True),
        open_case(
            "a checkpoint for another origin than the one asked for is refused",
            signed,
            [LOG],
            "authz-ledger.test/other",
            want_ok=False,
            step="checkpoint",
            match="want",
        ),
        open_case(
            "a checkpoint signed by another key of the same name is refused",
            signed_checkpoint(13, [OTHER]),
            [LOG],
            want_ok=False,
            step="checkpoint",
            match="no checkpoint signature by a trusted key",
        ),
        open_case(
            "a checkpoint verified only by a trusted witness is refused",
            only_witness,
            [WITNESS],
            want_ok=False,
            step="checkpoint",
            match="no signature by a trusted key named like the origin",
        ),
        open_case("a cosigned checkpoint opens with the log and witness keys", witnessed, [LOG, WITNESS], want_ok=True),
        open_case("a cosigned checkpoint opens with the log key alone", witnessed, [LOG], want_ok=True),
        open_case(
            "a checkpoint whose size was edited after signing is refused",
            signed.replace(b"\n13\n", b"\n14\n", 1),
            [LOG],
            want_ok=False,
            step="checkpoint",
            match=f"checkpoint signature does not verify with key {ORIGIN}",
        ),
        open_case(
            "a checkpoint whose root was edited after signing is refused",
            signed.replace(b64(root(13)).encode(), b64(root(12)).encode(), 1),
            [LOG],
            want_ok=False,
            step="checkpoint",
        ),
        open_case(
            "a rotated checkpoint opens with the new key alone",
            signed_checkpoint(13, [LOG, NEXT]),
            [NEXT],
            want_ok=True,
        ),
        open_case(
            "a signed note that is not a checkpoint is refused",
            note.sign_note(f"{ORIGIN}\n8\n".encode(), [LOG]),
            [LOG],
            want_ok=False,
        ),
        case(
            "the derived cosigned checkpoint fails the origin rule (its log key is named Log)",
            "openCheckpoint",
            [b(COSIGNED["fullNoteUtf8"].encode()), [{"$key": COSIGNED["logVkey"]}]],
            lambda: js_opened_checkpoint(
                checkpoint.open_checkpoint(
                    COSIGNED["fullNoteUtf8"].encode(), [note.Verifier.from_vkey(COSIGNED["logVkey"])]
                )
            ),
            want_ok=False,
            match="named like the origin",
        ),
    ]
    return cases


# --- Inclusion proofs -------------------------------------------------------------------------------------------


def inclusion_case(
    id: str,
    index: int,
    size: int,
    leaf: bytes,
    hashes: Sequence[bytes],
    head: bytes,
    *,
    form: str = "bigint",
    **kw: Any,
) -> Case:
    """``form``: how the index and size travel to JavaScript (BigInt, Number or decimal string)."""
    forms: dict[str, Callable[[int], Any]] = {"bigint": n, "number": lambda v: v, "string": str}
    as_js = forms[form]
    args = [as_js(index), as_js(size), b(leaf), [b(h) for h in hashes], b(head)]
    return case(id, "verifyInclusion", args, lambda: proof.verify_inclusion(index, size, leaf, hashes, head), **kw)


INCLUSION_PAIRS = [
    (0, 1), (0, 2), (1, 2), (2, 3), (4, 5), (5, 7), (6, 7), (7, 8), (5, 13), (12, 13), (0, 64), (63, 64),
    (99, 100), (511, 1000), (999, 1000), (0, 1024), (1023, 1025), (1024, 1025),
]  # fmt: skip


def inclusion_cases() -> list[Case]:
    cases = []
    for index, size in INCLUSION_PAIRS:
        cases.append(
            inclusion_case(
                f"leaf {index} of a {size}-entry ledger is included",
                index,
                size,
                LEAVES[index],
                path(index, size),
                root(size),
                want_ok=True,
            )
        )
    leaf, hashes, head = LEAVES[5], path(5, 13), root(13)
    cases += [
        inclusion_case("index and size given as Numbers", 5, 13, leaf, hashes, head, form="number", want_ok=True),
        inclusion_case(
            "index and size given as decimal strings", 5, 13, leaf, hashes, head, form="string", want_ok=True
        ),
        inclusion_case("a leaf hash with one bit flipped is refused", 5, 13, flip(leaf), hashes, head, want_ok=False),
        inclusion_case(
            "a proof with one hash flipped is refused",
            5,
            13,
            leaf,
            [hashes[0], flip(hashes[1]), *hashes[2:]],
            head,
            want_ok=False,
        ),
        inclusion_case("a flipped root is refused", 5, 13, leaf, hashes, flip(head, 31, 7), want_ok=False),
        inclusion_case("the wrong index is refused", 4, 13, leaf, hashes, head, want_ok=False),
        inclusion_case("the wrong size is refused", 5, 12, leaf, hashes, root(12), want_ok=False),
        inclusion_case("a proof hash left out is refused", 5, 13, leaf, hashes[:-1], head, want_ok=False),
        inclusion_case("a proof hash too many is refused", 5, 13, leaf, [*hashes, head], head, want_ok=False),
        inclusion_case("the proof in reverse is refused", 5, 13, leaf, hashes[::-1], head, want_ok=False),
        inclusion_case("an index equal to the size is refused", 13, 13, leaf, hashes, head, want_ok=False),
        inclusion_case("size 0 is refused", 0, 0, leaf, [], head, want_ok=False),
        inclusion_case("a negative index is refused", -1, 13, leaf, hashes, head, want_ok=False),
        inclusion_case("a 31-byte leaf hash is refused", 5, 13, leaf[:31], hashes, head, want_ok=False),
        inclusion_case(
            "a 33-byte proof hash is refused", 5, 13, leaf, [hashes[0] + b"\x00", *hashes[1:]], head, want_ok=False
        ),
        inclusion_case("a 31-byte root is refused", 5, 13, leaf, hashes, head[:31], want_ok=False),
        inclusion_case("a one-leaf tree needs an empty proof", 0, 1, LEAVES[0], [LEAVES[1]], LEAVES[0], want_ok=False),
        inclusion_case(
            "the last leaf of a tree of 2**64 - 1 leaves with a made-up proof is refused",
            2**64 - 2,
            2**64 - 1,
            leaf,
            [LEAVES[i] for i in range(63)],
            head,
            want_ok=False,
        ),
    ]
    # Reproducible random trees and tampering, so the run never depends on the draw.
    rng = random.Random(6962)
    for k in range(60):
        size = rng.randint(1, len(LEDGER))
        index = rng.randrange(size)
        hashes, head = path(index, size), root(size)
        cases.append(
            inclusion_case(
                f"random case {k}: leaf {index} of {size} is included",
                index,
                size,
                LEAVES[index],
                hashes,
                head,
                want_ok=True,
            )
        )
        tamper = rng.choice(["leaf", "proof", "root", "index"] if hashes else ["leaf", "root", "index"])
        bit = rng.randrange(256)
        leaf, tampered, bad_head, bad_index = LEAVES[index], list(hashes), head, index
        if tamper == "leaf":
            leaf = flip(leaf, bit // 8, bit % 8)
        elif tamper == "proof":
            pick = rng.randrange(len(hashes))
            tampered[pick] = flip(tampered[pick], bit // 8, bit % 8)
        elif tamper == "root":
            bad_head = flip(head, bit // 8, bit % 8)
        else:
            bad_index = (index + 1 + rng.randrange(size)) % (size + 1)  # any other index, or one past the end
        cases.append(
            inclusion_case(
                f"random case {k}: leaf {index} of {size} with its {tamper} tampered with is refused",
                bad_index,
                size,
                leaf,
                tampered,
                bad_head,
                want_ok=False,
            )
        )
    return cases


def published_inclusion_cases() -> list[Case]:
    cases = []
    roots = REFERENCE["rootsBySize"]
    ref_leaves = [bytes.fromhex(h) for h in REFERENCE["leafHashes"]]
    for kind in ("publishedInclusionProofs", "allInclusionProofs_derived"):
        for p in REFERENCE[kind]:
            index, size = p["leafIndex"], p["treeSize"]
            cases.append(
                inclusion_case(
                    f"RFC 6962 reference tree, {'published' if kind.startswith('published') else 'derived'} "
                    f"proof of leaf {index} in {size}",
                    index,
                    size,
                    ref_leaves[index],
                    [bytes.fromhex(h) for h in p["proof"]],
                    bytes.fromhex(roots[str(size)]),
                    want_ok=True,
                )
            )
    for probe_path in sorted((PROBES / "inclusion").rglob("*.json")):
        probe = json.loads(probe_path.read_text())
        name = probe_path.relative_to(PROBES).with_suffix("").as_posix()
        verdict = "must be refused" if probe["wantErr"] else "must verify"
        cases.append(
            inclusion_case(
                f"transparency-dev {name}: {probe['desc']} {verdict}",
                probe["leafIdx"],
                probe["treeSize"],
                base64.b64decode(probe["leafHash"]),
                [base64.b64decode(h) for h in probe["proof"] or []],
                base64.b64decode(probe["root"]),
                want_ok=not probe["wantErr"],
            )
        )
    return cases


# --- Consistency proofs --------------------------------------------------------------------------------------


def consistency_case(
    id: str, size1: int, size2: int, root1: bytes, root2: bytes, hashes: Sequence[bytes], **kw: Any
) -> Case:
    args = [n(size1), n(size2), b(root1), b(root2), [b(h) for h in hashes]]
    return case(
        id, "verifyConsistency", args, lambda: proof.verify_consistency(size1, size2, root1, root2, hashes), **kw
    )


def consistency_cases() -> list[Case]:
    cases = []
    roots = REFERENCE["rootsBySize"]
    for kind in ("publishedConsistencyProofs", "allConsistencyProofs_derived"):
        for p in REFERENCE[kind]:
            size1, size2 = p["size1"], p["size2"]
            cases.append(
                consistency_case(
                    f"RFC 6962 reference tree, {'published' if kind.startswith('published') else 'derived'} "
                    f"consistency proof {size1} -> {size2}",
                    size1,
                    size2,
                    bytes.fromhex(roots[str(size1)]),
                    bytes.fromhex(roots[str(size2)]),
                    [bytes.fromhex(h) for h in p["proof"]],
                    want_ok=True,
                )
            )
    for probe_path in sorted((PROBES / "consistency").rglob("*.json")):
        probe = json.loads(probe_path.read_text())
        name = probe_path.relative_to(PROBES).with_suffix("").as_posix()
        verdict = "must be refused" if probe["wantErr"] else "must verify"
        cases.append(
            consistency_case(
                f"transparency-dev {name}: {probe['desc']} {verdict}",
                probe["size1"],
                probe["size2"],
                base64.b64decode(probe["root1"] or ""),
                base64.b64decode(probe["root2"] or ""),
                [base64.b64decode(h) for h in probe["proof"] or []],
                want_ok=not probe["wantErr"],
            )
        )
    a, b2, hashes = root(5), root(13), proof.consistency_proof(5, 13, STORE.read)
    cases += [
        consistency_case(
            "a consistency proof of 5 -> 13 built by the ledger verifies", 5, 13, a, b2, hashes, want_ok=True
        ),
        consistency_case(
            "a consistency proof with one hash changed is refused",
            5,
            13,
            a,
            b2,
            [flip(hashes[0]), *hashes[1:]],
            want_ok=False,
            step="consistency",
        ),
        consistency_case(
            "a consistency proof to a different new root is refused",
            5,
            13,
            a,
            root(12),
            hashes,
            want_ok=False,
            step="consistency",
        ),
        consistency_case(
            "a consistency proof missing its last hash is refused",
            5,
            13,
            a,
            b2,
            hashes[:-1],
            want_ok=False,
            step="consistency",
            match="want",
        ),
    ]
    return cases


CONSISTENCY_CASES = consistency_cases()


# --- Receipts and whole-entry verification ----------------------------------------------------------------------


def parse_receipt_case(id: str, data: bytes, **kw: Any) -> Case:
    return case(id, "parseReceipt", [b(data)], lambda: js_receipt(receipt.parse_receipt(data)), **kw)


def verify_receipt_case(
    id: str, data: bytes, entry_bytes: bytes, signers: Sequence[note.Signer], origin: str | None = None, **kw: Any
) -> Case:
    args = [b(data), b(entry_bytes), trusted(*signers)] + ([origin] if origin is not None else [])
    return case(
        id,
        "verifyReceipt",
        args,
        lambda: js_checkpoint(receipt.verify_receipt(data, entry_bytes, verifiers(*signers), origin)),
        **kw,
    )


SPEC_EXAMPLE_RECEIPT = (
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
    "\u2014 example.com/fancylog hI2DJw[...]1roloI=\n"
).encode()


def receipt_cases() -> list[Case]:
    cp13 = signed_checkpoint(13)
    good = receipt.build_receipt(5, path(5, 13), cp13)
    header, _, body = receipt_for(5, extra=b"x").partition(b"\n\n")
    cases = [
        parse_receipt_case("the spec's example receipt parses", SPEC_EXAMPLE_RECEIPT, want_ok=True),
        parse_receipt_case("a receipt with extra data parses", receipt_for(5, extra=b"context \xff"), want_ok=True),
        parse_receipt_case("a receipt without extra data parses", receipt_for(0), want_ok=True),
        parse_receipt_case(
            "a receipt with empty extra data parses", receipt.build_receipt(3, path(3, 13), cp13, b""), want_ok=True
        ),
        parse_receipt_case(
            "a one-entry tree's receipt has no proof lines",
            receipt.build_receipt(0, [], signed_checkpoint(1)),
            want_ok=True,
        ),
        parse_receipt_case(
            "a receipt for index 2**64 - 1 parses", receipt.build_receipt(2**64 - 1, [], cp13), want_ok=True
        ),
        parse_receipt_case(
            "a receipt with 64 proof hashes parses", receipt.build_receipt(0, [LEAVES[0]] * 64, cp13), want_ok=True
        ),
        parse_receipt_case(
            "a receipt with a CRLF line is refused", good.replace(b"index 5\n", b"index 5\r\n"), want_ok=False
        ),
        parse_receipt_case(
            "a receipt with two extra lines is refused",
            header.replace(b"extra eA==", b"extra eA==\nextra eA==") + b"\n\n" + body,
            want_ok=False,
        ),
        parse_receipt_case(
            "a receipt with a plus sign in the index is refused",
            good.replace(b"index 5\n", b"index +5\n"),
            want_ok=False,
        ),
        parse_receipt_case(
            "a receipt with a non-canonical proof hash is refused",
            good.replace(b64(path(5, 13)[0]).encode(), (b64(path(5, 13)[0])[:-2] + "B=").encode()),
            want_ok=False,
        ),
        parse_receipt_case(
            "a receipt with a space after the version is refused",
            good.replace(b"tlog-proof@v1\n", b"tlog-proof@v1 \n"),
            want_ok=False,
        ),
    ]
    for what, data in MALFORMED_RECEIPTS.items():
        cases.append(parse_receipt_case(f"a receipt with {what} is refused", data, want_ok=False))

    for index, size in ((0, 1), (5, 13), (12, 13), (1023, 1025)):
        cases.append(
            verify_receipt_case(
                f"a receipt for ledger entry {index} of {size} verifies",
                receipt.build_receipt(index, path(index, size), signed_checkpoint(size)),
                LEDGER[index],
                [LOG],
                ORIGIN,
                want_ok=True,
            )
        )
    cases += [
        verify_receipt_case(
            "a receipt's extra data plays no part in verification",
            receipt_for(5, extra=b"anything at all"),
            RECEIPT_ENTRIES[5],
            [RECEIPT_SIGNER],
            want_ok=True,
        ),
        verify_receipt_case(
            "a receipt cosigned by an unknown witness verifies",
            receipt.build_receipt(5, path(5, 13), note.add_signatures(cp13, [WITNESS])),
            LEDGER[5],
            [LOG],
            want_ok=True,
        ),
        verify_receipt_case(
            "a receipt with one byte of the entry flipped is refused",
            good,
            flip(LEDGER[5], 20),
            [LOG],
            want_ok=False,
            step="inclusion",
            match="the entry bytes are not what was recorded",
        ),
    ]
    for what, (data, entry_bytes, signers, origin, _) in BAD_RECEIPTS.items():
        cases.append(
            verify_receipt_case(f"a receipt with {what} is refused", data, entry_bytes, signers, origin, want_ok=False)
        )
    return cases


def python_verify_entry(
    entry_bytes: bytes,
    index: int,
    proof_b64: Sequence[str],
    note_bytes: bytes,
    vs: Sequence[note.Verifier],
    origin: str | None,
    claimed: bytes | None,
) -> dict[str, Any]:
    """What verifyEntry does, in the project's Python: the read side's leaf-hash check (readside/client.py), then
    open_checkpoint and verify_inclusion against the signed root."""
    leaf = tree.leaf_hash(entry_bytes)
    if claimed is not None and claimed != leaf:
        raise ProofError("the server's leaf hash is not the hash of the bytes it sent")
    hashes = [canonical_b64(h) for h in proof_b64]
    cp, _ = checkpoint.open_checkpoint(note_bytes, vs, origin)
    proof.verify_inclusion(index, cp.size, leaf, hashes, cp.root)
    return {"checkpoint": js_checkpoint(cp), "leafHash": b(leaf)}


def entry_case(
    id: str,
    *,
    index: int,
    size: int,
    entry_bytes: bytes | None = None,
    hashes: Sequence[str] | None = None,
    cp: bytes | None = None,
    signers: Sequence[note.Signer] = (LOG,),
    origin: str | None = None,
    claimed: bytes | None = None,
    index_form: str = "bigint",
    **kw: Any,
) -> Case:
    entry_bytes = LEDGER[index] if entry_bytes is None else entry_bytes
    hashes = [b64(h) for h in path(index, size)] if hashes is None else hashes
    cp = signed_checkpoint(size) if cp is None else cp
    request: dict[str, Any] = {
        "entryBytes": b(entry_bytes),
        "index": {"bigint": n(index), "number": index, "string": str(index)}[index_form],
        "proof": list(hashes),
        "checkpointNote": b(cp),
        "keys": trusted(*signers),
    }
    if origin is not None:
        request["origin"] = origin
    if claimed is not None:
        request["leafHash"] = b64(claimed)
    return case(
        id,
        "verifyEntry",
        [request],
        lambda: python_verify_entry(entry_bytes, index, hashes, cp, verifiers(*signers), origin, claimed),
        **kw,
    )


def verify_entry_cases() -> list[Case]:
    tampered = flip(LEDGER[5], 30)
    good_path = [b64(h) for h in path(5, 13)]
    cases = [
        entry_case(
            f"ledger entry {index} of {size} verifies", index=index, size=size, claimed=LEAVES[index], want_ok=True
        )
        for index, size in ((0, 1), (5, 13), (12, 13), (100, 1000), (1024, 1025))
    ]
    cases += [
        entry_case("an entry verifies without the log's leaf hash", index=5, size=13, want_ok=True),
        entry_case("an entry verifies with its origin pinned", index=5, size=13, origin=ORIGIN, want_ok=True),
        entry_case("an index given as a Number verifies", index=5, size=13, index_form="number", want_ok=True),
        entry_case("an index given as a decimal string verifies", index=5, size=13, index_form="string", want_ok=True),
        entry_case(
            "an entry with one byte flipped fails at the leaf hash",
            index=5,
            size=13,
            entry_bytes=tampered,
            claimed=LEAVES[5],
            want_ok=False,
            step="leaf",
            match="leaf hash does not match: the entry bytes are not what was recorded",
        ),
        entry_case(
            "an entry with one byte flipped and no leaf hash to compare fails at inclusion",
            index=5,
            size=13,
            entry_bytes=tampered,
            want_ok=False,
            step="inclusion",
            match="the entry bytes are not what was recorded at index 5",
        ),
        entry_case(
            "an entry with one byte more fails at the leaf hash",
            index=5,
            size=13,
            entry_bytes=LEDGER[5] + b"\x00",
            claimed=LEAVES[5],
            want_ok=False,
            step="leaf",
        ),
        entry_case(
            "a proof with one hash flipped fails at inclusion",
            index=5,
            size=13,
            hashes=[good_path[0], b64(flip(path(5, 13)[1], 3)), *good_path[2:]],
            want_ok=False,
            step="inclusion",
            match="does not lead to the signed root",
        ),
        entry_case(
            "another entry's proof fails at inclusion",
            index=5,
            size=13,
            hashes=[b64(h) for h in path(4, 13)],
            want_ok=False,
            step="inclusion",
        ),
        entry_case(
            "the wrong index fails at inclusion",
            index=4,
            size=13,
            entry_bytes=LEDGER[5],
            hashes=good_path,
            claimed=LEAVES[5],
            want_ok=False,
            step="inclusion",
        ),
        entry_case(
            "a checkpoint of another size fails at inclusion",
            index=5,
            size=13,
            cp=signed_checkpoint(12),
            want_ok=False,
            step="inclusion",
        ),
        entry_case(
            "a proof hash in URL-safe base64 fails at the proof",
            index=5,
            size=13,
            hashes=[*good_path[:-1], base64.urlsafe_b64encode(b"\xfb" * 32).decode()],
            want_ok=False,
            step="proof",
        ),
        entry_case(
            "a checkpoint whose body was altered after signing fails at the checkpoint",
            index=5,
            size=13,
            cp=signed_checkpoint(13).replace(b"\n13\n", b"\n14\n", 1),
            want_ok=False,
            step="checkpoint",
            match=f"checkpoint signature does not verify with key {ORIGIN}",
        ),
        entry_case(
            "a checkpoint signed only by another key fails at the checkpoint",
            index=5,
            size=13,
            cp=signed_checkpoint(13, [OTHER]),
            want_ok=False,
            step="checkpoint",
        ),
        entry_case(
            "a checkpoint verified only by a witness key fails at the checkpoint",
            index=5,
            size=13,
            cp=note.add_signatures(signed_checkpoint(13, [OTHER]), [WITNESS]),
            signers=(WITNESS,),
            want_ok=False,
            step="checkpoint",
            match="named like the origin",
        ),
        entry_case(
            "a checkpoint for another origin than the pinned one fails at the checkpoint",
            index=5,
            size=13,
            origin="authz-ledger.test/elsewhere",
            want_ok=False,
            step="checkpoint",
        ),
        entry_case(
            "an entry checked against no trusted key fails at the checkpoint",
            index=5,
            size=13,
            signers=(),
            want_ok=False,
            step="checkpoint",
        ),
    ]
    return cases


# --- LedgerEntry decoding ---------------------------------------------------------------------------------------

FULL_ENTRY = pb.LedgerEntry(
    sequence=2**64 - 1,
    schema=1,
    time_unix_nano=2**64 - 1,
    decision_id="0189c2b5-3f4e-7a10-9d2c-5b7e8f9a0b1c",
    request_id="r\u00e9q-\U0001f600",
    source=pb.Address(address="2001:db8::1", port=2**32 - 1, principal="spiffe://cl\u00fcster.local/ns/\u0444/sa/x"),
    destination=pb.Address(address="10.0.0.2", port=443, principal="spiffe://\u65e5\u672c/ns/a/sa/b"),
    method="P\u00d6ST",
    host="ex\u00e4mple.test",
    path="/\u65e5\u672c\u8a9e/\U0001f600?q=\u200b&r=\u05e9\u05dc\u05d5\u05dd",
    input_json='{"\u00fc":1,"e":"\U0001f600"}'.encode(),
    engine="embedded",
    decision_path="envoy/authz/allow",
    policy_version="sha256:" + "0f" * 32,
    result_json=b'{"allowed":false,"http_status":403}',
    outcome=pb.OUTCOME_DENY,
    allowed=True,
    http_status=2**32 - 1,
    dry_run=True,
    grpc_code=7,
    error="PolicyError: \u2717 n\u00e4h",
    eval_ns=2**63 + 5,
    traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    tracestate="v\u00e9ndor=\u00e4",
    b3="4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
).SerializeToString()

ENTRY_BYTES: dict[str, bytes] = {
    "an entry with every field set, uint64 maxima and non-ASCII text": FULL_ENTRY,
    "the empty entry (every field at its default)": b"",
    "a ledger entry as the writer stores it": LEDGER[7],
    "a deny entry as the writer stores it": LEDGER[8],
    "an entry with sequence 2**63 prepended": entry.sequence_prefix(2**63) + LEDGER[0][2:],
    "an entry whose input is not UTF-8": pb.LedgerEntry(
        input_json=b"\xff\xfe{", result_json=b"\xc3("
    ).SerializeToString(),
    "an entry with an outcome this version does not know": pb.LedgerEntry(outcome=7).SerializeToString(),  # type: ignore[arg-type]
    "an entry with a negative outcome": pb.LedgerEntry(outcome=-1).SerializeToString(),  # type: ignore[arg-type]
    "a string with a leading byte-order mark keeps it": pb.LedgerEntry(path="\ufeff/x").SerializeToString(),
    "a string with a NUL character": pb.LedgerEntry(error="a\x00b").SerializeToString(),
    "an empty source address is still present": pb.LedgerEntry(source=pb.Address()).SerializeToString(),
    "a 10-byte varint of 2**64 - 1": b"\x08" + b"\xff" * 9 + b"\x01",
    "a 10-byte varint whose last byte carries bits past 64": b"\x08" + b"\xff" * 9 + b"\x7f",
    "an 11-byte varint": b"\x08" + b"\xff" * 10 + b"\x01",
    "a uint32 field beyond 32 bits keeps its low 32 bits": b"\x10\x85\x80\x80\x80\x10",
    "a uint32 field of 2**64 - 1": b"\x10" + b"\xff" * 9 + b"\x01",
    "an enum of -1 in ten bytes": b"\x80\x01" + b"\xff" * 9 + b"\x01",
    "an enum of 2**32 - 1 in five bytes": b"\x80\x01\xff\xff\xff\xff\x0f",
    "an enum of 2**31": b"\x80\x01\x80\x80\x80\x80\x08",
    "an enum beyond 32 bits": b"\x80\x01\x82\x80\x80\x80\x10",
    "a bool of 2": b"\x88\x01\x02",
    "a bool of 2**32": b"\x88\x01\x80\x80\x80\x80\x10",
    "a known varint field sent as fixed64 is an unknown field": b"\x09" + b"\x01" * 8,
    "a known string field sent as a varint is an unknown field": b"\x20\x05",
    "a known message field sent as a varint is an unknown field": b"\x30\x05",
    "a known field sent as a group is an unknown field": b"\x0b\x0c",
    "field number 0": b"\x00\x01",
    "wire type 6": b"\x0e",
    "wire type 7": b"\x0f",
    "an unknown group": b"\xab\x02\x08\x01\xac\x02",
    "nested unknown groups": b"\xab\x02\xb3\x02\xb4\x02\xac\x02",
    "a group with a mismatched end tag": b"\xab\x02\x08\x01\xb4\x02",
    "an unterminated group": b"\xab\x02\x08\x01",
    "a group holding a bad wire type": b"\xab\x02\x0e\xac\x02",
    "an end-group tag at the top level": b"\xac\x02",
    "an end-group tag for field 0 inside a group": b"\xab\x02\x04\xac\x02",
    "a group inside the source address": b"\x32\x04\x1b\x08\x01\x1c",
    "groups nested 100 deep": b"\xab\x02" * 100 + b"\xac\x02" * 100,
    "groups nested 101 deep": b"\xab\x02" * 101 + b"\xac\x02" * 101,
    "groups nested 99 deep inside the source address": b"\x32\xc6\x01" + b"\x1b" * 99 + b"\x1c" * 99,
    "groups nested 100 deep inside the source address": b"\x32\xc8\x01" + b"\x1b" * 100 + b"\x1c" * 100,
    "unknown fixed32 and fixed64 fields": b"\xad\x02\x01\x02\x03\x04\xa9\x02" + bytes(range(8)),
    "unknown length-delimited field": b"\xaa\x02\x03abc\x08\x05",
    "a truncated length-delimited field": b"\x22\x05ab",
    "a truncated varint": b"\x08\x80",
    "a truncated fixed64": b"\x19\x01\x02",
    "a truncated tag": b"\x80",
    "invalid UTF-8 in a string field": b"\x22\x02\xc3\x28",
    "invalid UTF-8 in the source address": b"\x32\x04\x0a\x02\xc3\x28",
    "a UTF-16 surrogate encoded in UTF-8": b"\x22\x03\xed\xa0\x80",
    "an overlong UTF-8 encoding": b"\x22\x02\xc0\x80",
    "a code point beyond U+10FFFF": b"\x22\x04\xf4\x90\x80\x80",
    "a repeated message field merges": b"\x32\x03\x0a\x01a" + b"\x32\x02\x10\x05",
    "a repeated scalar field keeps its last value": b"\x08\x01\x08\x02\x22\x01a\x22\x01b",
    "a nested message with an unknown field": b"\x32\x04\x28\x05\x10\x07",
    "a nested message with bad contents": b"\x32\x02\x10\x80",
    "a nested message longer than its parent": b"\x32\x05\x0a\x01a",
    "the largest field number": b"\xf8\xff\xff\xff\x0f\x01",
    "a tag beyond 32 bits": b"\xf8\xff\xff\xff\x1f\x01",
    "a 6-byte tag": b"\x88\x80\x80\x80\x80\x00\x01",
    "a non-minimal tag": b"\x88\x80\x00\x05",
    "a non-minimal 5-byte tag": b"\x88\x80\x80\x80\x00\x01",
    "a non-minimal 5-byte length": b"\x22\x82\x80\x80\x80\x00ab",
    "a 6-byte length": b"\x22\x82\x80\x80\x80\x80\x00ab",
    "a length of 2**31": b"\x22\x80\x80\x80\x80\x08ab",
    "a length beyond 32 bits": b"\x22\x82\x80\x80\x80\x10ab",
    "a sequence written twice keeps the second (the writer's prefix merged with a body)": b"\x08\x01" + LEDGER[3],
}


def ledger_entry_case(id: str, data: bytes) -> Case:
    return case(id, "decodeLedgerEntry", [b(data)], lambda: js_ledger_entry(data))


def mutate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    pos = rng.randrange(len(data))
    kind = rng.choice(["flip", "set", "truncate", "insert", "delete"])
    if kind == "flip":
        bit = rng.randrange(8)
        return f"bit {bit} of byte {pos} flipped", flip(data, pos, bit)
    if kind == "set":
        value = rng.randrange(256)
        return f"byte {pos} set to 0x{value:02x}", data[:pos] + bytes([value]) + data[pos + 1 :]
    if kind == "truncate":
        return f"cut to {pos} bytes", data[:pos]
    if kind == "insert":
        value = rng.randrange(256)
        return f"0x{value:02x} inserted at {pos}", data[:pos] + bytes([value]) + data[pos:]
    return f"byte {pos} deleted", data[:pos] + data[pos + 1 :]


def ledger_entry_cases() -> list[Case]:
    cases = [ledger_entry_case(f"decoding {what} agrees with protobuf", data) for what, data in ENTRY_BYTES.items()]
    rng = random.Random(3)
    seen: set[bytes] = set()
    while len(seen) < 300:
        what, data = mutate(rng, rng.choice([FULL_ENTRY, LEDGER[rng.randrange(len(LEDGER))]]))
        if data in seen:
            continue
        seen.add(data)
        cases.append(ledger_entry_case(f"mutant {len(seen)} ({what}) decodes as protobuf decodes it", data))
    return cases


# --- Where verify.js follows sumdb/note and note.py does not -----------------------------------------------------
#
# CPython's binascii.a2b_base64(strict_mode=True), which note.py decodes verifier keys and signature lines with,
# accepts '=' padding after a complete 4-character group ("abcd=", "abcd===="). golang.org/x/mod/sumdb/note
# (base64.StdEncoding) refuses such text, and so does verify.js. Only text whose bytes are a multiple of 3 long is
# affected: verifier keys (33 bytes) and signature lines of unknown keys; a 68-byte Ed25519 signature line is
# already padded, so no verdict on a real signature changes.

DIVERGENCES = {
    "a verifier key with a superfluous '=' after its last full base64 group": (
        "parseVerifierKey",
        [PETER["vkey"] + "="],
        lambda: note.Verifier.from_vkey(PETER["vkey"] + "="),
    ),
    "a note with an unknown key's signature line padded after a full base64 group": (
        "openNote",
        [b(SIGNED + f"\u2014 Stranger {b64(bytes(69))}=\n".encode()), PETER_KEY],
        lambda: note.open_note(SIGNED + f"\u2014 Stranger {b64(bytes(69))}=\n".encode(), PETER_VERIFIER),
    ),
}
DIVERGENCE_CASES = [Case(f"sumdb/note refuses {what}", op, args, False) for what, (op, args, _) in DIVERGENCES.items()]

# --- Browsers that cannot verify ----------------------------------------------------------------------------------
#
# No Python counterpart: these are faults of the page's environment, which verify.js must name instead of
# calling a good signature bad (or throwing a TypeError). They run early in the batch, so every later case also
# shows that the fault was undone.

FAULT_CASES = [
    Case(
        "on a page without WebCrypto (plain HTTP), verifying an entry says it needs HTTPS",
        "verifyEntry",
        entry_case("(arguments only)", index=5, size=13).args,
        False,
        step="input",
        match="must be served over HTTPS",
        fault="no-webcrypto",
    ),
    Case(
        "in a browser without Ed25519, opening a checkpoint says so instead of calling the signature bad",
        "openCheckpoint",
        [b(signed_checkpoint(13)), trusted(LOG)],
        False,
        step="input",
        match="cannot verify Ed25519",
        fault="no-ed25519",
    ),
]

# --- Running the batch -------------------------------------------------------------------------------------------

HASH_CASES = hash_cases()
BASE64_CASES = base64_cases()
KEY_CASES = key_cases()
NOTE_CASES = note_cases()
CHECKPOINT_CASES = checkpoint_cases()
INCLUSION_CASES = inclusion_cases()
PUBLISHED_INCLUSION_CASES = published_inclusion_cases()
RECEIPT_CASES = receipt_cases()
VERIFY_ENTRY_CASES = verify_entry_cases()
LEDGER_ENTRY_CASES = ledger_entry_cases()
ALL_CASES = [
    EXPORTS_CASE,
    *FAULT_CASES,
    *HASH_CASES,
    *BASE64_CASES,
    *KEY_CASES,
    *NOTE_CASES,
    *CHECKPOINT_CASES,
    *INCLUSION_CASES,
    *PUBLISHED_INCLUSION_CASES,
    *CONSISTENCY_CASES,
    *RECEIPT_CASES,
    *VERIFY_ENTRY_CASES,
    *LEDGER_ENTRY_CASES,
    *DIVERGENCE_CASES,
]

Outcomes = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def js() -> Outcomes:
    """Every case's outcome in verify.js, from one Node process."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (>= 20) is required to test the console's verify.js and is not on PATH")
    batch = json.dumps([{"op": c.op, "args": c.args, "fault": c.fault} for c in ALL_CASES])
    proc = subprocess.run([node, str(RUNNER)], input=batch, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{RUNNER.name} failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}")
    outcomes = json.loads(proc.stdout)
    assert len(outcomes) == len(ALL_CASES)
    return {c.id: o for c, o in zip(ALL_CASES, outcomes, strict=True)}


def check(c: Case, js: Outcomes) -> None:
    """verify.js must accept exactly what Python accepts, with the same values, and refuse with a VerifyError."""
    if c.want_ok is not None:
        verdict = "accepts" if c.ok else f"refuses ({c.python_error})"
        assert c.ok == c.want_ok, f"the case is not what it claims to be: Python {verdict}"
    outcome = js[c.id]
    if c.ok:
        assert outcome["ok"], f"verify.js refuses what Python accepts: {outcome['error']}"
        assert outcome["value"] == c.value
        return
    assert not outcome["ok"], f"verify.js accepts what Python refuses ({c.python_error}): {outcome['value']}"
    error = outcome["error"]
    assert error["isVerifyError"], f"verify.js threw {error['name']}, not a VerifyError: {error.get('stack')}"
    assert error["message"]
    if c.step is not None:
        assert error["step"] == c.step, error["message"]
    if c.match is not None:
        assert c.match in error["message"]


def test_every_case_has_its_own_id() -> None:
    ids = [c.id for c in ALL_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_the_module_exports_exactly_the_consoles_api(js: Outcomes) -> None:
    check(EXPORTS_CASE, js)


@pytest.mark.parametrize("c", params(FAULT_CASES))
def test_a_browser_that_cannot_verify_says_why(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(HASH_CASES))
def test_hashes_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(BASE64_CASES))
def test_base64_and_hex_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(KEY_CASES))
def test_verifier_keys_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(NOTE_CASES))
def test_signed_notes_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(CHECKPOINT_CASES))
def test_checkpoints_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(INCLUSION_CASES))
def test_inclusion_proofs_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


def test_every_published_inclusion_probe_is_collected() -> None:
    probes = [c for c in PUBLISHED_INCLUSION_CASES if c.id.startswith("transparency-dev ")]
    assert len(probes) == len(list((PROBES / "inclusion").rglob("*.json"))) > 0


@pytest.mark.parametrize("c", params(PUBLISHED_INCLUSION_CASES))
def test_published_inclusion_proofs_get_their_published_verdict(c: Case, js: Outcomes) -> None:
    check(c, js)


def test_every_published_consistency_probe_is_collected() -> None:
    probes = [c for c in CONSISTENCY_CASES if c.id.startswith("transparency-dev ")]
    assert len(probes) == len(list((PROBES / "consistency").rglob("*.json"))) > 0


@pytest.mark.parametrize("c", params(CONSISTENCY_CASES))
def test_consistency_proofs_agree_and_published_ones_get_their_verdict(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(RECEIPT_CASES))
def test_receipts_agree(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(VERIFY_ENTRY_CASES))
def test_verify_entry_agrees_and_names_the_failing_step(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(LEDGER_ENTRY_CASES))
def test_ledger_entries_decode_as_protobuf_decodes_them(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize("c", params(DIVERGENCE_CASES))
def test_verify_js_refuses_base64_padding_that_sumdb_note_refuses(c: Case, js: Outcomes) -> None:
    check(c, js)


@pytest.mark.parametrize(
    "python", [pytest.param(p, id=f"note.py still accepts {w}") for w, (_, _, p) in DIVERGENCES.items()]
)
def test_note_py_still_accepts_the_padding_verify_js_refuses(python: Callable[[], Any]) -> None:
    # When this fails, note.py has come to refuse the text too: move the case into KEY_CASES / NOTE_CASES.
    python()
