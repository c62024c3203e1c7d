"""C2SP tlog-cosignature v1 (https://c2sp.org/tlog-cosignature): timestamped Ed25519 witness cosignatures. Pure.

Invariants:

* A cosignature is a signed-note signature line (tlog-cosignature "Format") whose signature bytes are a
  ``timestamped_signature``: ``u64 timestamp (big-endian) || Ed25519 signature[64]`` -- 72 bytes after the
  4-byte key ID. The timestamp is POSIX seconds and never exceeds 2**63 - 1.
* The key ID is ``SHA-256(name || "\\n" || 0x04 || 32-byte public key)[:4]`` (tlog-cosignature "Format";
  signed-note "Signature types": 0x04 = timestamped Ed25519 witness cosignatures), so a cosigner key never
  shares a key ID with the same key used as a plain 0x01 note key.
* The signed message is ``"cosignature/v1\\n" || "time " || decimal timestamp || "\\n" || checkpoint text``
  (tlog-cosignature "Ed25519 signed message"): the whole note text, extension lines included, final newline
  included, signature lines excluded.
* A cosigner vkey is ``<name>+<8 hex key ID>+<base64(0x04 || public key)>``; any other algorithm byte is refused.
* :class:`CosignatureVerifier` is a :class:`~authz_ledger.tlog.note.Verifier`, so
  :func:`~authz_ledger.tlog.note.open_note` and :func:`~authz_ledger.tlog.checkpoint.open_checkpoint` verify
  cosignatures like any other signature when given witness verifiers (tlog-witness "add-checkpoint": concatenate
  the response to the checkpoint and open the note with the witness keys); signatures by unknown keys stay ignored.
* Every failure is a :class:`~authz_ledger.errors.NoteError`.
"""

from __future__ import annotations

import base64
import binascii
import struct
import time
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authz_ledger.errors import NoteError
from authz_ledger.tlog import note

ALG_COSIGNATURE_V1 = 0x04
"""signed-note signature type of timestamped Ed25519 witness cosignatures (tlog-cosignature v1)."""

HEADER = b"cosignature/v1\n"
"""The domain-separating first line of the signed message."""

MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP = struct.Struct(">Q")
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64
SIGNATURE_SIZE = _TIMESTAMP.size + _ED25519_SIG_SIZE
"""Bytes after the key ID in a cosignature line: u64 timestamp || Ed25519 signature."""


def signed_message(checkpoint_text: bytes, timestamp: int) -> bytes:
    """The bytes a v1 cosignature signs: header line, time line, then the checkpoint note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} is out of range (0 .. 2^63-1)")
    if not checkpoint_text.endswith(b"\n"):
        raise NoteError("cosigned text must be a whole note text ending in a newline")
    return HEADER + b"time %d\n" % timestamp + checkpoint_text


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x04 || public key)[:4], big-endian (tlog-cosignature "Format")."""
    return note.compute_key_id(name, bytes([ALG_COSIGNATURE_V1]) + public_key)


def timestamp_of(sig: bytes) -> int:
    """The timestamp of a cosignature's signature bytes (after the key ID); NoteError if malformed."""
    if len(sig) != SIGNATURE_SIZE:
        raise NoteError(f"cosignature is {len(sig)} bytes after the key ID, want {SIGNATURE_SIZE}")
    ts = int(_TIMESTAMP.unpack(sig[: _TIMESTAMP.size])[0])
    if ts > MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {ts} exceeds 2^63-1")
    return ts


