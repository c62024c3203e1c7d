"""C2SP signed-note (https://c2sp.org/signed-note) with Ed25519 keys, as golang.org/x/mod/sumdb/note does it.

Invariants:

* A signed note is ``text || "\\n" || signature lines``; the text is non-empty valid UTF-8 ending in a
  newline, and the whole message contains no ASCII control character but newline (signed-note "Format").
* A signature line is ``"— " || key name || " " || base64(key ID[4, big-endian] || signature)``; the key ID
  of an Ed25519 key is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` (signed-note "Ed25519
  signatures").
* :func:`open_note` parses exactly as sumdb/note ``Open`` does: same malformed-note rules, at most 100
  signature lines, repeated identical lines collapsed, signatures by unknown keys ignored, an invalid
  signature by a known key fails the whole note, and a note with no verified signature fails.
* Every failure is a :class:`~authz_ledger.errors.NoteError`; private key material never appears in a message
  or repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from authz_ledger.errors import NoteError

ALG_ED25519 = 0x01
"""Signature type byte of plain Ed25519 note signatures (signed-note "Signature types")."""

MAX_SIGNATURES = 100
"""sumdb/note ``Open`` rejects notes with more signature lines (the spec asks verifiers to accept >= 16)."""

_SIG_PREFIX = "— "  # U+2014 EM DASH, U+0020 SPACE
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key ID (uint32) and the signature bytes that follow the ID."""

    name: str
    key_id: int
    sig: bytes

    def line(self) -> str:
        """The signature line, without its newline."""
        return f"{_SIG_PREFIX}{self.name} {_b64encode(self.key_id.to_bytes(4, 'big') + self.sig)}"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, every distinct signature line in order, and those that verified."""

    text: bytes
    signatures: list[Signature] = field(default_factory=list)
    verified: list[Signature] = field(default_factory=list)


# --- Keys ------------------------------------------------------------------------------------------------


def compute_key_id(name: str, key: bytes) -> int:
    """Key ID = SHA-256(name || 0x0A || key)[:4], big-endian; ``key`` starts with the signature type byte."""
    digest = hashlib.sha256(name.encode() + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def is_valid_key_name(name: str) -> bool:
    """sumdb/note ``isValidName``: non-empty, no Unicode space, no '+' (signed-note "Format").

    This is the rule for names found in signature lines. Key strings are held to :func:`_check_key_name`,
    which also refuses non-printable characters.
    """
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def _check_key_name(name: str) -> None:
    if not is_valid_key_name(name) or not name.isprintable():
        raise NoteError(f"invalid key name {name!r}: must be non-empty, printable, without spaces or '+'")


def _parse_key_id(hex_id: str) -> int:
    # sumdb/note: exactly 8 hex digits (strconv.ParseUint base 16, which accepts either case).
    if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
        raise NoteError(f"malformed key ID {hex_id!r}: want 8 hex digits")
    return int(hex_id, 16)


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Standard base64 with padding (RFC 4648 §4); anything else, whitespace included, is rejected."""
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise NoteError(f"malformed base64 in {what}") from exc


def _public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


class Verifier:
    """An Ed25519 note verifier key: name, key ID and public key."""

    __slots__ = ("_key", "_key_id", "_name", "_public")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_key_name(name)
        self._name = name
        self._key = public_key
        self._public = _public_bytes(public_key)
        self._key_id = compute_key_id(name, bytes([ALG_ED25519]) + self._public)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>`` (sumdb/note ``NewVerifier``).

        Rejects a malformed name, a key ID that is not 8 hex digits or does not match the key, base64 that is
        not canonical standard base64, an algorithm byte other than 0x01 and a key that is not 32 bytes.
        """
        name, sep1, rest = vkey.partition("+")
        hex_id, sep2, key64 = rest.partition("+")
        if not (sep1 and sep2):
            raise NoteError("malformed verifier key: want <name>+<hex id>+<base64 key>")
        _check_key_name(name)
        key_id = _parse_key_id(hex_id)
        key = _b64decode(key64, "verifier key")
        if not key:
            raise NoteError("malformed verifier key: empty key")
        if compute_key_id(name, key) != key_id:
            raise NoteError(f"verifier key {name}+{hex_id}: key ID does not match the key")
        if key[0] != ALG_ED25519:
            raise NoteError(f"verifier key {name}+{hex_id}: unknown algorithm 0x{key[0]:02x}")
        if len(key) != 1 + _ED25519_KEY_SIZE:
            raise NoteError(f"verifier key {name}+{hex_id}: Ed25519 key is {len(key) - 1} bytes, want 32")
        return cls(name, Ed25519PublicKey.from_public_bytes(key[1:]))

    def vkey(self) -> str:
        """The verifier key string ``<name>+<hex id>+<base64(0x01 || public key)>``."""
        return f"{self._name}+{self._key_id:08x}+{_b64encode(bytes([ALG_ED25519]) + self._public)}"

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Whether ``sig`` (the bytes after the key ID) is a valid Ed25519 signature of ``text``."""
        if len(sig) != _ED25519_SIG_SIZE:
            return False
        try:
            self._key.verify(sig, text)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Verifier) and (other._name, other._public) == (self._name, self._public)

    def __hash__(self) -> int:
        return hash((self._name, self._public))

    def __repr__(self) -> str:
        return f"Verifier({self.vkey()!r})"


