"""Every tamper class, at any position in ledgers of any size: detected, and located as exactly as the evidence
left allows (property-tested).

Where the stored data still holds per-entry evidence (the entry's own leaf hash, its key, its index row), the
first bad sequence number is exact. Where a forger rewrote an entry together with its leaf hash, only a hash
above it still disagrees; it commits to the original but cannot say which of the entries under it changed, so
the error names the range (``seq..last_seq``) and that range holds the changed entry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.errors import LedgerCorruptError, RollbackError
from authz_ledger.ledger.store import Store, from_u64, u64
from authz_ledger.ledger.trust import Trust, verify_ledger
from authz_ledger.ledger.verify import verify_store
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import ORIGIN
from tests.ledger.test_verify import _put, build_ledger

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _ledger(tmp: pytest.TempPathFactory, data: st.DataObject, *, min_size: int = 1) -> tuple[Store, note.Signer, int]:
    signer = note.generate_signer(ORIGIN)
    n = data.draw(st.integers(min_value=min_size, max_value=60), label="entries")
    batch = data.draw(st.integers(min_value=1, max_value=9), label="batch")
    store = build_ledger(tmp.mktemp("t") / "l", signer, n=n, batch=batch)
    verify_store(store, [signer.verifier()])
    return store, signer, n


def _failure(store: Store, signer: note.Signer) -> LedgerCorruptError:
    with pytest.raises(LedgerCorruptError) as exc:
        verify_store(store, [signer.verifier()])
    return exc.value


def _flip(store: Store, seq: int) -> bytes:
    data = bytearray(store.entry(seq) or b"")
    data[-1] ^= 0x01
    _put(store, "entries", u64(seq), bytes(data))
    return bytes(data)


@SETTINGS
@given(data=st.data())
def test_a_flipped_byte_is_named_exactly(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    store, signer, n = _ledger(tmp_path_factory, data)
    seq = data.draw(st.integers(0, n - 1), label="seq")
    _flip(store, seq)
    error = _failure(store, signer)
    assert (error.seq, error.last_seq) == (seq, seq)


@SETTINGS
@given(data=st.data())
def test_an_entry_rewritten_with_its_leaf_hash_is_located_in_the_smallest_range_that_holds_it(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, signer, n = _ledger(tmp_path_factory, data)
    seq = data.draw(st.integers(0, n - 1), label="seq")
    _put(store, "hashes", u64(tree.stored_hash_index(0, seq)), tree.leaf_hash(_flip(store, seq)))
    error = _failure(store, signer)
    assert error.seq is not None and error.seq <= seq <= error.last_seq
    if "stored tree hash over them" in str(error):
        # Caught by the stored hash over the pair (level 1): one of two entries, the pair's first named.
        assert (error.seq, error.last_seq) == (seq & ~1, seq | 1)
    else:
        # Caught by its batch record first (the pair is not complete by the batch's end): one of the batch.
        assert "batch" in str(error)


@SETTINGS
@given(data=st.data())
def test_reordered_entries_are_named_at_the_first_moved(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, signer, n = _ledger(tmp_path_factory, data, min_size=2)
    a = data.draw(st.integers(0, n - 2), label="a")
    b = data.draw(st.integers(a + 1, n - 1), label="b")
    ea, eb = store.entry(a) or b"", store.entry(b) or b""
    _put(store, "entries", u64(a), eb)
    _put(store, "entries", u64(b), ea)
    error = _failure(store, signer)
    assert (error.seq, error.last_seq) == (a, a)


@SETTINGS
@given(data=st.data())
def test_a_deleted_entry_is_named_exactly(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    store, signer, n = _ledger(tmp_path_factory, data)
    seq = data.draw(st.integers(0, n - 1), label="seq")
    _put(store, "entries", u64(seq), None)
    error = _failure(store, signer)
    assert (error.seq, error.last_seq) == (seq, seq)


@SETTINGS
@given(data=st.data())
def test_a_truncated_tail_names_the_first_missing_entry(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, signer, n = _ledger(tmp_path_factory, data)
    keep = data.draw(st.integers(0, n - 1), label="keep")
    for seq in range(keep, n):
        _put(store, "entries", u64(seq), None)
    error = _failure(store, signer)
    assert (error.seq, error.last_seq) == (keep, keep)


def _checkpoint_sizes(store: Store) -> list[int]:
    return [size for size, _ in store.iter_checkpoints()]


@SETTINGS
@given(data=st.data())
def test_a_checkpoint_signed_by_a_key_nobody_trusts_is_refused(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, signer, _ = _ledger(tmp_path_factory, data)
    size = data.draw(st.sampled_from(_checkpoint_sizes(store)), label="checkpoint")
    stranger = note.generate_signer(ORIGIN)
    root = tree.tree_hash(size, store.read_hashes)
    _put(
        store,
        "checkpoints",
        u64(size),
        checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, size, root), [stranger]),
    )
    error = _failure(store, signer)
    assert "does not verify" in str(error) and (error.seq, error.last_seq) == (size - 1, size - 1)


@SETTINGS
@given(data=st.data())
def test_a_replaced_checkpoint_is_located_to_the_entries_it_alone_covers(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, signer, _ = _ledger(tmp_path_factory, data)
    sizes = _checkpoint_sizes(store)
    size = data.draw(st.sampled_from(sizes), label="checkpoint")
    forged = checkpoint.Checkpoint(ORIGIN, size, b"\x07" * 32)
    _put(store, "checkpoints", u64(size), checkpoint.sign_checkpoint(forged, [signer]))
    error = _failure(store, signer)
    previous = max([s for s in sizes if s < size], default=0)
    assert "disagrees" in str(error) and (error.seq, error.last_seq) == (previous, size - 1)


@SETTINGS
@given(data=st.data())
def test_an_index_row_redirected_or_deleted_is_named_at_its_entry(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    store, signer, n = _ledger(tmp_path_factory, data, min_size=2)
    seq = data.draw(st.integers(0, n - 1), label="seq")
    with store.env.begin() as txn:
        rows = {from_u64(v): bytes(k) for k, v in txn.cursor(store.ids)}
    if data.draw(st.booleans(), label="delete"):
        _put(store, "ids", rows[seq], None)
    else:
        other = data.draw(st.integers(0, n - 1).filter(lambda s: s != seq), label="points at")
        _put(store, "ids", rows[seq], u64(other))
    error = _failure(store, signer)
    assert (error.seq, error.last_seq) == (seq, seq)
    assert "decision-id index" in str(error) or "indexed as" in str(error)


def test_an_extra_index_row_is_named_at_the_entry_it_points_at(tmp_path: Path) -> None:
    signer = note.generate_signer(ORIGIN)
    store = build_ledger(tmp_path / "l", signer, n=20, batch=5)
    _put(store, "ids", b"\x01" * 16, u64(7))
    error = _failure(store, signer)
    assert (error.seq, error.last_seq) == (7, 7)


Tamper = Callable[[Store, Path], None]


def _drop_checkpoints(store: Store, data_dir: Path) -> None:
    with store.env.begin(write=True) as txn:
        txn.drop(store.checkpoints, delete=False)


@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        pytest.param(
            _drop_checkpoints,
            LedgerCorruptError,
            "no signed checkpoint",
            id="a ledger whose checkpoints were removed is refused",
        ),
    ],
)
def test_the_core_refuses_what_the_store_alone_cannot_show(
    tmp_path: Path, tamper: Tamper, error: type[Exception], message: str
) -> None:
    signer = note.generate_signer(ORIGIN)
    store = build_ledger(tmp_path / "l", signer, n=20, batch=5)
    tamper(store, tmp_path)
    with pytest.raises(error, match=message):
        verify_ledger(store, Trust([signer.verifier()]))
    assert verify_ledger(store, Trust([signer.verifier()], unsafe_allow_unsigned=True)).size == 20


def test_a_checkpoint_file_ahead_of_the_ledger_is_a_rollback(tmp_path: Path) -> None:
    signer = note.generate_signer(ORIGIN)
    store = build_ledger(tmp_path / "l", signer, n=20, batch=5)
    ahead = checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, 25, b"\x01" * 32), [signer])
    (tmp_path / "checkpoint").write_bytes(ahead)
    with pytest.raises(RollbackError, match="size 25"):
        verify_ledger(store, Trust([signer.verifier()], checkpoint_file=tmp_path / "checkpoint"))
