"""RFC 6962 / RFC 9162 §2.1 inclusion and consistency proofs over the stored tree of :mod:`.tree`. Pure, no I/O.

Invariants:

* Proofs are generated from stored hashes (RFC 9162 §2.1.3.1 PATH, §2.1.4.1 PROOF), each with one batched read
  of O(log n) hashes through the caller's ``read_hashes`` (see :mod:`authz_ledger.tlog.tree`).
* Proof generators and verifiers raise :class:`~authz_ledger.errors.ProofError` and nothing else on purpose.
  Verification follows RFC 9162 §2.1.3.2 / §2.1.4.2 with transparency-dev/merkle's edge-case policy (see
  :func:`verify_consistency` for the size-0 rule).
"""

from __future__ import annotations

from collections.abc import Sequence

from authz_ledger.errors import ProofError
from authz_ledger.tlog.tree import (
    HASH_SIZE,
    LeafRange,
    ReadHashes,
    check_stored_size,
    node_hash,
    range_hashes,
    split_point,
)

# --- Proof generation (RFC 9162 §2.1.3.1, §2.1.4.1) -------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[LeafRange]:
    """The subtrees whose hashes form PATH(index, D[size]), leaf level first (RFC 9162 §2.1.3.1).

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k]); walking
    down from the root collects the siblings top-down, so the list is reversed at the end.
    """
    out: list[LeafRange] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split_point(hi - lo)
        if index < mid:
            out.append((mid, hi))
            hi = mid
        else:
            out.append((lo, mid))
            lo = mid
    out.reverse()
    return out


def _consistency_ranges(size1: int, size2: int) -> list[LeafRange]:
    """The subtrees whose hashes form PROOF(size1, D[size2]) for 0 < size1 < size2 (RFC 9162 §2.1.4.1).

    SUBPROOF(m, D[n], b): if m == n, {} when b (the old tree is a whole left subtree the verifier already
    knows) else {MTH(D[n])}; otherwise with k the split point, m <= k recurses left and appends MTH(D[k:n]),
    m > k recurses right with b = false and appends MTH(D[0:k]). In absolute leaf numbers "m == n" is
    ``hi == size1``.
    """
    out: list[LeafRange] = []
    lo, hi = 0, size2
    old_is_left_subtree = True
    while hi != size1:
        mid = lo + split_point(hi - lo)
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
    check_stored_size(size, stored_size)
    return range_hashes(inclusion_ranges(index, size), read_hashes)


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
    check_stored_size(size2, stored_size)
    if size1 in (0, size2):
        return []
    return range_hashes(_consistency_ranges(size1, size2), read_hashes)


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
    want = len(inclusion_ranges(index, size))
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
