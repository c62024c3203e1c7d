"""Many inclusion proofs from one table of subtree hashes: the walk matches RFC 9162's PATH, every entry of any
subset verifies, and a changed leaf or table hash fails exactly where it is."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz_ledger.errors import ProofError
from authz_ledger.tlog import proof, tree
from authz_ledger.tlog.shared_proofs import SharedProofs, collect_nodes, siblings


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(b"leaf %d" % i).digest() for i in range(n)]


def subtree(hashes: list[bytes], lo: int, hi: int) -> bytes:
    return tree.root_from_leaf_hashes(hashes[lo:hi])


def table(hashes: list[bytes], chosen: list[int]) -> dict[tuple[int, int], bytes]:
    return {r: subtree(hashes, *r) for r in collect_nodes(chosen, len(hashes))}


@pytest.mark.parametrize("size", range(1, 70))
def test_the_bottom_up_walk_is_rfc9162_path_for_every_leaf(size: int) -> None:
    for index in range(size):
        assert list(siblings(index, size)) == proof.inclusion_ranges(index, size)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_chosen_leaf_verifies_and_the_table_holds_exactly_their_paths(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 300))
    chosen = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
    hashes = leaves(size)
    nodes = table(hashes, chosen)
    assert set(nodes) == {r for i in chosen for r in proof.inclusion_ranges(i, size)}
    proofs = SharedProofs(size, tree.root_from_leaf_hashes(hashes), nodes)
    for i in chosen:
        proofs.verify(i, hashes[i])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_changed_leaf_fails_alone_and_its_neighbours_still_verify(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, 200))
    chosen = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=2)))
    bad = data.draw(st.sampled_from(chosen))
    hashes = leaves(size)
    proofs = SharedProofs(size, tree.root_from_leaf_hashes(hashes), table(hashes, chosen))
    failed = []
    for i in chosen:
        try:
            proofs.verify(i, hashlib.sha256(b"changed").digest() if i == bad else hashes[i])
        except ProofError:
            failed.append(i)
    assert failed == [bad]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_changed_table_hash_fails_only_walks_through_it_and_verified_walks_contradict_it(
    data: st.DataObject,
) -> None:
    size = data.draw(st.integers(2, 200))
    chosen = sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1)))
    hashes = leaves(size)
    nodes = table(hashes, chosen)
    changed = data.draw(st.sampled_from(sorted(nodes)))
    nodes[changed] = hashlib.sha256(b"other").digest()
    proofs = SharedProofs(size, tree.root_from_leaf_hashes(hashes), nodes)
    failed = []
    for i in chosen:
        try:
            proofs.verify(i, hashes[i])
        except ProofError:
            failed.append(i)
    assert failed, "a changed proof hash on some path must make that path fail"
    assert all(changed in proof.inclusion_ranges(i, size) for i in failed)
    blamed = {r for i in failed for r in proofs.contradicted(i)}
    assert blamed <= {changed}


@pytest.mark.parametrize(
    ("index", "size", "message"),
    [
        pytest.param(5, 5, "not in a tree of 5 leaves", id="a leaf beyond the tree is refused"),
        pytest.param(-1, 5, "not in a tree of 5 leaves", id="a negative leaf index is refused"),
    ],
)
def test_leaves_outside_the_tree_are_refused(index: int, size: int, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        SharedProofs(size, tree.EMPTY_ROOT, {}).verify(index, tree.EMPTY_ROOT)


def test_a_missing_table_hash_is_named_by_its_range() -> None:
    hashes = leaves(8)
    nodes = table(hashes, [3])
    del nodes[(0, 2)]
    with pytest.raises(ProofError, match=r"no hash for the subtree of leaves \[0, 2\)"):
        SharedProofs(8, tree.root_from_leaf_hashes(hashes), nodes).verify(3, hashes[3])
