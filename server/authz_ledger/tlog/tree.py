"""RFC 6962 / RFC 9162 §2.1 Merkle tree (SHA-256): hashing, stored-hash layout, proofs. Pure, no I/O.

Invariants:

* ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``, the empty tree hashes
  to ``SHA-256("")`` (RFC 9162 §2.1.1). Every hash handed to or returned by this module is 32 bytes.
* The tree is persisted as the hashes of all its complete subtrees, numbered exactly as
  golang.org/x/mod/sumdb/tlog numbers them (``StoredHashIndex``): the hash of the ``n``-th complete subtree of
  ``2**level`` leaves lives at ``stored_hash_index(level, n)``, and a tree of ``size`` leaves owns exactly the
  indexes ``0 .. stored_hash_count(size) - 1``. Appending a leaf only ever adds indexes, never rewrites one,
  so the store is append-only like the log itself.
* :class:`Frontier` holds only the O(log n) hashes needed to append; everything else (tree hashes of older
  sizes, inclusion and consistency proofs) is computed from stored hashes with O(log n) reads, fetched through
  a caller-supplied ``read_hashes(indexes) -> hashes`` callable in one batch per call.
* Proof generators and verifiers raise :class:`~authz_ledger.errors.ProofError` and nothing else on purpose.
  Verification follows RFC 9162 §2.1.3.2 / §2.1.4.2 with transparency-dev/merkle's edge-case policy (see
  :func:`verify_consistency` for the size-0 rule).
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

# A range [lo, hi) of leaves whose hash is needed; always a node of the RFC 6962 tree of some size.
_Range = tuple[int, int]


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
    k = _split_point(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def _split_point(n: int) -> int:
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


def _perfect_ranges(lo: int, hi: int) -> list[_Range]:
    """Split [lo, hi) into perfect (power-of-two, aligned) subtrees, largest first.

    Valid for every range this module asks about: lo is a multiple of a power of two >= hi - lo, because all
    ranges are nodes of an RFC 6962 tree (the right edge of a tree included).
    """
    out: list[_Range] = []
    width = hi - lo
    while width:
        step = 1 << (width.bit_length() - 1)
        out.append((lo, lo + step))
        lo += step
        width -= step
    return out


def _stored_index_of(r: _Range) -> int:
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


def _range_hashes(ranges: Sequence[_Range], read_hashes: ReadHashes) -> list[bytes]:
    """MTH of each range, reading all the perfect subtrees they need in one batch."""
    pieces = [_perfect_ranges(lo, hi) for lo, hi in ranges]
    flat = _read_checked(read_hashes, [_stored_index_of(p) for ps in pieces for p in ps])
    out: list[bytes] = []
    pos = 0
    for ps in pieces:
        out.append(_fold(flat[pos : pos + len(ps)]))
        pos += len(ps)
    return out


def _check_stored_size(size: int, stored_size: int | None) -> None:
    if stored_size is not None and size > stored_size:
        raise ProofError(f"tree size {size} is beyond the stored tree ({stored_size} leaves)")


def tree_hash(size: int, read_hashes: ReadHashes, *, stored_size: int | None = None) -> bytes:
    """MTH of the first ``size`` leaves, from stored hashes: at most log2(size) + 1 reads in one batch.

    ``stored_size``, when given, bounds ``size`` before anything is read; otherwise the reader must raise a
    LookupError (e.g. KeyError) for hashes it does not hold, which becomes a ProofError.
    """
    if size < 0:
        raise ProofError(f"tree size must be non-negative, got {size}")
    _check_stored_size(size, stored_size)
    if size == 0:
        return EMPTY_ROOT
    return _range_hashes([(0, size)], read_hashes)[0]


# --- Proof generation (RFC 9162 §2.1.3.1, §2.1.4.1) -------------------------------------------------------


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """The subtrees whose hashes form PATH(index, D[size]), leaf level first (RFC 9162 §2.1.3.1).

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k]); walking
    down from the root collects the siblings top-down, so the list is reversed at the end.
    """
    out: list[_Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split_point(hi - lo)
        if index < mid:
            out.append((mid, hi))
            hi = mid
        else:
            out.append((lo, mid))
            lo = mid
    out.reverse()
    return out


def _consistency_ranges(size1: int, size2: int) -> list[_Range]:
    """The subtrees whose hashes form PROOF(size1, D[size2]) for 0 < size1 < size2 (RFC 9162 §2.1.4.1).

    SUBPROOF(m, D[n], b): if m == n, {} when b (the old tree is a whole left subtree the verifier already
    knows) else {MTH(D[n])}; otherwise with k the split point, m <= k recurses left and appends MTH(D[k:n]),
    m > k recurses right with b = false and appends MTH(D[0:k]). In absolute leaf numbers "m == n" is
    ``hi == size1``.
    """
    out: list[_Range] = []
    lo, hi = 0, size2
    old_is_left_subtree = True
    while hi != size1:
        mid = lo + _split_point(hi - lo)
        if size1 <= mid:
            out.append((mid, hi))
            hi = mid
        else:
            out.append((lo, mid))
            lo = mid
            old_is_left_subtree = False
    if not old_is_left_subtree:
        out.append((lo, hi))
    out.reverse()
    return out


def inclusion_proof(index: int, size: int, read_hashes: ReadHashes, *, stored_size: int | None = None) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1) from stored hashes, one batched read of O(log size) hashes.

    Raises ProofError unless 0 <= index < size (and size <= stored_size when given).
    """
    if index < 0 or size < 0:
        raise ProofError(f"index and size must be non-negative, got index={index} size={size}")
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    _check_stored_size(size, stored_size)
    return _range_hashes(_inclusion_ranges(index, size), read_hashes)


