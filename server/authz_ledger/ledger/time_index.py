"""The time index: which entries fall in a time range, without reading every entry.

Two records in the ledger's LMDB environment (see store.py)::

    times   time_unix_nano (u64 BE) || seq (u64 BE)  -> b""   one key per entry, in time order
    meta    b"time_index_size"                       -> u64 BE: every entry with seq below it has its key

The keys of a batch are written in the transaction that writes its entries (``Store.append_batch``), so the
index never disagrees with what is committed. A ledger written before the index existed, or extended by a
version that did not keep it, has a ``time_index_size`` below its head: opening it writable fills the gap
(:func:`backfill`), and until then readers see that the index does not cover what they ask for and scan.

Times are not monotonic in seq (the clock steps; handlers on several threads stamp a decision before the writer
orders it), so the index gives the *set* of entries in a range; the reader still reads them in seq order and
applies the whole filter to every one, so an answer through the index is exactly the answer of a scan.

An entry whose bytes do not decode has no time: it is keyed under :data:`UNKNOWN_TIME` and every range query
returns it, so the reader decodes it and fails closed (LedgerCorruptError) as the scan does.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import lmdb
from google.protobuf.message import DecodeError

from authz_ledger.errors import LedgerCorruptError
from authz_ledger.record import entry

log = logging.getLogger(__name__)

COVERED_KEY = b"time_index_size"
"""The ``meta`` key holding how many entries (seq 0 .. n-1) the index covers."""
UNKNOWN_TIME = (1 << 64) - 1
"""The key time of an entry that does not decode; also the largest time a fixed64 can hold."""
BACKFILL_BATCH = 65536
"""Entries indexed per write transaction while backfilling: each commit is brief, progress is logged per batch."""
KEYS_PER_TXN = 16384
"""Index keys read per read transaction by a range query (16-byte keys: a few milliseconds each)."""

_KEY = struct.Struct(">QQ")
_U64 = struct.Struct(">Q")

Begin = Callable[[], AbstractContextManager[Any]]
"""Opens a short read transaction (Store.read_txn)."""


_TIME_TAG = 3 << 3 | 1  # LedgerEntry.time_unix_nano: field 3, fixed64
_FIXED64 = struct.Struct("<Q")


def entry_time(data: bytes) -> int:
    """The ``time_unix_nano`` of stored entry bytes, as the reader's decoding sees it; UNKNOWN_TIME if none.

    The writer calls this for every entry, so the common case skips the full decode: the encoder writes fields in
    number order, so in an entry it wrote, ``sequence`` (1) and ``schema`` (2, both varints) come first and
    ``time_unix_nano`` (3) right after. Anything else takes the full decode. (Only the Check handler's encoder
    writes entries, and it never repeats a field; the full decode would take the last of repeated ones.)
    """
    pos = 0
    for _ in range(2):
        if pos < len(data) and data[pos] in (0x08, 0x10):  # field 1 or 2, varint
            pos += 1
            while pos < len(data) and data[pos] & 0x80:
                pos += 1
            pos += 1
    if pos + 9 <= len(data) and data[pos] == _TIME_TAG:
        return int(_FIXED64.unpack_from(data, pos + 1)[0])
    try:
        return int(entry.LedgerEntry.FromString(data).time_unix_nano)
    except DecodeError:
        return UNKNOWN_TIME


def key(time_unix_nano: int, seq: int) -> bytes:
    return _KEY.pack(time_unix_nano, seq)


def keys_for(entries: Sequence[bytes], first_seq: int) -> list[bytes]:
    """Index keys of ``entries`` (seq ``first_seq`` on), sorted: inserted in key order they stay page-local."""
    pack = _KEY.pack
    return sorted(pack(entry_time(data), first_seq + i) for i, data in enumerate(entries))


def covered(txn: Any, meta: Any, times: Any) -> int:
    """How many entries (from seq 0) the index covers in ``txn``: 0 without a ``times`` database or marker."""
    if times is None:
        return 0
    raw = txn.get(COVERED_KEY, db=meta)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def extend_covered(txn: Any, meta: Any, old_size: int, new_size: int) -> None:
    """In the batch's write transaction: the index covers ``new_size`` if it covered everything before it.

    When it did not (an older version appended without it), the batch's keys are written all the same and the
    marker stays where it is: the next writable open backfills from there.
    """
    raw = txn.get(COVERED_KEY, db=meta)
    if (0 if raw is None else int(_U64.unpack(raw)[0])) == old_size:
        txn.put(COVERED_KEY, _U64.pack(new_size), db=meta)


@dataclass(frozen=True, slots=True)
class TimeRangeSeqs:
    """The entries of a seq range whose indexed time is in a time range.

    ``seqs`` lists them in seq order when there are at most the asked-for number; otherwise it is None and only
    ``first`` .. ``last`` (inclusive) is known: every entry in the time range lies there. Empty: first > last.
    """

    first: int
    last: int
    seqs: tuple[int, ...] | None

    @property
    def empty(self) -> bool:
        return self.first > self.last


def seqs_in_range(
    begin: Begin,
    meta: Any,
    times: Any,
    head_size: Callable[[Any], int],
    since_ns: int,
    until_ns: int,
    start: int,
    stop: int | None,
    *,
    max_keys: int | None,
    max_listed: int,
) -> TimeRangeSeqs | None:
    """Entries ``start <= seq < stop`` with ``since_ns <= time < until_ns`` (0: unbounded) by the index.

    None when the index cannot answer -- it does not cover every entry below ``stop``, a bound is beyond u64,
    or more than ``max_keys`` index keys lie in the time range (then reading the seq range itself costs
    less) -- and the caller scans instead. Keys are read ``KEYS_PER_TXN`` per short read transaction: keys are
    only ever added, and those added meanwhile belong to entries at or beyond ``stop``.
    """
    if since_ns > UNKNOWN_TIME or until_ns > UNKNOWN_TIME or times is None:
        return None
    with begin() as txn:
        indexed = covered(txn, meta, times)
        if stop is None:
            stop = head_size(txn)
    if indexed < stop:
        return None
    # Keys that do not decode are candidates of every range: reading them fails closed, as the scan does.
    ranges: list[tuple[bytes, bytes | None]] = [(key(since_ns, 0), key(until_ns, 0) if until_ns else None)]
    if until_ns:
        ranges.append((key(UNKNOWN_TIME, 0), None))
    first, last, visited = stop, start - 1, 0
    listed: list[int] | None = []
    for low, high in ranges:
        for k in _keys_between(begin, times, low, high):
            visited += 1
            if max_keys is not None and visited > max_keys:
                return None
            seq = int(_U64.unpack_from(k, 8)[0])
            if not start <= seq < stop:
                continue
            first, last = min(first, seq), max(last, seq)
            if listed is not None:
                listed.append(seq)
                if len(listed) > max_listed:
                    listed = None
    return TimeRangeSeqs(first, last, None if listed is None else tuple(sorted(listed)))


def _keys_between(begin: Begin, times: Any, low: bytes, high: bytes | None) -> Iterator[bytes]:
    """Index keys ``low <= k < high`` in key order, ``KEYS_PER_TXN`` per read transaction."""
    resume, skip = low, None
    while True:
        batch: list[bytes] = []
        with begin() as txn:
            cur = txn.cursor(db=times)
            if cur.set_range(resume):
                for view in cur.iternext(values=False):
                    k = bytes(view)
                    if high is not None and k >= high:
                        break
                    if k == skip:
                        continue
                    batch.append(k)
                    if len(batch) == KEYS_PER_TXN:
                        break
        yield from batch
        if len(batch) < KEYS_PER_TXN:
            return
        resume = skip = batch[-1]


def backfill(env: Any, entries: Any, meta: Any, times: Any, head_size: Callable[[Any], int], path: object) -> None:
    """Index the entries the index does not cover yet, ``BACKFILL_BATCH`` per write transaction.

    Each transaction writes its keys and the new ``time_index_size`` together, so a crash midway leaves a
    shorter but correct index that the next open continues. A marker above the keys present (the ``times``
    database was dropped) starts over. A failure is logged, not raised: the index only speeds up reads, and
    readers scan wherever it does not cover.
    """
    total, done = None, 0
    try:
        while True:
            with env.begin(write=True) as txn:
                size = head_size(txn)
                start = covered(txn, meta, times)
                if start > txn.stat(times)["entries"]:
                    log.warning("time index of %s is shorter than its marker says: rebuilding it", path)
                    start = 0
                if start >= size:
                    break
                if total is None:
                    total = size - start
                    log.info("time index of %s: indexing %d entries written without it", path, total)
                stop = min(size, start + BACKFILL_BATCH)
                keys = _keys_of_stored(txn, entries, start, stop)
                txn.cursor(db=times).putmulti([(k, b"") for k in keys])
                txn.put(COVERED_KEY, _U64.pack(stop), db=meta)
            done += stop - start
            log.info("time index of %s: %d of %d entries indexed", path, done, total)
    except (lmdb.Error, LedgerCorruptError) as e:
        log.error("time index of %s stays incomplete (reads by time scan the ledger): %s", path, e)


def _keys_of_stored(txn: Any, entries: Any, start: int, stop: int) -> list[bytes]:
    """Index keys of the stored entries [start, stop), sorted; they must all exist (no gaps)."""
    keys: list[bytes] = []
    cur = txn.cursor(db=entries)
    if cur.set_key(_U64.pack(start)):
        for k, v in cur:
            seq = start + len(keys)
            if seq == stop or int(_U64.unpack(k)[0]) != seq:
                break
            keys.append(key(entry_time(bytes(v)), seq))
    if len(keys) != stop - start:
        missing = start + len(keys)
        raise LedgerCorruptError(f"entry {missing} is missing below the committed head", missing)
    keys.sort()
    return keys
