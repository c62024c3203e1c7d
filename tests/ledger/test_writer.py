"""The writer: group commit, chain and tree agreement, durability modes, backpressure, checkpoints."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.errors import BackpressureError, LedgerClosedError, LedgerWriteError
from authz_ledger.ledger.queue import Pending
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.verify import verify_store
from authz_ledger.ledger.writer import Durability, LedgerWriter
from authz_ledger.record import entry
from authz_ledger.record.entry import DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import checkpoint, note, tree
from tests.conftest import ORIGIN, make_writer
from tests.support.entries import entry as entry_of
from tests.support.waits import wait_until


def _entries(n: int) -> list[tuple[bytes, bytes]]:
    """(entry body, decision id) pairs: real entries, indexed under their own ids."""
    return [entry_of(f"body{i}") for i in range(n)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(splits=st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=12))
def test_stored_tree_equals_a_from_scratch_rfc6962_computation_for_any_batch_split(
    tmp_path_factory: pytest.TempPathFactory, splits: list[int]
) -> None:
    s = Store(tmp_path_factory.mktemp("ledger") / "l", map_size=64 << 20)
    signer = note.generate_signer(ORIGIN)
    w = make_writer(s, signer)
    bodies = _entries(sum(splits))
    i = 0
    for n in splits:
        w._commit([Pending(b, d, False) for b, d in bodies[i : i + n]])
        i += n
    stored = [s.entry(k) for k in range(len(bodies))]
    assert all(e is not None for e in stored)
    leaves = [tree.leaf_hash(e) for e in stored if e is not None]
    # The tree root after every batch equals the plain recursive MTH of the prefix (RFC 6962 §2.1).
    for record, _ in s.iter_batches():
        assert record.tree_root == tree.root_from_leaf_hashes(leaves[: record.tree_size])
    # Every stored hash equals a from-scratch computation, and nothing more is stored.
    scratch = tree.Frontier().extend(leaves)
    assert s.read_hashes(range(tree.stored_hash_count(len(leaves)))) == scratch
    assert s.head().root == tree.root_from_leaf_hashes(leaves)
    report = verify_store(s, [signer.verifier()])
    assert report.size == len(bodies)
    assert report.batches == len(splits)
    s.close()


def test_sync_record_returns_only_after_the_entry_is_committed(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer)
    w.start()
    try:
        seq = w.record(b"\x22\x01x", new_decision_id().bytes)
        assert seq == 0
        assert store.entry(0) == b"\x08\x00\x22\x01x"
        assert store.head().size == 1
    finally:
        w.close()


def test_group_commit_takes_everything_queued_in_one_batch(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer, durability=Durability.ASYNC)
    for b, d in _entries(300):
        w.record(b, d)
    assert w.queue_depth == 300  # the thread is not started yet: nothing is taken
    w.start()
    w.close()
    assert w.stats.committed_batches == 1
    assert store.head().size == 300


def test_batch_size_is_capped(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer, durability=Durability.ASYNC, batch_max_entries=64)
    for b, d in _entries(200):
        w.record(b, d)
    w.start()
    w.close()
    assert [r.count for r, _ in store.iter_batches()] == [64, 64, 64, 8]


def test_full_queue_denies_after_a_bounded_wait_and_never_drops(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer, durability=Durability.ASYNC, queue_size=10, enqueue_timeout_s=0.05)
    for b, d in _entries(10):
        w.record(b, d)
    started = time.monotonic()
    with pytest.raises(BackpressureError, match="queue full"):
        w.record(b"late", new_decision_id().bytes)
    assert 0.04 <= time.monotonic() - started < 1.0
    assert w.stats.rejected_backpressure == 1
    w.start()
    w.close()
    # Everything accepted is written, and the refused Check is accounted for by one summary entry.
    assert store.head().size == 11
    summary = entry.decode(store.entry(10) or b"")
    assert summary.outcome == entry.OUTCOME_ERROR
    assert summary.http_status == 503
    assert summary.error.startswith("BackpressureError: 1 Checks denied")


def test_closed_writer_refuses_new_entries(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer)
    w.start()
    w.close()
    with pytest.raises(LedgerClosedError):
        w.record(b"x", new_decision_id().bytes)


def test_checkpoints_are_published_on_interval_never_twice_for_one_size(
    tmp_path: Path, store: Store, signer: note.Signer
) -> None:
    cp_file = tmp_path / "checkpoint"
    w = make_writer(store, signer, checkpoint_interval_s=0.05)
    w.checkpoint_file = cp_file

    def sizes() -> list[int]:
        return [size for size, _ in store.iter_checkpoints()]

    w.start()
    try:
        w.record(b"a", new_decision_id().bytes)
        wait_until(sizes, lambda seen: seen == [1], message="no checkpoint for the first entry")
        # A real delay, not a wait: six intervals must pass for the test to show that none of them signed again.
        time.sleep(0.3)
        assert sizes() == [1]  # no new checkpoint for an unchanged tree
        w.record(b"b", new_decision_id().bytes)
        wait_until(sizes, lambda seen: seen == [1, 2], message="no checkpoint for the second entry")
    finally:
        w.close()
    assert sizes() == [1, 2]
    cp, _ = checkpoint.open_checkpoint(cp_file.read_bytes(), [signer.verifier()], origin=ORIGIN)
    assert (cp.size, cp.root) == (2, store.head().root)


def test_shutdown_drains_the_queue_and_signs_a_final_checkpoint(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer, durability=Durability.ASYNC)
    w.start()
    for b, d in _entries(1000):
        w.record(b, d)
    w.close()
    assert store.head().size == 1000
    latest = store.checkpoint()
    assert latest is not None and latest[0] == 1000


def test_concurrent_sync_writers_get_distinct_gapless_sequence_numbers(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer)
    w.start()
    seqs: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            s = w.record(*entry_of("z"))
            with lock:
                seqs.append(s)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert sorted(seqs) == list(range(1600))
    assert w.stats.committed_batches < 1600  # group commit happened
    verify_store(store, [signer.verifier()])


def test_decision_ids_index_finds_each_entry(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer)
    w.start()
    ids = [new_decision_id().bytes for _ in range(50)]
    for i in ids:
        w.record(b"x", i)
    w.close()
    assert [store.seq_of_decision(i) for i in ids] == list(range(50))


def _gate_commits(w: LedgerWriter) -> tuple[threading.Event, threading.Event]:
    """Hold every commit of ``w`` until the returned gate opens; ``entered`` is set when one is held."""
    gate, entered = threading.Event(), threading.Event()
    append = w._append

    def held(batch: list[Pending]) -> range:
        entered.set()
        gate.wait(10)
        return append(batch)

    w._append = held  # type: ignore[method-assign]
    return gate, entered


def _wait_until_closing(w: LedgerWriter) -> None:
    """Until ``close()`` has begun on another thread: new Checks are refused and its stop is queued.

    Only the held commit's batch has left the queue, so the stop is then the one item in it.
    """
    wait_until(lambda: (w._closed, w.queue_depth), lambda seen: seen == (True, 1), message="close() did not begin")


def _record_in_background(
    w: LedgerWriter, errors: list[LedgerWriteError], refused_body: Callable[[str], bytes] | None = None
) -> threading.Thread:
    """A sync Check's record() on a thread of its own, its LedgerWriteError (a commit timeout) kept in ``errors``."""

    def run() -> None:
        try:
            w.record(b"", new_decision_id().bytes, refused_body=refused_body)
        except LedgerWriteError as e:
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _record(store: Store, decision_id: bytes) -> Any:
    seq = store.seq_of_decision(decision_id)
    assert seq is not None
    raw = store.entry(seq)
    assert raw is not None
    return entry.decode(raw, seq)


