"""Answering a query newest first, one page at a time, through the console index.

The indexed conditions of a query each name a posting list; the entries that carry all of them are found by a
leapfrog join walking down from the top of the page (every list seeks to the largest seq at or below the current
candidate until all agree), so a page costs a few seeks per row whatever the ledger's size. The time range
narrows the walk to the seqs of its minutes. Every candidate is then read from the ledger and checked against
the whole query (``facts.matches``); conditions the index does not hold (a header it does not index, a path
prefix that ends inside a segment, exact times) are decided there. A query that the index narrows too little
stops after ``budget`` candidates and says where to go on (``Page.next_before``, ``Page.partial``).

Entries the index has not reached yet (it follows the ledger a moment behind) are scanned directly.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from authz_ledger.console import postings
from authz_ledger.console.facts import Facts, facts_of, matches
from authz_ledger.console.index import PATH_DEPTH, ConsoleIndex, path_prefixes, term
from authz_ledger.console.query import Query
from authz_ledger.ledger.store import from_u64, u64

PAGE = 50
BUDGET = 10_000
"""Candidates read and checked per page at most (about 18 µs each with the page around them): one page stays
under 200 ms on this machine."""
_BLOCK = struct.Struct(">I")


@dataclass(frozen=True)
class Page:
    rows: list[Facts]
    next_before: int | None
    """Where the next (older) page starts: ``before=`` in the URL; None when nothing older matches."""
    partial: bool
    """The budget ran out before the page filled: older matches may exist below ``next_before``."""


def plan(index: ConsoleIndex, q: Query) -> list[bytes]:
    """The posting lists that hold every entry matching ``q`` (their intersection is a superset of the answer)."""
    terms = []
    if q.outcome:
        terms.append(term("o", q.outcome))
    if q.user:
        terms.append(term("u", q.user))
    if q.status:
        terms.append(term("s", str(q.status)))
    if q.method:
        terms.append(term("m", q.method))
    if q.host:
        terms.append(term("h", q.host))
    if q.version:
        terms.append(term("v", q.version))
    if q.path:
        prefixes = path_prefixes(q.path)  # path: is a prefix of whole segments, so it is a term when not too deep
        if prefixes:
            terms.append(term("p", prefixes[min(len(prefixes), PATH_DEPTH) - 1]))
    for name, value in q.headers:
        if name in index.indexed_headers:
            terms.append(term("e", f"{name}={value}"))
    terms.extend(term("w", w) for w in q.words)
    return terms


class _Lists:
    """Seeks in posting lists within one read transaction, decoded blocks cached."""

    def __init__(self, index: ConsoleIndex, txn: Any) -> None:
        self.cur = txn.cursor(db=index.postings)
        self.cache: dict[tuple[bytes, int], list[int] | int] = {}

    def _block(self, t: bytes, block: int, value: Any) -> list[int] | int:
        found = self.cache.get((t, block))
        if found is None:
            found = self.cache[t, block] = postings.decode(bytes(value))
        return found

    def _key_block(self, t: bytes) -> int | None:
        k = bytes(self.cur.key())
        if len(k) != len(t) + 4 or not k.startswith(t):
            return None
        return int(_BLOCK.unpack(k[-4:])[0])

    def last_at_or_below(self, t: bytes, seq: int) -> int | None:
        block, offset = postings.block_of(seq)
        if self.cur.set_range(t + _BLOCK.pack(block)) and self._key_block(t) == block:
            found = postings.last_at_or_below(self._block(t, block, self.cur.value()), offset)
            if found is not None:
                return block * postings.BLOCK + found
            ok = self.cur.prev()
        elif self.cur.key():  # positioned after the block (or the end): the previous key may be this term's
            ok = self.cur.prev()
        else:
            ok = self.cur.last()
        b = self._key_block(t) if ok else None
        if b is None:
            return None
        found = postings.last_at_or_below(self._block(t, b, self.cur.value()), postings.BLOCK - 1)
        return None if found is None else b * postings.BLOCK + found

    def first_at_or_above(self, t: bytes, seq: int) -> int | None:
        block, offset = postings.block_of(seq)
        if not self.cur.set_range(t + _BLOCK.pack(block)):
            return None
        b = self._key_block(t)
        if b == block:
            found = postings.first_at_or_above(self._block(t, b, self.cur.value()), offset)
            if found is not None:
                return b * postings.BLOCK + found
            b = self._key_block(t) if self.cur.next() else None
        if b is None:
            return None
        found = postings.first_at_or_above(self._block(t, b, self.cur.value()), 0)
        return None if found is None else b * postings.BLOCK + found


def _join_down(lists: _Lists, terms: list[bytes], top: int, low: int) -> Iterator[int]:
    """Seqs in [low, top) on every list, descending (leapfrog join)."""
    cand = top - 1
    while cand >= low:
        agreed = 0
        i = 0
        while agreed < len(terms):
            s = lists.last_at_or_below(terms[i], cand)
            if s is None or s < low:
                return
            if s == cand:
                agreed += 1
            else:
                cand, agreed = s, 1
            i = (i + 1) % len(terms)
        yield cand
        cand -= 1


def search(index: ConsoleIndex, q: Query, before: int | None = None, limit: int = PAGE, budget: int = BUDGET) -> Page:
    """The newest ``limit`` entries below ``before`` (None: the head) that match ``q``."""
    store = index.store
    size = store.head().size
    top = size if before is None else max(0, min(before, size))
    covered = index.covered()  # entries 0 .. covered-1 are in the index; the rest are read one by one
    low, indexed_top = 0, min(top, covered)
    if q.since_ns or q.until_ns:
        span = index.seq_span(q.since_ns, q.until_ns)  # the indexed entries in the range lie in [lo, hi]
        low, indexed_top = (covered, covered) if span is None else (span[0], min(indexed_top, span[1] + 1))
    rows: list[Facts] = []
    examined = 0
    last = top
    with store.read_txn() as ltxn, index.read_txn() as itxn:

        def check(seq: int) -> bool:
            nonlocal examined, last
            examined, last = examined + 1, seq
            raw = ltxn.get(u64(seq), db=store.entries)
            if raw is not None:
                f = facts_of(seq, bytes(raw), index.user_headers)
                if matches(q, f):
                    rows.append(f)
            return len(rows) >= limit or examined >= budget

        if q.decision_id:
            found = ltxn.get(_uuid_key(q.decision_id), db=store.ids)
            if found is not None and from_u64(found) < top:
                check(from_u64(found))
            return Page(rows, None, False)
        # Entries the index has not reached: newest, and few (it follows the ledger).
        for seq in range(top - 1, max(covered, low) - 1, -1):
            if check(seq):
                return _page(rows, seq, limit)
        terms = plan(index, q)
        candidates: Iterator[int] = (
            _join_down(_Lists(index, itxn), terms, indexed_top, low)
            if terms
            else iter(range(indexed_top - 1, low - 1, -1))
        )
        for seq in candidates:
            if check(seq):
                return _page(rows, seq, limit)
    return Page(rows, None, False)


def _page(rows: list[Facts], last: int, limit: int) -> Page:
    return Page(rows, last if last > 0 else None, len(rows) < limit)


def _uuid_key(decision_id: str) -> bytes:
    return uuid.UUID(decision_id).bytes


def neighbours(index: ConsoleIndex, principal: str, seq: int) -> tuple[int | None, int | None]:
    """The previous and next decision of the same principal (through its posting list and the unindexed tail)."""
    if not principal:
        return None, None
    t = term("u", principal)
    covered = index.covered()
    with index.read_txn() as itxn:
        lists = _Lists(index, itxn)
        prev = lists.last_at_or_below(t, seq - 1) if 0 < seq <= covered else None
        nxt = lists.first_at_or_above(t, seq + 1) if seq + 1 < covered else None
    if prev is None and seq > covered:
        prev = _scan_for(index, principal, range(seq - 1, covered - 1, -1))
    if nxt is None:
        nxt = _scan_for(index, principal, range(max(seq + 1, covered), index.store.head().size))
    return prev, nxt


def _scan_for(index: ConsoleIndex, principal: str, seqs: range) -> int | None:
    store = index.store
    with store.read_txn() as txn:
        for seq in seqs[:1000]:
            raw = txn.get(u64(seq), db=store.entries)
            if raw is not None and facts_of(seq, bytes(raw), index.user_headers).principal == principal:
                return seq
    return None


def newer(index: ConsoleIndex, q: Query, after: int, limit: int = 500) -> tuple[list[Facts], int]:
    """Entries above ``after`` that match ``q``, oldest first (the live tail), and the next ``after``."""
    store = index.store
    size = store.head().size
    stop = min(size, after + 1 + limit)
    rows = []
    with store.read_txn() as txn:
        for seq in range(after + 1, stop):
            raw = txn.get(u64(seq), db=store.entries)
            if raw is not None:
                f = facts_of(seq, bytes(raw), index.user_headers)
                if matches(q, f):
                    rows.append(f)
    return rows, stop - 1
