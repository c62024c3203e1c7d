"""C2SP tlog-proof (https://c2sp.org/tlog-proof) receipts: offline proof that one entry is in the log. Pure.

The format, exactly as the spec's "Format" section gives it (lines separated by U+000A)::

    c2sp.org/tlog-proof@v1
    extra <base64>          optional opaque data, NOT authenticated (omitted when there is none)
    index <N>               zero-based, ASCII decimal without leading zeros
    <base64 hash>           zero or more lines: the RFC 6962 inclusion proof, leaf's sibling first
    <empty line>
    <signed checkpoint>     verbatim (C2SP tlog-checkpoint in a C2SP signed note, cosignatures included)

Invariants:

* ``parse_receipt(build_receipt(...))`` returns exactly what was built, and parsing is strict: only the bytes
  :func:`build_receipt` would produce for some input are accepted (canonical standard base64 per RFC 4648 §4,
  32-byte hashes, no leading zeros, no extra lines), so one receipt has one meaning.
* :func:`verify_receipt` trusts nothing in the receipt: it opens the checkpoint with the caller's verifier keys
  (a signature by a key named like the origin is required), recomputes the leaf hash from the entry bytes
  (RFC 9162 §2.1.1) and checks the inclusion proof against the signed root (RFC 9162 §2.1.3.2). The ``extra``
  data plays no part in that ("Applications MUST NOT implicitly trust the extra data").
* Failures are NoteError (the checkpoint) or ProofError (everything else), never anything else on purpose.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from authz_ledger.errors import ProofError
from authz_ledger.tlog import proof, tree
from authz_ledger.tlog.checkpoint import Checkpoint, open_checkpoint
from authz_ledger.tlog.note import Verifier

VERSION_LINE = "c2sp.org/tlog-proof@v1"
FILE_EXTENSION = ".tlog-proof"
"""tlog-proof: proofs SHOULD be stored with this extension."""

_MAX_INDEX = 2**64 - 1  # tlog sizes and indexes are uint64
_MAX_PROOF_HASHES = 64  # an inclusion proof in a tree of at most 2**64 leaves has at most 64 hashes
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed tlog-proof: leaf index, inclusion proof hashes, the signed checkpoint verbatim, extra data."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        data = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ProofError(f"malformed receipt: {what} is not standard base64") from exc
    if _b64(data) != text:  # canonical only: one receipt, one text
        raise ProofError(f"malformed receipt: {what} is not canonical base64")
    return data


def build_receipt(
    index: int, proof_hashes: Sequence[bytes], signed_checkpoint: bytes, extra: bytes | None = None
) -> bytes:
    """The tlog-proof text for leaf ``index``, its inclusion proof and the signed checkpoint (verbatim)."""
    if not 0 <= index <= _MAX_INDEX:
        raise ProofError(f"receipt index {index} out of range")
    if len(proof_hashes) > _MAX_PROOF_HASHES:
        raise ProofError(f"an inclusion proof has at most {_MAX_PROOF_HASHES} hashes, got {len(proof_hashes)}")
    for i, h in enumerate(proof_hashes):
        if len(h) != tree.HASH_SIZE:
            raise ProofError(f"proof hash {i} is {len(h)} bytes, want {tree.HASH_SIZE}")
    if not signed_checkpoint.endswith(b"\n") or b"\n\n" not in signed_checkpoint:
        raise ProofError("the checkpoint must be a signed note (text, blank line, signature lines)")
    lines = [VERSION_LINE]
    if extra is not None:
        lines.append(f"extra {_b64(extra)}")
    lines.append(f"index {index}")
    lines.extend(_b64(h) for h in proof_hashes)
    # tlog-proof "Format": after the inclusion proof lines and an empty line, the checkpoint verbatim.
    return ("\n".join(lines) + "\n\n").encode("ascii") + signed_checkpoint


def parse_receipt(data: bytes) -> Receipt:
    """Parse a tlog-proof strictly (see the module docstring); ProofError naming what is wrong."""
    # The header holds no empty line, so the first one ends it; the checkpoint note has its own blank line
    # (before its signatures), which is why this must be the first, not the last.
    split = data.find(b"\n\n")
    if split < 0:
        raise ProofError("malformed receipt: no empty line before the checkpoint")
    try:
        header = data[:split].decode("ascii")
    except UnicodeDecodeError:
        raise ProofError("malformed receipt: the lines before the checkpoint are not ASCII") from None
    signed = data[split + 2 :]
    if not signed:
        raise ProofError("malformed receipt: the checkpoint is missing")
    lines = header.split("\n")
    if lines[0] != VERSION_LINE:
        raise ProofError(f"not a tlog-proof receipt: first line must be {VERSION_LINE!r}")
    pos = 1
    extra = None
    if pos < len(lines) and lines[pos].startswith("extra "):
        extra = _unb64(lines[pos][len("extra ") :], "the extra data")
        pos += 1
    if pos >= len(lines) or not lines[pos].startswith("index "):
        raise ProofError("malformed receipt: want an 'index <N>' line after the version (and extra) line")
    digits = lines[pos][len("index ") :]
    if not _DECIMAL.fullmatch(digits) or int(digits) > _MAX_INDEX:
        raise ProofError(f"malformed receipt: index {digits!r} is not a decimal without leading zeros")
    index = int(digits)
    hash_lines = lines[pos + 1 :]
    if len(hash_lines) > _MAX_PROOF_HASHES:
        raise ProofError(f"malformed receipt: more than {_MAX_PROOF_HASHES} inclusion proof hashes")
    proof = []
    for i, line in enumerate(hash_lines):
        h = _unb64(line, f"proof hash {i}")
        if len(h) != tree.HASH_SIZE:
            raise ProofError(f"malformed receipt: proof hash {i} is {len(h)} bytes, want {tree.HASH_SIZE}")
        proof.append(h)
    return Receipt(index, tuple(proof), signed, extra)


def verify_receipt(
    receipt: bytes, entry: bytes, verifiers: Sequence[Verifier], origin: str | None = None
) -> Checkpoint:
    """Check offline that ``entry`` (the stored bytes) is leaf ``index`` of the tree the receipt's checkpoint
    signs; return that checkpoint. Raises NoteError (checkpoint signature / origin) or ProofError.
    """
    parsed = parse_receipt(receipt)
    cp, _ = open_checkpoint(parsed.checkpoint, verifiers, origin)
    # RFC 9162 §2.1.3.2: recompute the root from the leaf hash of the bytes we were given and the path.
    proof.verify_inclusion(parsed.index, cp.size, tree.leaf_hash(entry), parsed.proof, cp.root)
    return cp
