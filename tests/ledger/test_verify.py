"""Tamper tests on real LMDB files: every change to a stored ledger is detected and located."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.errors import LedgerCorruptError
from authz_ledger.ledger.store import Store, u64
from authz_ledger.ledger.verify import verify_store
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import ORIGIN, make_writer
from tests.support.entries import entry, pending
from tests.support.waits import wait_until

N = 100
BATCH = 10


def build_ledger(path: Path, signer: note.Signer, n: int = N, batch: int = BATCH) -> Store:
    s = Store(path, map_size=64 << 20)
    w = make_writer(s, signer)
    for start in range(0, n, batch):
        w._commit([pending(f"e{i}") for i in range(start, min(n, start + batch))])
        w._publish_checkpoint(force=True)
    return s


def _put(s: Store, db: str, key: bytes, value: bytes | None) -> None:
    with s.env.begin(write=True) as txn:
        handle = getattr(s, db)
        if value is None:
            txn.delete(key, db=handle)
        else:
            txn.put(key, value, db=handle)


def flip_byte(seq: int) -> Callable[[Store, note.Signer], None]:
    def tamper(s: Store, _: note.Signer) -> None:
        data = bytearray(s.entry(seq) or b"")
        data[-1] ^= 0x01
        _put(s, "entries", u64(seq), bytes(data))

    return tamper


def delete_entry(seq: int) -> Callable[[Store, note.Signer], None]:
    return lambda s, _: _put(s, "entries", u64(seq), None)


def swap(a: int, b: int) -> Callable[[Store, note.Signer], None]:
    def tamper(s: Store, _: note.Signer) -> None:
        ea, eb = s.entry(a), s.entry(b)
        assert ea is not None and eb is not None
        _put(s, "entries", u64(a), eb)
        _put(s, "entries", u64(b), ea)

    return tamper


def truncate_tail(keep: int) -> Callable[[Store, note.Signer], None]:
    def tamper(s: Store, _: note.Signer) -> None:
        for seq in range(keep, N):
            _put(s, "entries", u64(seq), None)

    return tamper


def replace_checkpoint(size: int, *, other_key: bool) -> Callable[[Store, note.Signer], None]:
    def tamper(s: Store, signer: note.Signer) -> None:
        key = note.generate_signer(ORIGIN) if other_key else signer
        fake_root = tree.leaf_hash(b"forged")
        _put(
            s,
            "checkpoints",
            u64(size),
            checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, size, fake_root), [key]),
        )

    return tamper


def rewrite_entry_and_its_hashes(seq: int) -> Callable[[Store, note.Signer], None]:
    """A careful forger rewrites the entry AND recomputes every stored hash: the signed checkpoints catch it."""

    def tamper(s: Store, _: note.Signer) -> None:
        entries = [s.entry(i) or b"" for i in range(N)]
        entries[seq] = entries[seq] + b"!"
        hashes = tree.Frontier().extend([tree.leaf_hash(e) for e in entries])
        _put(s, "entries", u64(seq), entries[seq])
        for i, h in enumerate(hashes):
            _put(s, "hashes", u64(i), h)

    return tamper


CASES = [
    pytest.param(flip_byte(37), 37, "does not match the stored tree", id="one flipped byte in entry 37 is named"),
    pytest.param(flip_byte(0), 0, "does not match", id="a flipped byte in the very first entry is named"),
    pytest.param(flip_byte(N - 1), N - 1, "does not match", id="a flipped byte in the last entry is named"),
    pytest.param(delete_entry(52), 52, "missing", id="a deleted entry is named"),
    pytest.param(swap(20, 21), 20, "does not match", id="two swapped entries are named at the first of them"),
    pytest.param(truncate_tail(90), 90, "missing", id="a truncated tail names the first missing entry"),
    pytest.param(
        replace_checkpoint(50, other_key=True),
        49,
        "does not verify",
        id="a checkpoint re-signed with another key is rejected",
    ),
    pytest.param(
        replace_checkpoint(50, other_key=False),
        40,  # the tree since the previous checkpoint (40) is what the forged signature disputes
        "disagrees",
        id="a validly signed checkpoint with a forged root disagrees with the tree",
    ),
    pytest.param(
        rewrite_entry_and_its_hashes(33),
        30,
        "does not commit to its entries",
        id="rewriting an entry and every stored hash is caught by its batch record",
    ),
]


@pytest.mark.parametrize(("tamper", "bad_seq", "message"), CASES)
def test_verify_detects_tampering_and_names_the_sequence_number(
    tmp_path: Path,
    signer: note.Signer,
    tamper: Callable[[Store, note.Signer], None],
    bad_seq: int,
    message: str,
) -> None:
    s = build_ledger(tmp_path / "l", signer)
    verify_store(s, [signer.verifier()])
    tamper(s, signer)
    with pytest.raises(LedgerCorruptError, match=message) as exc:
        verify_store(s, [signer.verifier()])
    assert exc.value.seq == bad_seq
    s.close()


def test_verify_from_the_latest_checkpoint_checks_only_the_tail(tmp_path: Path, signer: note.Signer) -> None:
    s = build_ledger(tmp_path / "l", signer)
    w = make_writer(s, signer)
    w._commit([pending("tail") for _ in range(5)])
    report = verify_store(s, [signer.verifier()], from_latest_checkpoint=True)
    assert (report.start, report.entries, report.size) == (N, 5, N + 5)
    flip_byte(N + 2)(s, signer)
    with pytest.raises(LedgerCorruptError) as exc:
        verify_store(s, [signer.verifier()], from_latest_checkpoint=True)
    assert exc.value.seq == N + 2


def test_verify_rejects_a_ledger_signed_by_an_unknown_key(tmp_path: Path, signer: note.Signer) -> None:
    s = build_ledger(tmp_path / "l", signer)
    with pytest.raises(LedgerCorruptError, match="does not verify"):
        verify_store(s, [note.generate_signer(ORIGIN).verifier()])


def test_verify_accepts_every_old_checkpoint_after_key_rotation(tmp_path: Path, signer: note.Signer) -> None:
    s = build_ledger(tmp_path / "l", signer, n=20)
    new = note.generate_signer(ORIGIN)
    w = make_writer(s, signer)
    w.signers = [signer, new]  # overlap period: both keys sign
    w._commit([pending("x")])
    w._publish_checkpoint(force=True)
    w.signers = [new]  # old key retired
    w._commit([pending("y")])
    w._publish_checkpoint(force=True)
    report = verify_store(s, [signer.verifier(), new.verifier()])
    assert report.checkpoints == 4
    with pytest.raises(LedgerCorruptError):
        verify_store(s, [new.verifier()])  # the old checkpoints need the old key


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_bit_flip_in_any_entry_is_detected_at_that_entry(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    signer = note.generate_signer(ORIGIN)
    n = data.draw(st.integers(min_value=1, max_value=40), label="entries")
    s = build_ledger(tmp_path_factory.mktemp("t") / "l", signer, n=n, batch=data.draw(st.integers(1, 8)))
    seq = data.draw(st.integers(min_value=0, max_value=n - 1), label="seq")
    entry = bytearray(s.entry(seq) or b"")
    bit = data.draw(st.integers(min_value=0, max_value=len(entry) * 8 - 1), label="bit")
    entry[bit // 8] ^= 1 << (bit % 8)
    _put(s, "entries", u64(seq), bytes(entry))
    with pytest.raises(LedgerCorruptError) as exc:
        verify_store(s, [signer.verifier()])
    assert exc.value.seq == seq
    s.close()


_ = lmdb


def test_verify_while_the_writer_commits_reads_one_consistent_snapshot(tmp_path: Path, signer: note.Signer) -> None:
    import contextlib
    import threading
    import time

    from authz_ledger.errors import BackpressureError
    from authz_ledger.ledger.writer import Durability

    s = Store(tmp_path / "l", map_size=64 << 20)
    w = make_writer(s, signer, durability=Durability.ASYNC, checkpoint_interval_s=0.01)
    w.start()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            with contextlib.suppress(BackpressureError):
                w.record(*entry("x"))
            time.sleep(0.0002)  # load, not a wait: leave the writer and the verifier their share of the interpreter

    t = threading.Thread(target=load)
    t.start()
    try:
        wait_until(lambda: s.head().size, message="the writer committed nothing")
        sizes = [verify_store(s, [signer.verifier()]).size for _ in range(30)]
    finally:
        stop.set()
        t.join()
        w.close()
    assert sizes == sorted(sizes)
    assert sizes[-1] > 0
    s.close()