def test_an_entry_still_queued_when_its_commit_times_out_is_recorded_as_refused(
    store: Store, signer: note.Signer
) -> None:
    w = make_writer(store, signer, commit_timeout_s=0.2)
    gate, entered = _gate_commits(w)
    w.start()
    earlier_errors: list[LedgerWriteError] = []
    # Its commit is held, so the next entry stays queued. It times out too (no refused_body: nothing to correct).
    earlier = _record_in_background(w, earlier_errors)
    assert entered.wait(5)
    policy = DecisionRecord(time_unix_nano=1, decision_id="policy", outcome=entry.OUTCOME_ALLOW, allowed=True)
    refused = DecisionRecord(time_unix_nano=1, decision_id="refused", error="LedgerWriteError: late")
    late = new_decision_id().bytes
    with pytest.raises(LedgerWriteError, match=r"commit did not finish within 0\.2 s"):
        w.record(policy.encode(), late, refused_body=lambda reason: refused.encode())
    gate.set()
    earlier.join(5)
    w.close()
    assert len(earlier_errors) == 1
    stored = _record(store, late)
    assert (stored.decision_id, stored.outcome, stored.allowed) == ("refused", entry.OUTCOME_ERROR, False)
    assert w.head.size == 2, "no correction entry: the queued entry itself was rewritten"


def test_an_entry_in_the_commit_under_way_when_it_times_out_gets_a_correction_entry(
    store: Store, signer: note.Signer
) -> None:
    w = make_writer(store, signer, commit_timeout_s=0.2)
    gate, entered = _gate_commits(w)
    w.start()
    late = new_decision_id().bytes
    policy = DecisionRecord(
        time_unix_nano=1, decision_id=str(uuid.UUID(bytes=late)), outcome=entry.OUTCOME_ALLOW, allowed=True
    )
    with pytest.raises(LedgerWriteError, match="commit did not finish"):
        w.record(policy.encode(), late, refused_body=lambda reason: b"never used")
    assert entered.is_set(), "the writer held the entry in its commit when the Check gave up"
    gate.set()
    w.close()
    assert w.head.size == 2
    assert _record(store, late).allowed, "the entry committed as the policy answered"
    correction = entry.decode(store.entry(1) or b"", 1)
    late_id = str(uuid.UUID(bytes=late))
    assert correction.outcome == entry.OUTCOME_ERROR
    assert f"decision {late_id} was denied with HTTP 503" in correction.error
    assert json.loads(correction.result_json) == {"refused_decision_id": late_id}
    verify_store(store, [signer.verifier()])


