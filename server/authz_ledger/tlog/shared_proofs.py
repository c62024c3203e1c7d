"""Many RFC 9162 inclusion proofs against one root, drawn from one table of subtree hashes. Pure.

An evidence pack proves thousands of entries against one checkpoint. Entry ``i``'s inclusion proof is the list
of hashes of the subtrees ``proof.inclusion_ranges(i, size)`` (RFC 9162 §2.1.3.1 PATH), so a table of subtree
hashes keyed by leaf range holds every entry's proof, each shared hash stored once.

Each entry is still verified on its own (RFC 9162 §2.1.3.2 with the hashes from the table), so a changed entry
fails alone and is named, while its neighbours -- whose proofs hold the table's copy of its leaf hash -- still
verify. To keep that cheap, every (range, hash) computed on a path that reached the signed root is remembered:
an entry whose walk meets a remembered range with the same hash is proved there (the rest of its walk would
repeat a verified one). For a run of entries that makes the cost about two hashes per entry instead of log n.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from authz_ledger.errors import ProofError
from authz_ledger.tlog import proof, tree


class SharedProofs:
    """Verify inclusion of leaves in the tree (``size``, ``root``) with proof hashes from ``nodes``."""

    def __init__(self, size: int, root: bytes, nodes: Mapping[tuple[int, int], bytes]) -> None:
        self.size = size
        self.root = root
        self.nodes = nodes
        self._verified: dict[tuple[int, int], bytes] = {(0, size): root}
        self.used: set[tuple[int, int]] = set()
        """Table ranges used by walks that reached the root: their hashes are proved right."""

    def path_ranges(self, index: int) -> list[tuple[int, int]]:
        return proof.inclusion_ranges(index, self.size)

    def verify(self, index: int, leaf_hash: bytes) -> None:
        """ProofError unless leaf ``index`` with ``leaf_hash`` is in the tree."""
        if not self.reaches_root(index, leaf_hash):
            raise ProofError(f"leaf {index}'s inclusion path does not lead to the root of the tree of size {self.size}")

    def reaches_root(self, index: int, leaf_hash: bytes) -> bool:
        """Whether leaf ``index`` with ``leaf_hash`` is in the tree. ProofError when it cannot be told: the index
        is outside the tree, or the table lacks a hash of its path (named)."""
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} is not in a tree of {self.size} leaves")
        node, h = (index, index + 1), leaf_hash
        walked: list[tuple[tuple[int, int], bytes]] = []
        looked_up: list[tuple[int, int]] = []
        for sib in siblings(index, self.size):
            if self._verified.get(node) == h:
                break
            sibling = self.nodes.get(sib)
            if sibling is None:
                raise ProofError(f"no hash for the subtree of leaves [{sib[0]}, {sib[1]}) on its inclusion path")
            looked_up.append(sib)
            # RFC 9162 §2.1.3.2: the sibling is on the right when it starts where the current subtree ends.
            if sib[0] == node[1]:
                node, h = (node[0], sib[1]), tree.node_hash(h, sibling)
            else:
                node, h = (sib[0], node[1]), tree.node_hash(sibling, h)
            walked.append((node, h))
        if self._verified.get(node) != h:
            return False
        self._verified.update(walked)
        self.used.update(looked_up)
        return True

    def contradicted(self, index: int) -> list[tuple[int, int]]:
        """The table ranges on leaf ``index``'s path whose hash differs from the one verified walks computed
        for that subtree: those table entries are wrong (the verified value is proved by the root)."""
        return [r for r in self.path_ranges(index) if r in self._verified and self.nodes.get(r) != self._verified[r]]


def siblings(index: int, size: int) -> Iterator[tuple[int, int]]:
    """The leaf ranges of PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf level first, computed bottom-up one at
    a time (``proof.inclusion_ranges`` computes the whole list top-down): a walk that stops early costs only
    the levels it climbed. At each level the current subtree is the aligned block of ``width`` leaves holding
    the leaf, cut at ``size``; on the tree's ragged right edge a block with no right neighbour is its own
    parent (RFC 9162 splits at the largest power of two below n, so that level has no node of its own)."""
    lo, hi, width = index, index + 1, 1
    while hi - lo < size:
        if (lo // width) % 2:
            sib = (lo - width, lo)
        elif lo + width < size:
            sib = (lo + width, min(lo + 2 * width, size))
        else:
            width *= 2
            continue
        yield sib
        lo, hi, width = min(lo, sib[0]), max(hi, sib[1]), width * 2


def collect_nodes(indexes: Iterable[int], size: int) -> list[tuple[int, int]]:
    """Every range on the inclusion path of some leaf of ``indexes`` (sorted): a leaf's walk up stops at a
    subtree an earlier walk passed through, whose siblings above are already collected."""
    needed: set[tuple[int, int]] = set()
    passed: set[tuple[int, int]] = set()
    for index in indexes:
        lo, hi = index, index + 1
        for sib in siblings(index, size):
            if (lo, hi) in passed:
                break
            passed.add((lo, hi))
            needed.add(sib)
            lo, hi = min(lo, sib[0]), max(hi, sib[1])
    return sorted(needed)
