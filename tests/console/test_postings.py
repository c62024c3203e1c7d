"""Posting-list blocks (sparse and dense forms) behave as the set of offsets they hold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authz_ledger.console import postings

offsets = st.lists(st.integers(0, postings.BLOCK - 1), max_size=700)


@given(st.lists(offsets, min_size=1, max_size=4))
def test_merging_batches_of_offsets_holds_their_union_in_the_smaller_form(batches: list[list[int]]) -> None:
    value = None
    union: set[int] = set()
    for batch in batches:
        value = postings.merge(value, batch)
        union |= set(batch)
    assert value is not None
    block = postings.decode(value)
    held = {o for o in range(postings.BLOCK) if (block >> o) & 1} if isinstance(block, int) else set(block)
    assert held == union
    assert postings.count(value) == len(union)
    assert len(value) == (postings.BITMAP_BYTES if len(union) >= postings.DENSE_AT else 2 * len(union))


@given(offsets, st.integers(0, postings.BLOCK - 1))
def test_seeks_find_the_nearest_offset_at_or_below_and_at_or_above(batch: list[int], at: int) -> None:
    block = postings.decode(postings.merge(None, batch))
    below = [o for o in batch if o <= at]
    above = [o for o in batch if o >= at]
    assert postings.last_at_or_below(block, at) == (max(below) if below else None)
    assert postings.first_at_or_above(block, at) == (min(above) if above else None)


def test_merging_an_offset_again_changes_nothing() -> None:
    once = postings.merge(None, [1, 5, 9])
    assert postings.merge(once, [5]) == once
