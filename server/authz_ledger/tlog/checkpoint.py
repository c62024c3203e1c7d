"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): the signed-note body naming a tree head.

Invariants:

* A :class:`Checkpoint` is valid by construction, and ``Checkpoint.parse(cp.to_text()) == cp`` for every
  instance: parsing is strict and accepts exactly the texts ``to_text`` produces (one text per tree head).
* Text: ``origin\\n``, ``size\\n`` in ASCII decimal without leading zeros, ``base64(32-byte root)\\n``, then
  optional non-empty extension lines, each ending in a newline.
* A checkpoint we open is trusted only if a signature by a key *named like its origin* verified
  (tlog-checkpoint "Signatures": the log's key name SHOULD match the origin; we require it, so a key trusted
  for one log cannot vouch for another log's checkpoints).
* Every failure is a :class:`~authz_ledger.errors.NoteError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from authz_ledger.errors import NoteError
from authz_ledger.tlog.note import Note, Signer, Verifier, open_note, sign_note

_ROOT_SIZE = 32
_MAX_SIZE = 2**64 - 1  # tree sizes are uint64 in every tlog implementation we interoperate with
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII only: str.isdigit() and int() would accept other digits


def _check_line(what: str, line: str) -> None:
    """A checkpoint line is non-empty and, being part of a signed note, free of control characters."""
    if not line:
        raise NoteError(f"malformed checkpoint: empty {what}")
    if any(c < " " for c in line):
        raise NoteError(f"malformed checkpoint: {what} contains a control character or newline")
    try:
        line.encode("utf-8")  # signed-note text is UTF-8: a lone surrogate can never be part of one
    except UnicodeEncodeError as e:
        raise NoteError(f"malformed checkpoint: {what} is not valid Unicode text: {e.reason}") from None


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and RFC 6962 root hash, and opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # tlog-checkpoint "Note text": the origin MUST be non-empty; spaces and '+' are only discouraged, and
        # clients MUST NOT assume the recommended format, so they are accepted here.
        _check_line("origin", self.origin)
        if not 0 <= self.size <= _MAX_SIZE:
            raise NoteError(f"malformed checkpoint: tree size {self.size} out of range")
        if len(self.root) != _ROOT_SIZE:
            raise NoteError(f"malformed checkpoint: root hash is {len(self.root)} bytes, want 32")
        for ext in self.extensions:
            _check_line("extension line", ext)  # extension lines, if any, MUST be non-empty

    def to_text(self) -> bytes:
        """The note text: origin, size, base64 root and extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint note text strictly: NoteError for anything ``to_text`` would not produce."""
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteError("malformed checkpoint: not valid UTF-8") from exc
        if not decoded.endswith("\n"):
            raise NoteError("malformed checkpoint: text must end with a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("malformed checkpoint: want origin, size and root lines")
        origin, size_line, root_line, *extensions = lines
        return cls(origin, _parse_size(size_line), _parse_root(root_line), tuple(extensions))


def _parse_size(line: str) -> int:
    if not _DECIMAL.fullmatch(line):
        raise NoteError(f"malformed checkpoint: tree size {line!r} is not a decimal without leading zeros")
    return int(line)


def _parse_root(line: str) -> bytes:
    try:
        root = binascii.a2b_base64(line.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise NoteError("malformed checkpoint: root hash is not base64") from exc
    # Only the canonical encoding, so one tree head has exactly one text.
    if base64.b64encode(root).decode("ascii") != line:
        raise NoteError("malformed checkpoint: root hash is not canonical base64")
    if len(root) != _ROOT_SIZE:
        raise NoteError(f"malformed checkpoint: root hash is {len(root)} bytes, want 32")
    return root


def sign_checkpoint(cp: Checkpoint, signers: Sequence[Signer]) -> bytes:
    """Sign ``cp`` as a note.

    One signer must be named like the origin, or :func:`open_checkpoint` would refuse the result; the others
    (e.g. the next key during a rotation) may have any name.
    """
    if not any(s.name == cp.origin for s in signers):
        raise NoteError(f"no signing key is named like the checkpoint origin {cp.origin!r}")
    return sign_note(cp.to_text(), signers)


def open_checkpoint(msg: bytes, verifiers: Sequence[Verifier], origin: str | None = None) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint; return it with the opened note (whose cosignatures the caller may check).

    Fails unless a signature by a key named exactly like the checkpoint's origin verified, and, when
    ``origin`` is given, unless the checkpoint is for that origin.
    """
    note = open_note(msg, verifiers)
    cp = Checkpoint.parse(note.text)
    if origin is not None and cp.origin != origin:
        raise NoteError(f"checkpoint is for origin {cp.origin!r}, want {origin!r}")
    if not any(sig.name == cp.origin for sig in note.verified):
        raise NoteError(f"no verified signature by a key named like the origin {cp.origin!r}")
    return cp, note
