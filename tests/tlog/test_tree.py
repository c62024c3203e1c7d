"""RFC 6962 tree and stored-hash layout: published vectors, sumdb tlog numbering, properties."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.errors import ProofError
from authz_ledger.tlog.tree import (
    EMPTY_ROOT,
    Frontier,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    tree_hash,
)
from tests.conftest import VECTORS

REFERENCE = json.loads((VECTORS / "rfc6962_reference_tree.json").read_text())


class Store:
    """A dict-backed stored-hash table, filled the way the ledger writer fills it."""

    def __init__(self) -> None:
        self.hashes: dict[int, bytes] = {}
        self.frontier = Frontier()
        self.reads: list[list[int]] = []

    def append(self, leaf_hashes: Sequence[bytes]) -> None:
        start = stored_hash_count(self.frontier.size)
        for i, h in enumerate(self.frontier.extend(leaf_hashes)):
            self.hashes[start + i] = h

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        self.reads.append(list(indexes))
        return [self.hashes[i] for i in indexes]


def store_of(leaf_hashes: Sequence[bytes]) -> Store:
    store = Store()
    store.append(leaf_hashes)
    return store


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


# --- Stored-hash layout (sumdb tlog) --------------------------------------------------------------------


def sumdb_stored_hash_index(level: int, n: int) -> int:
    """golang.org/x/mod/sumdb/tlog StoredHashIndex, transliterated loop for loop."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def sumdb_stored_hashes(n: int, h: bytes, hashes: dict[int, bytes]) -> list[bytes]:
    """golang.org/x/mod/sumdb/tlog StoredHashesForRecordHash: the hashes stored when record n is added."""
    out = [h]
    m = ((n + 1) & -(n + 1)).bit_length() - 1  # trailing zeros of n + 1
    indexes = [stored_hash_index(i, (n >> i) - 1) for i in range(m)]
    for i in range(m):
        h = node_hash(hashes[indexes[i]], h)
        out.append(h)
    return out


def test_stored_hash_index_matches_sumdb_tlog_numbering() -> None:
    for level in range(8):
        for n in range(300):
            assert stored_hash_index(level, n) == sumdb_stored_hash_index(level, n)


def test_split_stored_hash_index_inverts_stored_hash_index() -> None:
    for index in range(20000):
        level, n = split_stored_hash_index(index)
        assert stored_hash_index(level, n) == index


def test_stored_hash_count_counts_the_hashes_of_every_complete_subtree() -> None:
    total = 0
    for n in range(1, 1000):
        total += 1 + (((n) & -(n)).bit_length() - 1)  # leaf n-1 completes trailing_zeros(n) subtrees
        assert stored_hash_count(n) == total
    assert stored_hash_count(0) == 0


@pytest.mark.parametrize("args", [(-1, 0), (0, -1)])
def test_negative_stored_hash_coordinates_are_rejected(args: tuple[int, int]) -> None:
    with pytest.raises(ProofError):
        stored_hash_index(*args)


def test_negative_counts_and_indexes_are_rejected() -> None:
    with pytest.raises(ProofError):
        stored_hash_count(-1)
    with pytest.raises(ProofError):
        split_stored_hash_index(-1)


# --- RFC 6962 reference tree ----------------------------------------------------------------------------


