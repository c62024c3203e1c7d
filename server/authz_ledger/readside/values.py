"""What the read side hands out and takes in: stored entries, entry filters, checkpoints, proofs and receipts.

Plain immutable values, shared by the reader, the audit service, its client and the CLI, and the parsing that
turns a stored checkpoint into one (fail closed); nothing here opens the store. Bytes are always the stored bytes
exactly as hashed or signed.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz_ledger.errors import InvalidRequestError, LedgerCorruptError, NoteError
from authz_ledger.record import entry
from authz_ledger.tlog import tree
from authz_ledger.tlog.checkpoint import Checkpoint

WaitForSize = Callable[[int, float], int]
"""``wait(size, timeout)``: block until the committed tree holds more than ``size`` entries or ``timeout``
seconds passed; return the committed size (LedgerWriter.wait_for_size, or :func:`.reader.poll_store` without one)."""


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One entry: its index (sequence number), the stored bytes and the same bytes decoded."""

    index: int
    raw: bytes
    message: Any  # authzledger.v1.LedgerEntry

    @property
    def leaf_hash(self) -> bytes:
        """RFC 9162 §2.1.1: SHA-256(0x00 || raw)."""
        return tree.leaf_hash(self.raw)


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """Conditions an entry must all meet; the zero value of each field matches everything."""

    since_unix_nano: int = 0
    """Inclusive lower bound on the entry's time; 0 = unbounded."""
    until_unix_nano: int = 0
    """Exclusive upper bound on the entry's time; 0 = unbounded."""
    outcome: int = 0
    """An authzledger.v1.Outcome; 0 (OUTCOME_UNSPECIFIED) matches every outcome."""
    path_prefix: str = ""
    principal: str = ""
    """Matches the source or the destination principal exactly."""

    def validate(self) -> None:
        if self.since_unix_nano < 0 or self.until_unix_nano < 0:
            raise InvalidRequestError("time bounds must be non-negative Unix nanoseconds (0 = unbounded)")
        if self.since_unix_nano and self.until_unix_nano and self.since_unix_nano >= self.until_unix_nano:
            raise InvalidRequestError(
                f"empty time range: since {self.since_unix_nano} is not before until {self.until_unix_nano}"
            )
        if self.outcome not in (0, *entry.OUTCOME_NAMES):
            raise InvalidRequestError(f"unknown outcome {self.outcome}")

    @property
    def is_empty(self) -> bool:
        return self == NO_FILTER

    def matches(self, msg: Any) -> bool:
        t = msg.time_unix_nano
        return (
            (not self.since_unix_nano or t >= self.since_unix_nano)
            and (not self.until_unix_nano or t < self.until_unix_nano)
            and (not self.outcome or msg.outcome == self.outcome)
            and (not self.path_prefix or msg.path.startswith(self.path_prefix))
            and (not self.principal or self.principal in (msg.source.principal, msg.destination.principal))
        )


NO_FILTER = EntryFilter()
"""The filter that matches every entry (a shared default: EntryFilter is immutable)."""


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A stored checkpoint: the signed note exactly as published, and what its text says."""

    origin: str
    size: int
    root: bytes
    note: bytes


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """PATH(index, D[tree_size]) (RFC 9162 §2.1.3.1), with the entry it proves and the roots it leads to."""

    index: int
    tree_size: int
    entry: bytes
    leaf_hash: bytes
    root: bytes
    hashes: tuple[bytes, ...]
    checkpoint: bytes | None
    """The signed checkpoint published at ``tree_size``, if there is one."""


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1). Empty when size1 is 0 (C2SP tlog-witness) or size2."""

    size1: int
    root1: bytes
    size2: int
    root2: bytes
    hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class IssuedReceipt:
    """A C2SP tlog-proof receipt, the entry it is for and the checkpoint it embeds."""

    proof: bytes
    entry: StoredEntry
    checkpoint: SignedCheckpoint


def parse_signed_checkpoint(signed: bytes) -> SignedCheckpoint:
    """What a signed checkpoint note says, its signatures unchecked (the caller holds the trust roots).

    NoteError if it is not a C2SP signed note whose text is a tlog-checkpoint.
    """
    split = signed.rfind(b"\n\n")  # C2SP signed-note: the text ends at the last blank line
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    cp = Checkpoint.parse(signed[: split + 1])
    return SignedCheckpoint(cp.origin, cp.size, cp.root, signed)


def parse_stored_checkpoint(size: int, signed: bytes) -> SignedCheckpoint:
    """A checkpoint as stored under ``size``: malformed or mislabelled means corruption (fail closed)."""
    try:
        cp = parse_signed_checkpoint(signed)
    except NoteError as e:
        raise LedgerCorruptError(f"stored checkpoint for tree size {size} is malformed: {e}", size - 1) from e
    if cp.size != size:
        raise LedgerCorruptError(f"checkpoint stored under tree size {size} says {cp.size}", min(size, cp.size) - 1)
    return cp


def check_checkpoint_root(cp: SignedCheckpoint, root: bytes) -> None:
    """A stored signed checkpoint must agree with the stored tree it names (fail closed)."""
    if cp.root != root:
        raise LedgerCorruptError(
            f"the signed checkpoint for tree size {cp.size} disagrees with the stored tree", cp.size - 1
        )


NEXT_INDEX_METADATA = "authz-ledger-next-index"
"""Trailing metadata of a Tail the server ended (idle): the first index it has not scanned, where to follow on."""


def iso_time(unix_nano: int, *, digits: int = 3) -> str:
    """ISO 8601 in UTC with ``digits`` fractional digits (up to 9: the ledger keeps nanoseconds)."""
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    try:
        when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, ValueError, OSError):  # beyond year 9999: show what is stored
        return f"{unix_nano}ns"
    fraction = "." + f"{nanos:09d}"[:digits] if digits > 0 else ""
    return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
