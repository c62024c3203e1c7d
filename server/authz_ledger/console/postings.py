"""Posting lists in blocks: which entries carry a term, stored compactly and searched without reading them all.

Entries are grouped in blocks of ``BLOCK`` consecutive sequence numbers (as Roaring bitmaps do). One LMDB value
per (term, block) holds the offsets in that block that carry the term, in one of two forms:

* sparse: sorted little-endian uint16 offsets, 2 bytes each (fewer than ``DENSE_AT`` of them);
* dense: a ``BLOCK``-bit bitmap (``BITMAP_BYTES`` bytes), bit ``o`` set for offset ``o``.

A rare term (one user's decisions) costs 2 bytes per entry, a common one (``outcome:allow``) one bit; a
million entries with ~15 terms each index in tens of megabytes, not the ~1 KB per entry of one key per posting.
Functions here are pure: ``merge`` adds offsets to a stored value, ``last_at_or_below`` /
``first_at_or_above`` answer the leapfrog join's seeks inside one block.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable

BLOCK = 4096
BITMAP_BYTES = BLOCK // 8
DENSE_AT = BITMAP_BYTES // 2
"""At this many offsets the sparse form (2 bytes each) is as large as the bitmap: switch."""


def block_of(seq: int) -> tuple[int, int]:
    """(block number, offset in the block) of a sequence number."""
    return seq // BLOCK, seq % BLOCK


def decode(value: bytes) -> list[int] | int:
    """A stored block: sorted offsets (sparse) or the bitmap as an int (dense: bit o = offset o)."""
    if len(value) == BITMAP_BYTES:
        return int.from_bytes(value, "little")
    return list(struct.unpack(f"<{len(value) // 2}H", value))


def encode(offsets: list[int] | int) -> bytes:
    if isinstance(offsets, int):
        return offsets.to_bytes(BITMAP_BYTES, "little")
    return struct.pack(f"<{len(offsets)}H", *offsets)


def merge(stored: bytes | None, new: Iterable[int]) -> bytes:
    """The block value with ``new`` offsets added (idempotent: re-indexing an entry changes nothing)."""
    current = decode(stored) if stored else []
    if isinstance(current, int):
        bits = current
        for o in new:
            bits |= 1 << o
        return encode(bits)
    merged = sorted(set(current).union(new))
    if len(merged) >= DENSE_AT:
        bits = 0
        for o in merged:
            bits |= 1 << o
        return encode(bits)
    return encode(merged)


def count(value: bytes) -> int:
    block = decode(value)
    return block.bit_count() if isinstance(block, int) else len(block)


def last_at_or_below(block: list[int] | int, offset: int) -> int | None:
    """The largest offset in ``block`` that is <= ``offset``."""
    if isinstance(block, int):
        below = block & ((2 << offset) - 1)
        return below.bit_length() - 1 if below else None
    i = bisect.bisect_right(block, offset)
    return block[i - 1] if i else None


def first_at_or_above(block: list[int] | int, offset: int) -> int | None:
    """The smallest offset in ``block`` that is >= ``offset``."""
    if isinstance(block, int):
        above = block >> offset
        return offset + ((above & -above).bit_length() - 1) if above else None
    i = bisect.bisect_left(block, offset)
    return block[i] if i < len(block) else None