class Signer:
    """An Ed25519 note signing key. Its repr and errors never show the private key."""

    __slots__ = ("_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._verifier = Verifier(name, private_key.public_key())

    @classmethod
    def from_private_key_string(cls, skey: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || 32-byte seed)>`` (sumdb/note ``NewSigner``).

        The key ID is checked against the public key derived from the seed.
        """
        if not skey.startswith(_PRIVATE_PREFIX):
            raise NoteError("malformed private key: want PRIVATE+KEY+<name>+<hex id>+<base64 seed>")
        name, sep1, rest = skey[len(_PRIVATE_PREFIX) :].partition("+")
        hex_id, sep2, key64 = rest.partition("+")
        if not (sep1 and sep2):
            raise NoteError("malformed private key: want PRIVATE+KEY+<name>+<hex id>+<base64 seed>")
        _check_key_name(name)
        key_id = _parse_key_id(hex_id)
        key = _b64decode(key64, "private key")
        if not key or key[0] != ALG_ED25519:
            raise NoteError(f"private key {name}+{hex_id}: unknown or missing algorithm byte")
        if len(key) != 1 + _ED25519_KEY_SIZE:
            raise NoteError(f"private key {name}+{hex_id}: Ed25519 seed has the wrong length")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(key[1:]))
        if signer.key_id != key_id:
            raise NoteError(f"private key {name}+{hex_id}: key ID does not match the key")
        return signer

    @property
    def name(self) -> str:
        return self._verifier.name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    def sign(self, text: bytes) -> bytes:
        """The signature line payload for ``text``: key ID (4 bytes, big-endian) || Ed25519 signature."""
        return self.key_id.to_bytes(4, "big") + self._key.sign(text)

    def private_key_string(self) -> str:
        """``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>``, the golang.org/x/mod encoding. Secret."""
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id:08x}+{_b64encode(bytes([ALG_ED25519]) + seed)}"

    def verifier(self) -> Verifier:
        return self._verifier

    def verifier_key(self) -> str:
        """The public verifier key string ``<name>+<hex id>+<base64(0x01 || public key)>``."""
        return self._verifier.vkey()

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"


def generate_signer(name: str) -> Signer:
    """A new random Ed25519 signer named ``name``."""
    return Signer(name, Ed25519PrivateKey.generate())


# --- Note format ----------------------------------------------------------------------------------------


def _check_message_chars(msg: bytes, what: str) -> str:
    """Signed-note "Format": valid UTF-8, no ASCII control characters other than newline."""
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"malformed {what}: not valid UTF-8") from exc
    if any(c < " " and c != "\n" for c in decoded):
        raise NoteError(f"malformed {what}: contains an ASCII control character")
    return decoded


def _check_text(text: bytes) -> None:
    _check_message_chars(text, "note text")
    if not text.endswith(b"\n"):
        raise NoteError("malformed note text: must end with a newline")


@dataclass(frozen=True)
class _Parsed:
    text: bytes
    signatures: list[Signature]
    lines: list[str]  # the signature lines as received, so re-emitting them is byte-exact


def _parse_signature_line(line: str) -> Signature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("malformed note: signature line does not start with an em dash and a space")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not is_valid_key_name(name) or not b64:
        raise NoteError("malformed note: bad key name or missing signature in a signature line")
    raw = _b64decode(b64, "signature line")
    if len(raw) < 5:
        raise NoteError("malformed note: signature shorter than a key ID plus one byte")
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def _parse(msg: bytes) -> _Parsed:
    """Split a signed note into text and signature lines, as sumdb/note ``Open`` does before verifying."""
    _check_message_chars(msg, "note")
    # The text is separated from the signatures by the last empty line (signed-note "Format"), so text lines
    # that look like signatures, and blank lines inside the text, are unambiguous.
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block or not block.endswith(b"\n"):
        raise NoteError("malformed note: missing signature lines or final newline")
    lines = block.decode("utf-8").split("\n")[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    signatures: list[Signature] = []
    kept: list[str] = []
    for line in lines:
        sig = _parse_signature_line(line)
        if line in kept:  # sumdb/note drops repeated identical lines
            continue
        signatures.append(sig)
        kept.append(line)
    return _Parsed(text, signatures, kept)


def _verifier_map(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other != v:
            # Two different keys with the same name and ID: the trust configuration is wrong (sumdb/note
            # "ambiguous key"); refuse rather than pick one.
            raise NoteError(f"ambiguous verifier keys for {v.name}+{v.key_id:08x}")
    return known


def open_note(msg: bytes, verifiers: Sequence[Verifier]) -> Note:
    """Parse ``msg`` and verify its signatures against ``verifiers`` (sumdb/note ``Open`` semantics).

    Signatures by keys not in ``verifiers`` are kept in ``Note.signatures`` but otherwise ignored; a known key
    counts once (later lines by the same key are dropped unverified, as sumdb/note does); a known key whose
    signature does not verify fails the whole note (signed-note "Signatures": SHOULD reject); no verified
    signature fails the note (MUST reject).
    """
    known = _verifier_map(verifiers)
    parsed = _parse(msg)
    signatures: list[Signature] = []
    verified: list[Signature] = []
    seen_known: set[tuple[str, int]] = set()
    for sig in parsed.signatures:
        ident = (sig.name, sig.key_id)
        verifier = known.get(ident)
        if verifier is not None:
            if ident in seen_known:
                continue
            seen_known.add(ident)
            if not verifier.verify(parsed.text, sig.sig):
                raise NoteError(f"invalid signature by {sig.name}+{sig.key_id:08x}")
            verified.append(sig)
        signatures.append(sig)
    if not verified:
        raise NoteError("note has no verifiable signature by a known key")
    return Note(parsed.text, signatures, verified)


def _signature_lines(text: bytes, signers: Sequence[Signer]) -> list[str]:
    idents = [(s.name, s.key_id) for s in signers]
    if len(set(idents)) != len(idents):
        raise NoteError("the same key is given twice")
    return [f"{_SIG_PREFIX}{s.name} {_b64encode(s.sign(text))}" for s in signers]


def _assemble(text: bytes, lines: Sequence[str]) -> bytes:
    if not lines:
        raise NoteError("a signed note needs at least one signature")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a signed note carries at most {MAX_SIGNATURES} signatures")
    return text + b"\n" + "".join(line + "\n" for line in lines).encode("utf-8")


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` with every signer, in order.

    The text must be non-empty UTF-8 without control characters other than newline and end in a newline. Text
    lines that look like signature lines, and blank lines, are allowed: the parser splits at the last blank
    line, so they can never be taken for signatures.
    """
    _check_text(text)
    return _assemble(text, _signature_lines(text, signers))


def add_signatures(msg: bytes, signers: Sequence[Signer]) -> bytes:
    """Append signatures by ``signers`` to the signed note ``msg`` (key rotation, cosigning).

    Existing lines are kept byte for byte, except those by a key among ``signers``, which are replaced (as
    sumdb/note ``Sign`` does). The existing signatures are not verified here: open the note first when the
    new signature is meant to vouch for it.
    """
    parsed = _parse(msg)
    replaced = {(s.name, s.key_id) for s in signers}
    kept = [
        line
        for sig, line in zip(parsed.signatures, parsed.lines, strict=True)
        if (sig.name, sig.key_id) not in replaced
    ]
    return _assemble(parsed.text, kept + _signature_lines(parsed.text, signers))
