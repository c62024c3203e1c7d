"""RFC 6962 / RFC 9162 §2.1 Merkle tree (SHA-256): hashing, stored-hash layout, tree hashes. Pure, no I/O.

Invariants:

* ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``, the empty tree hashes
  to ``SHA-256("")`` (RFC 9162 §2.1.1). Every hash handed to or returned by this module is 32 bytes.
* The tree is persisted as the hashes of all its complete subtrees, numbered exactly as
  golang.org/x/mod/sumdb/tlog numbers them (``StoredHashIndex``): the hash of the ``n``-th complete subtree of
  ``2**level`` leaves lives at ``stored_hash_index(level, n)``, and a tree of ``size`` leaves owns exactly the
  indexes ``0 .. stored_hash_count(size) - 1``. Appending a leaf only ever adds indexes, never rewrites one,
  so the store is append-only like the log itself.
* :class:`Frontier` holds only the O(log n) hashes needed to append; everything else (tree hashes of older
  sizes here, inclusion and consistency proofs in :mod:`authz_ledger.tlog.proof`) is computed from stored hashes
  with O(log n) reads, fetched through a caller-supplied ``read_hashes(indexes) -> hashes`` callable in one
  batch per call.
* Errors are :class:`~authz_ledger.errors.ProofError` and nothing else, as in the proofs built on this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from authz_ledger.errors import ProofError

HASH_SIZE = 32
"""SHA-256 output size; every leaf, node and root hash has exactly this length."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() -- RFC 9162 §2.1.1."""

ReadHashes = Callable[[Sequence[int]], Sequence[bytes]]
"""Reads stored hashes by stored-hash index, returning them in the order asked for."""

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1 domain separation: leaves and interior nodes never collide
_NODE_PREFIX = b"\x01"

LeafRange = tuple[int, int]
"""A range [lo, hi) of leaves whose hash is needed; always a node of the RFC 6962 tree of some size."""


# --- Hashing (RFC 9162 §2.1.1) --------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one log entry, exactly the bytes stored and served."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right). Any byte strings are accepted (the hasher vectors use short ones)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) by the plain recursive definition of RFC 9162 §2.1.1, for cross-checking the fast paths.

    Split at k, the largest power of two strictly less than n; odd leaves are never duplicated.
    """
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = split_point(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def split_point(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2): RFC 9162 §2.1.1's k."""
    return 1 << ((n - 1).bit_length() - 1)