def consistency_proof(
    size1: int, size2: int, read_hashes: ReadHashes, *, stored_size: int | None = None
) -> list[bytes]:
    """PROOF(size1, D[size2]) (RFC 9162 §2.1.4.1) from stored hashes, one batched read of O(log size2) hashes.

    ``size1 == size2`` and ``size1 == 0`` give the empty proof: the latter is what C2SP tlog-witness sends for
    an old size of 0 (every tree extends the empty tree). Note that :func:`verify_consistency` rejects
    ``size1 == 0``; callers treat an old size of 0 specially. Raises ProofError for negative sizes,
    size1 > size2, or size2 beyond stored_size.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"tree sizes must be non-negative, got {size1} and {size2}")
    if size1 > size2:
        raise ProofError(f"old size {size1} is larger than new size {size2}")
    _check_stored_size(size2, stored_size)
    if size1 in (0, size2):
        return []
    return _range_hashes(_consistency_ranges(size1, size2), read_hashes)


# --- Proof verification (RFC 9162 §2.1.3.2, §2.1.4.2) -----------------------------------------------------


def _check_hash(what: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{what} must be {HASH_SIZE} bytes, got {len(h)}")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof hash {i}", h)


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with hash ``root``.

    RFC 9162 §2.1.3.2. Edge cases, as transparency-dev/merkle decides them: index >= size (so every size-0
    request) fails; the leaf hash, every proof hash and the root must be 32 bytes; the proof must have exactly
    the length PATH(index, D[size]) has, so trailing or leading extra hashes are rejected. Raises ProofError.
    """
    if index < 0 or size < 0:
        raise ProofError(f"index and size must be non-negative, got index={index} size={size}")
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_hashes(proof)
    want = len(_inclusion_ranges(index, size))
    if len(proof) != want:
        raise ProofError(f"inclusion proof for leaf {index} of {size} has {len(proof)} hashes, want {want}")
    # RFC 9162 §2.1.3.2 steps 2-5.
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # We are on the right edge: levels where this node has no right sibling add no proof hash.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise ProofError(f"inclusion proof for leaf {index} of {size} does not lead to the given root")


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1).

    RFC 9162 §2.1.4.2, with transparency-dev/merkle's edge cases so its test vectors pass:

    * size1 > size2 fails; negative sizes fail.
    * size1 == 0 always fails, even 0 -> 0: a proof from the empty tree proves nothing. C2SP tlog-witness
      sends an empty proof for an old size of 0 -- a caller that accepts that (the witness) must treat old
      size 0 as trivially consistent itself and not call this function.
    * size1 == size2 passes iff the proof is empty and the roots are byte-equal. As in transparency-dev/merkle,
      their length is not checked here: nothing is hashed, equal bytes are the whole claim (one published probe
      relies on it).
    * otherwise roots and proof hashes must be 32 bytes and the proof non-empty and exactly as long as
      PROOF(size1, D[size2]).

    Raises ProofError.
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"tree sizes must be non-negative, got {size1} and {size2}")
    if size1 > size2:
        raise ProofError(f"old size {size1} is larger than new size {size2}")
    if size1 == 0:
        raise ProofError("consistency with the empty tree is trivial and not proved (old size is 0)")
    if size1 == size2:
        if proof:
            raise ProofError(f"sizes are equal ({size1}) but the consistency proof is not empty")
        if root1 != root2:
            raise ProofError(f"trees of equal size {size1} have different roots")
        return
    _check_hash("old root", root1)
    _check_hash("new root", root2)
    _check_proof_hashes(proof)
    want = len(_consistency_ranges(size1, size2))
    if len(proof) != want:
        raise ProofError(f"consistency proof {size1} -> {size2} has {len(proof)} hashes, want {want}")
    _verify_consistency_path(size1, size2, root1, root2, proof)


def _verify_consistency_path(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2 steps 2-7 for 0 < size1 < size2 and a non-empty proof."""
    path = list(proof)
    # Step 2: when the old tree is a perfect subtree, the verifier already holds its hash.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Steps 3-4.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Steps 5-6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the root")
    if fr != root1:
        raise ProofError(f"consistency proof {size1} -> {size2} does not lead to the old root")
    if sr != root2:
        raise ProofError(f"consistency proof {size1} -> {size2} does not lead to the new root")