def test_a_correction_whose_commit_fails_is_written_by_a_later_commit(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer, commit_timeout_s=0.2)
    gate, entered = _gate_commits(w)
    held_append = w._append
    failures: list[int] = []

    def fail_the_correction_once(batch: list[Pending]) -> range:
        if len(failures) == 0 and any(b"was denied with HTTP" in p.body for p in batch):
            failures.append(len(batch))
            raise LedgerWriteError("injected: the correction's first commit fails")
        return held_append(batch)

    w._append = fail_the_correction_once  # type: ignore[method-assign]
    w.start()
    late = new_decision_id().bytes
    with pytest.raises(LedgerWriteError, match="commit did not finish"):
        w.record(b"", late, refused_body=lambda reason: b"")
    assert entered.is_set()
    gate.set()
    try:
        wait_until(lambda: w.head.size, lambda size: size >= 2, timeout=5, message="the correction was not written")
    finally:
        w.close()
    assert failures == [1], "the correction's own commit failed once"
    assert w.head.size == 2, "the held entry, then the correction on a retry without any new Check"
    late_id = str(uuid.UUID(bytes=late))
    assert f"decision {late_id} was denied" in entry.decode(store.entry(1) or b"", 1).error


def test_a_check_that_times_out_while_the_writer_shuts_down_still_gets_its_correction(
    store: Store, signer: note.Signer
) -> None:
    w = make_writer(store, signer, commit_timeout_s=0.3)
    gate, entered = _gate_commits(w)
    w.start()
    errors: list[LedgerWriteError] = []
    waiter = _record_in_background(w, errors, refused_body=lambda reason: b"")
    assert entered.wait(5)
    closer = threading.Thread(target=w.close)
    closer.start()  # close() while the commit is held and the Check still waits
    waiter.join(5)
    gate.set()
    closer.join(10)
    assert len(errors) == 1
    assert w.head.size == 2, "the held entry and its correction, both written before the writer stopped"
    assert "was denied with HTTP 503" in entry.decode(store.entry(1) or b"", 1).error


def test_a_failing_refusal_body_still_denies_with_a_ledger_error(store: Store, signer: note.Signer) -> None:
    w = make_writer(store, signer, commit_timeout_s=0.2)
    gate, _ = _gate_commits(w)
    w.start()

    def broken(reason: str) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(LedgerWriteError, match="commit did not finish"):
        w.record(b"", new_decision_id().bytes, refused_body=broken)
    gate.set()
    w.close()


def test_entries_still_queued_at_shutdown_are_rewritten_in_place_never_overtaken_by_a_correction(
    store: Store, signer: note.Signer
) -> None:
    w = make_writer(store, signer, batch_max_entries=1, commit_timeout_s=0.2)
    gate, entered = _gate_commits(w)
    w.start()
    w._queue.put(Pending(b"", new_decision_id().bytes, False), 0)
    assert entered.wait(5)  # the first commit is held
    closer = threading.Thread(target=w.close)
    closer.start()
    _wait_until_closing(w)
    late = [Pending(b"", new_decision_id().bytes, True) for _ in range(3)]
    for p in late:  # stragglers that passed the closed check before close()
        w._queue.put(p, 0, force=True)
    for p in late:  # their Checks time out while the first commit is held
        w._correct(p, b"\x12\x07refused")
    gate.set()
    closer.join(10)
    assert [raw[-7:] for _, raw in store.iter_entries()][1:] == [b"refused"] * 3
    assert w.head.size == 4, "each rewritten in place: no correction entry"


def test_a_check_refused_during_the_shutdown_drain_is_counted_in_a_summary_entry(
    store: Store, signer: note.Signer
) -> None:
    w = make_writer(store, signer)
    gate, entered = _gate_commits(w)
    w.start()
    w._queue.put(Pending(b"", new_decision_id().bytes, False), 0)
    assert entered.wait(5)
    closer = threading.Thread(target=w.close)
    closer.start()
    _wait_until_closing(w)
    w._queue.put(Pending(b"", new_decision_id().bytes, False), 0, force=True)
    w.note_refused()  # e.g. a Check whose caller's deadline had expired, denied while the writer drains
    gate.set()
    closer.join(10)
    entries = list(store.iter_entries())
    assert len(entries) == 3, "the held entry, the straggler, the summary"
    assert entry.decode(entries[2][1], 2).error.startswith("BackpressureError: 1 Checks denied")