def h(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


REF_LEAVES = [leaf_hash(h(x)) for x in REFERENCE["leafInputsHex"]]
REF_STORE = store_of(REF_LEAVES)


def test_hasher_vectors() -> None:
    for vector in REFERENCE["hasherVectors"]:
        if "root" in vector:
            assert EMPTY_ROOT.hex() == vector["root"]
        elif "leafHash" in vector:
            assert leaf_hash(h(vector["inputHex"])).hex() == vector["leafHash"]
        else:
            assert node_hash(h(vector["leftHex"]), h(vector["rightHex"])).hex() == vector["nodeHash"]


def test_reference_leaf_hashes() -> None:
    assert [x.hex() for x in REF_LEAVES] == REFERENCE["leafHashes"]


@pytest.mark.parametrize("size", range(9))
def test_reference_root_of_every_size_by_every_method(size: int) -> None:
    want = REFERENCE["rootsBySize"][str(size)]
    assert root_from_leaf_hashes(REF_LEAVES[:size]).hex() == want
    assert tree_hash(size, REF_STORE.read, stored_size=8).hex() == want
    frontier = Frontier()
    frontier.extend(REF_LEAVES[:size])
    assert frontier.root().hex() == want


# --- Edge cases, decided explicitly ----------------------------------------------------------------------


def test_a_reader_returning_bad_hashes_is_refused() -> None:
    with pytest.raises(ProofError, match="returned 0 hashes"):
        tree_hash(3, lambda idx: [])
    with pytest.raises(ProofError, match="bytes"):
        tree_hash(3, lambda idx: [b"short"] * len(idx))


def test_appending_a_hash_that_is_not_32_bytes_is_refused() -> None:
    with pytest.raises(ProofError):
        Frontier().append(b"\x00" * 31)


def test_a_batch_with_one_bad_hash_is_refused_whole() -> None:
    frontier = Frontier()
    frontier.extend(leaves(3))
    with pytest.raises(ProofError):
        frontier.extend([*leaves(4), b"short"])
    assert frontier.size == 3
    assert frontier.root() == root_from_leaf_hashes(leaves(3))


def test_empty_tree() -> None:
    assert Frontier().root() == EMPTY_ROOT
    assert tree_hash(0, Store().read) == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert Frontier.from_stored(0, Store().read).size == 0


def test_copy_is_independent() -> None:
    frontier = Frontier()
    frontier.extend(leaves(5))
    snapshot = frontier.copy()
    frontier.append(leaf_hash(b"more"))
    assert snapshot.size == 5
    assert snapshot.root() == root_from_leaf_hashes(leaves(5))


# --- Properties -------------------------------------------------------------------------------------------


@st.composite
def split_leaf_lists(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Leaf hashes (0..600 of them) and the batch sizes they are appended in."""
    n = draw(st.integers(min_value=0, max_value=600))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=n), max_size=8)))
    bounds = [0, *cuts, n]
    return leaves(n), [b - a for a, b in itertools.pairwise(bounds)]


@settings(max_examples=60, deadline=None)
@given(split_leaf_lists())
def test_frontier_in_batches_stores_what_sumdb_tlog_stores(case: tuple[list[bytes], list[int]]) -> None:
    hashes, batches = case
    # Reference: sumdb tlog's StoredHashes, one record at a time, against a growing table.
    want: dict[int, bytes] = {}
    for n, leaf in enumerate(hashes):
        start = stored_hash_count(n)
        for i, x in enumerate(sumdb_stored_hashes(n, leaf, want)):
            want[start + i] = x
        assert len(want) == stored_hash_count(n + 1)
    # Ours: batches, reopening the frontier from storage between batches as a restarted writer would.
    got: dict[int, bytes] = {}
    frontier = Frontier()
    pos = 0
    for batch in batches:
        frontier = Frontier.from_stored(frontier.size, lambda idx: [got[i] for i in idx])
        start = stored_hash_count(frontier.size)
        new = frontier.extend(hashes[pos : pos + batch])
        pos += batch
        assert len(new) == stored_hash_count(pos) - start
        got.update((start + i, x) for i, x in enumerate(new))
        assert frontier.root() == root_from_leaf_hashes(hashes[:pos])
    assert got == want


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=300))
def test_every_prefix_root_matches_the_definition(n: int) -> None:
    hashes = leaves(n)
    store = store_of(hashes)
    frontier = Frontier()
    assert frontier.root() == root_from_leaf_hashes([])
    for size in range(1, n + 1):
        frontier.append(hashes[size - 1])
        want = root_from_leaf_hashes(hashes[:size])
        assert frontier.root() == want
        assert tree_hash(size, store.read, stored_size=n) == want