class CosignatureVerifier(note.Verifier):
    """A witness's cosigner key: name, 0x04 key ID and Ed25519 public key.

    A :class:`note.Verifier` whose :meth:`verify` checks the timestamped message instead of the plain text, so
    it can be handed to ``open_note`` / ``open_checkpoint`` together with the log's own verifiers.
    """

    __slots__ = ()

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        super().__init__(name, public_key)
        # The note.Verifier constructor computed a 0x01 key ID; a cosigner's ID commits to type 0x04.
        self._key_id = key_id(name, self._public)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``<name>+<8 hex key ID>+<base64(0x04 || 32-byte public key)>``.

        Refuses a key ID that does not match, non-canonical base64, any algorithm byte but 0x04 (a 0x01 note key
        is a different identity: its key ID differs, so its cosignature lines would never match) and a key that
        is not 32 bytes.
        """
        name, sep1, rest = vkey.partition("+")
        hex_id, sep2, key64 = rest.partition("+")
        if not (sep1 and sep2):
            raise NoteError("malformed cosigner key: want <name>+<hex id>+<base64 key>")
        if not note.is_valid_key_name(name) or not name.isprintable():
            raise NoteError(f"invalid cosigner key name {name!r}")
        if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
            raise NoteError(f"malformed cosigner key ID {hex_id!r}: want 8 hex digits")
        try:
            key = binascii.a2b_base64(key64.encode("ascii"), strict_mode=True)
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise NoteError("malformed base64 in cosigner key") from exc
        if not key:
            raise NoteError("malformed cosigner key: empty key")
        if key[0] != ALG_COSIGNATURE_V1:
            raise NoteError(
                f"cosigner key {name}+{hex_id}: algorithm 0x{key[0]:02x} is not 0x04 (timestamped Ed25519 "
                "cosignature, c2sp.org/tlog-cosignature)"
            )
        if len(key) != 1 + _ED25519_KEY_SIZE:
            raise NoteError(f"cosigner key {name}+{hex_id}: Ed25519 key is {len(key) - 1} bytes, want 32")
        if note.compute_key_id(name, key) != int(hex_id, 16):
            raise NoteError(f"cosigner key {name}+{hex_id}: key ID does not match the key")
        return cls(name, Ed25519PublicKey.from_public_bytes(key[1:]))

    def vkey(self) -> str:
        """``<name>+<hex id>+<base64(0x04 || public key)>``."""
        encoded = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self._public).decode("ascii")
        return f"{self._name}+{self._key_id:08x}+{encoded}"

    def matches(self, sig: note.Signature) -> bool:
        """Whether a signature line is by this cosigner (same name and key ID, signed-note "Signatures")."""
        return (sig.name, sig.key_id) == (self._name, self._key_id)

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Whether ``sig`` (timestamp || Ed25519 signature) is a valid v1 cosignature of the note text ``text``."""
        try:
            self.verify_timestamp(text, sig)
        except NoteError:
            return False
        return True

    def verify_timestamp(self, text: bytes, sig: bytes) -> int:
        """Verify a v1 cosignature of ``text`` and return its timestamp; NoteError if it does not verify."""
        ts = timestamp_of(sig)
        try:
            self._key.verify(sig[_TIMESTAMP.size :], signed_message(text, ts))
        except InvalidSignature:
            raise NoteError(f"invalid cosignature by {self._name}+{self._key_id:08x}") from None
        return ts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CosignatureVerifier) and (other._name, other._public) == (self._name, self._public)

    def __hash__(self) -> int:
        return hash((ALG_COSIGNATURE_V1, self._name, self._public))

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self.vkey()!r})"


def verify_cosignature(verifier: CosignatureVerifier, sig: note.Signature, checkpoint_text: bytes) -> int:
    """Check that ``sig`` is ``verifier``'s v1 cosignature of ``checkpoint_text``; return its timestamp."""
    if not verifier.matches(sig):
        raise NoteError(
            f"signature by {sig.name}+{sig.key_id:08x} is not by cosigner {verifier.name}+{verifier.key_id:08x}"
        )
    return verifier.verify_timestamp(checkpoint_text, sig.sig)


class Cosigner:
    """An Ed25519 cosigner key (what a witness holds). Its repr never shows the private key."""

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._verifier = CosignatureVerifier(name, private_key.public_key())

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def vkey(self) -> str:
        return self._verifier.vkey()

    def cosign(self, checkpoint_text: bytes, timestamp: int | None = None) -> note.Signature:
        """The v1 cosignature of ``checkpoint_text`` at ``timestamp`` (default: now)."""
        ts = int(time.time()) if timestamp is None else timestamp
        sig = self._key.sign(signed_message(checkpoint_text, ts))
        return note.Signature(self.name, self.key_id, _TIMESTAMP.pack(ts) + sig)

    def __repr__(self) -> str:
        return f"Cosigner(name={self.name!r}, key_id={self.key_id:08x})"


def add_cosignatures(
    signed: bytes, verifiers: Sequence[note.Verifier], cosignatures: Sequence[note.Signature]
) -> bytes:
    """``signed`` with ``cosignatures`` appended, each replacing an earlier line by the same key.

    ``signed`` is opened with ``verifiers`` first (every known signature must verify, at least one must), and
    the result is opened again with the same verifiers, so a bad cosignature by a known key is refused here and
    never stored. Lines by unknown keys are kept as they were.
    """
    opened = note.open_note(signed, verifiers)
    replaced = {(s.name, s.key_id) for s in cosignatures}
    if len(replaced) != len(cosignatures):
        raise NoteError("two cosignatures by the same key")
    kept = [s for s in opened.signatures if (s.name, s.key_id) not in replaced]
    lines = [s.line() for s in (*kept, *cosignatures)]
    if len(lines) > note.MAX_SIGNATURES:
        raise NoteError(f"a signed note carries at most {note.MAX_SIGNATURES} signatures")
    merged = opened.text + b"\n" + "".join(line + "\n" for line in lines).encode("utf-8")
    note.open_note(merged, verifiers)
    return merged