# --- Stored-hash layout (golang.org/x/mod/sumdb/tlog) ---------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """Index of the hash of the n-th complete subtree of 2**level leaves (sumdb tlog ``StoredHashIndex``).

    sumdb tlog writes all the hashes completed by leaf m together, right after those of leaf m-1. Leaf m's own
    hash lands at ``m + m//2 + m//4 + ... = 2m - popcount(m)``; a level-L hash is completed by leaf
    ``((n+1) << L) - 1`` and lands L places after that leaf's hash.
    """
    if level < 0 or n < 0:
        raise ProofError(f"stored hash coordinates must be non-negative, got level={level} n={n}")
    last_leaf = ((n + 1) << level) - 1
    return 2 * last_leaf - last_leaf.bit_count() + level


def stored_hash_count(n: int) -> int:
    """Number of stored hashes in a tree of n leaves (sumdb tlog ``StoredHashCount``): 2n - popcount(n)."""
    if n < 0:
        raise ProofError(f"tree size must be non-negative, got {n}")
    return 2 * n - n.bit_count()


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """Inverse of :func:`stored_hash_index` (sumdb tlog ``SplitStoredHashIndex``): index -> (level, n)."""
    if index < 0:
        raise ProofError(f"stored hash index must be non-negative, got {index}")
    # stored_hash_index(0, m) <= index < 2m + 2, so the leaf m whose batch holds `index` is index//2 or a few
    # (at most log2) leaves later; each leaf m adds 1 + trailing_zeros(m + 1) hashes.
    m = index // 2
    leaf_index = stored_hash_index(0, m)
    while True:
        next_leaf_index = leaf_index + 1 + _trailing_zeros(m + 1)
        if next_leaf_index > index:
            break
        m += 1
        leaf_index = next_leaf_index
    level = index - leaf_index
    return level, m >> level


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


# --- Compact range ---------------------------------------------------------------------------------------


class Frontier:
    """The compact range of a tree: hashes of its maximal complete subtrees, largest (leftmost) first.

    A tree of n leaves has one complete subtree per set bit of n, so at most log2(n) + 1 entries. Appending
    a leaf merges the subtrees made complete by it (one per trailing 1 bit of the old size), which are exactly
    the new hashes sumdb tlog's ``StoredHashes`` would store for that leaf.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> list[bytes]:
        """Add one leaf; return the new stored hashes, indexes ``stored_hash_count(old) .. count(new) - 1``.

        The first hash returned is ``leaf_hash`` itself (level 0), then one node hash per subtree the leaf
        completes, bottom-up -- which is stored-index order. This is the writer's hot path: one SHA-256 per
        completed subtree (one on average), no other work.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise ProofError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
        stack = self._stack
        new = [leaf_hash]
        h = leaf_hash
        n = self._size
        while n & 1:  # each trailing 1 bit of the old size is a left sibling waiting for this subtree
            h = _sha256(_NODE_PREFIX + stack.pop() + h).digest()
            new.append(h)
            n >>= 1
        stack.append(h)
        self._size += 1
        return new

    def extend(self, leaf_hashes: Sequence[bytes]) -> list[bytes]:
        """Append a batch of leaves; return all their new stored hashes, in stored-index order.

        All-or-nothing: every hash is checked before the frontier changes, so a refused batch never leaves the
        frontier ahead of what the caller stores. Same loop as :meth:`append`, inlined for batch throughput.
        """
        if any(len(h) != HASH_SIZE for h in leaf_hashes):
            raise ProofError(f"every leaf hash must be {HASH_SIZE} bytes")
        stack = self._stack
        new: list[bytes] = []
        push = new.append
        n = self._size
        for leaf in leaf_hashes:
            push(leaf)
            h = leaf
            m = n
            while m & 1:
                h = _sha256(_NODE_PREFIX + stack.pop() + h).digest()
                push(h)
                m >>= 1
            stack.append(h)
            n += 1
        self._size = n
        return new

    def root(self) -> bytes:
        """MTH of the current tree: fold the complete subtrees right to left (RFC 9162 §2.1.1). O(log n)."""
        return _fold(self._stack)

    def hashes(self) -> tuple[bytes, ...]:
        """The compact range itself, largest subtree first."""
        return tuple(self._stack)

    def copy(self) -> Frontier:
        """An independent frontier of the same tree (the stack of immutable hashes is copied, O(log n))."""
        other = Frontier()
        other._size = self._size
        other._stack = self._stack.copy()
        return other

    @classmethod
    def from_stored(cls, size: int, read_hashes: ReadHashes) -> Frontier:
        """Rebuild the frontier of the tree of ``size`` leaves from its stored hashes (one batched read)."""
        if size < 0:
            raise ProofError(f"tree size must be non-negative, got {size}")
        frontier = cls()
        frontier._stack = _read_checked(read_hashes, [_stored_index_of(r) for r in _perfect_ranges(0, size)])
        frontier._size = size
        return frontier

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


def _fold(subtree_hashes: Sequence[bytes]) -> bytes:
    """Hash of a range given the hashes of its perfect subtrees, largest first: right-to-left fold."""
    if not subtree_hashes:
        return EMPTY_ROOT
    h = subtree_hashes[-1]
    for left in reversed(subtree_hashes[:-1]):
        h = _sha256(_NODE_PREFIX + left + h).digest()
    return h


# --- Reading ranges from stored hashes -------------------------------------------------------------------


def _perfect_ranges(lo: int, hi: int) -> list[LeafRange]:
    """Split [lo, hi) into perfect (power-of-two, aligned) subtrees, largest first.

    Valid for every range asked about here and in :mod:`authz_ledger.tlog.proof`: lo is a multiple of a power of
    two >= hi - lo, because all ranges are nodes of an RFC 6962 tree (the right edge of a tree included).
    """
    out: list[LeafRange] = []
    width = hi - lo
    while width:
        step = 1 << (width.bit_length() - 1)
        out.append((lo, lo + step))
        lo += step
        width -= step
    return out


def _stored_index_of(r: LeafRange) -> int:
    lo, hi = r
    level = (hi - lo).bit_length() - 1
    return stored_hash_index(level, lo >> level)


def _read_checked(read_hashes: ReadHashes, indexes: list[int]) -> list[bytes]:
    """Call the reader once and check its answer; a LookupError means a hash beyond the stored tree."""
    if not indexes:
        return []
    try:
        got = list(read_hashes(indexes))
    except LookupError as exc:
        raise ProofError(f"stored hash missing (tree smaller than requested?): {exc}") from exc
    if len(got) != len(indexes):
        raise ProofError(f"hash reader returned {len(got)} hashes for {len(indexes)} indexes")
    for index, h in zip(indexes, got, strict=True):
        if len(h) != HASH_SIZE:
            raise ProofError(f"stored hash {index} is {len(h)} bytes, want {HASH_SIZE}")
    return got


def range_hashes(ranges: Sequence[LeafRange], read_hashes: ReadHashes) -> list[bytes]:
    """MTH of each range (a node of an RFC 6962 tree), reading all the perfect subtrees they need in one batch."""
    pieces = [_perfect_ranges(lo, hi) for lo, hi in ranges]
    flat = _read_checked(read_hashes, [_stored_index_of(p) for ps in pieces for p in ps])
    out: list[bytes] = []
    pos = 0
    for ps in pieces:
        out.append(_fold(flat[pos : pos + len(ps)]))
        pos += len(ps)
    return out


def check_stored_size(size: int, stored_size: int | None) -> None:
    """ProofError if ``size`` is beyond the stored tree (when its size, ``stored_size``, is known)."""
    if stored_size is not None and size > stored_size:
        raise ProofError(f"tree size {size} is beyond the stored tree ({stored_size} leaves)")


def tree_hash(size: int, read_hashes: ReadHashes, *, stored_size: int | None = None) -> bytes:
    """MTH of the first ``size`` leaves, from stored hashes: at most log2(size) + 1 reads in one batch.

    ``stored_size``, when given, bounds ``size`` before anything is read; otherwise the reader must raise a
    LookupError (e.g. KeyError) for hashes it does not hold, which becomes a ProofError.
    """
    if size < 0:
        raise ProofError(f"tree size must be non-negative, got {size}")
    check_stored_size(size, stored_size)
    if size == 0:
        return EMPTY_ROOT
    return range_hashes([(0, size)], read_hashes)[0]
