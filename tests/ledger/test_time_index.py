"""The time index: written with every batch, backfilled for ledgers older than it, and answering time ranges
exactly as a scan of every entry does, whatever order the times come in."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.errors import LedgerCorruptError, LedgerWriteError
from authz_ledger.ledger import time_index
from authz_ledger.ledger.store import BatchRecord, Head
from authz_ledger.readside.reader import LedgerReader
from authz_ledger.readside.values import EntryFilter
from authz_ledger.record.entry import OUTCOME_ALLOW, DecisionRecord, LedgerEntry, sequence_prefix
from authz_ledger.record.ids import new_decision_id
from tests.support.timed_ledger import (
    T0,
    decoded_times,
    forget_time_index,
    in_range,
    index_keys,
    open_store,
    timed_bodies,
    write,
)

SECOND = 10**9
# A clock that steps back an hour at entry 40 and forward again at 70; ties; one entry at time 0.
STEPPING = [T0 + i * SECOND for i in range(40)] + [T0 - 3600 * SECOND + i for i in range(30)]
STEPPING += [T0 + (40 + i) * SECOND for i in range(60)] + [T0 + 50 * SECOND] * 5 + [0]


def brute_force(times: list[int], flt: EntryFilter, start: int = 0, end: int | None = None) -> list[int]:
    """Indexes of the entries [start, end) whose time is in the filter's bounds (the filter has only those)."""
    stop = len(times) if end is None else end
    return [i for i in range(start, stop) if in_range(times[i], flt.since_unix_nano, flt.until_unix_nano)]


@pytest.fixture
def stepping(tmp_path: Path) -> Path:
    """A closed ledger of the STEPPING times, written in random batches."""
    store = open_store(tmp_path / "ledger")
    write(store, timed_bodies(STEPPING))
    store.close()
    return tmp_path / "ledger"


# --- written with the entries ----------------------------------------------------------------------------------


def test_each_entry_gets_one_key_of_its_decoded_time_and_the_marker_covers_the_ledger(stepping: Path) -> None:
    store = open_store(stepping)
    try:
        assert index_keys(store) == sorted((t, seq) for seq, t in enumerate(decoded_times(store)))
        assert decoded_times(store) == STEPPING
        assert store.time_index_size() == store.head().size == len(STEPPING)
    finally:
        store.close()


def test_a_batch_that_is_refused_leaves_no_key(stepping: Path) -> None:
    store = open_store(stepping)
    try:
        before = index_keys(store)
        stale = Head(3, b"\x00" * 32, 1, b"\x00" * 32)  # not the stored head: append_batch must write nothing
        record = BatchRecord(1, b"\x00" * 32, 3, 1, b"\x00" * 32, 4, b"\x00" * 32, 0)
        with pytest.raises(LedgerWriteError, match="stored head"):
            store.append_batch(timed_bodies([T0]), [b"\x00" * 32], [b"\x01" * 16], [], record, stale, stale)
        assert index_keys(store) == before
        assert store.time_index_size() == len(STEPPING)
    finally:
        store.close()


def test_an_entry_that_does_not_decode_is_keyed_as_unknown_and_fails_closed_like_the_scan(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ledger")
    try:
        times = [T0 + i * SECOND for i in range(50)]
        bodies = timed_bodies(times)
        bodies[30] = b"\x07not protobuf"  # wire type 7 does not exist
        write(store, bodies)
        assert (time_index.UNKNOWN_TIME, 30) in index_keys(store)
        reader = LedgerReader(store, chunk=8)
        flt = EntryFilter(since_unix_nano=T0 + 40 * SECOND, until_unix_nano=T0 + 45 * SECOND)
        with pytest.raises(LedgerCorruptError) as by_index:
            list(reader.list_entries(filter=flt))
        with pytest.raises(LedgerCorruptError) as by_scan:
            list(LedgerReader(store, chunk=1000).list_entries(filter=flt))  # a range no longer than a chunk: scan
        assert by_index.value.seq == by_scan.value.seq == 30
        # Entries before it are served first, as the scan serves them.
        before = EntryFilter(since_unix_nano=T0, until_unix_nano=T0 + 20 * SECOND)
        assert [e.index for e in reader.list_entries(filter=before, end=30)] == list(range(20))
    finally:
        store.close()


# --- range queries -------------------------------------------------------------------------------------------

QUERIES = {
    "an hour the clock stepped back into": (T0 - 3600 * SECOND, T0 - 3600 * SECOND + 30, 0, None),
    "a range holding entries before and after the step": (T0 + 35 * SECOND, T0 + 45 * SECOND, 0, None),
    "ties at one instant": (T0 + 50 * SECOND, T0 + 50 * SECOND + 1, 0, None),
    "only a lower bound": (T0 + 90 * SECOND, 0, 0, None),
    "only an upper bound, which holds time 0": (0, T0 - 3600 * SECOND + 5, 0, None),
    "a seq range inside the ledger": (T0 - 3600 * SECOND, T0 + 60 * SECOND, 20, 120),
    "nothing in range": (T0 + 10_000 * SECOND, T0 + 20_000 * SECOND, 0, None),
}


@pytest.mark.parametrize("listed_max", [1 << 16, 3], ids=["seqs listed", "a span scanned"])
@pytest.mark.parametrize(("since", "until", "start", "end"), QUERIES.values(), ids=QUERIES.keys())
def test_a_time_range_lists_what_a_brute_force_filter_finds(
    stepping: Path, listed_max: int, since: int, until: int, start: int, end: int | None
) -> None:
    store = open_store(stepping, readonly=True)
    try:
        flt = EntryFilter(since_unix_nano=since, until_unix_nano=until)
        found = store.seqs_in_time_range(since, until, start, end, max_listed=listed_max)
        assert found is not None, "a covered ledger answers from its index"
        want = brute_force(STEPPING, flt, start, end)
        if found.seqs is not None:
            assert list(found.seqs) == want
        else:
            assert len(want) > listed_max and found.first == want[0] and found.last == want[-1]
        reader = LedgerReader(store, chunk=4, listed_max=listed_max)
        assert [e.index for e in reader.list_entries(start, end, filter=flt)] == want
    finally:
        store.close()


def test_more_index_keys_than_the_seq_range_holds_leave_the_answer_to_the_scan(stepping: Path) -> None:
    store = open_store(stepping, readonly=True)
    try:
        assert store.seqs_in_time_range(T0, 0, 120, 130, max_keys=10) is None
        assert store.seqs_in_time_range(T0, 0, 120, 130, max_keys=200) is not None
    finally:
        store.close()


def test_limits_and_other_conditions_count_as_in_the_scan(stepping: Path) -> None:
    store = open_store(stepping, readonly=True)
    try:
        flt = EntryFilter(since_unix_nano=T0 - 3600 * SECOND, until_unix_nano=T0 + 60 * SECOND, outcome=OUTCOME_ALLOW)
        scan = LedgerReader(store, chunk=1000)
        for listed_max in (1 << 16, 5):
            reader = LedgerReader(store, chunk=4, listed_max=listed_max)
            for limit in (None, 0, 1, 7, 50):
                got = [e.raw for e in reader.list_entries(limit=limit, filter=flt)]
                assert got == [e.raw for e in scan.list_entries(limit=limit, filter=flt)]
    finally:
        store.close()


# --- ledgers older than the index ---------------------------------------------------------------------------

OLD_LEDGERS = {
    "written before the index existed": {},
    "extended by a version that did not keep it": {"indexed": 77},
    "its database dropped but its marker kept": {"keep_marker": True},
}


@pytest.mark.parametrize("how", OLD_LEDGERS.values(), ids=OLD_LEDGERS.keys())
def test_an_old_ledger_is_read_by_scanning_then_backfilled_to_the_same_index(
    stepping: Path, how: dict[str, object], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(stepping, readonly=True)
    original = index_keys(store)
    store.close()
    forget_time_index(stepping, **how)  # type: ignore[arg-type]
    flt = EntryFilter(since_unix_nano=T0 + 35 * SECOND, until_unix_nano=T0 + 45 * SECOND)

    old = open_store(stepping, readonly=True)
    try:
        assert old.time_index_size() == (how.get("indexed") or 0)
        assert old.seqs_in_time_range(flt.since_unix_nano, flt.until_unix_nano) is None
        got = [e.index for e in LedgerReader(old, chunk=4).list_entries(filter=flt)]
        assert got == brute_force(STEPPING, flt)
    finally:
        old.close()

    monkeypatch.setattr(time_index, "BACKFILL_BATCH", 16)
    with caplog.at_level(logging.INFO, logger=time_index.__name__):
        store = open_store(stepping)
    try:
        assert index_keys(store) == original
        assert store.time_index_size() == len(STEPPING)
        progress = [r.getMessage() for r in caplog.records if "entries indexed" in r.getMessage()]
        assert progress[-1].endswith(f"{len(STEPPING) - (how.get('indexed') or 0)} entries indexed")
        assert len(progress) > 1, "a large gap is filled in several transactions"
        found = store.seqs_in_time_range(flt.since_unix_nano, flt.until_unix_nano)
        assert found is not None and list(found.seqs or ()) == brute_force(STEPPING, flt)
    finally:
        store.close()


def test_a_covered_ledger_is_not_backfilled_again(stepping: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=time_index.__name__):
        open_store(stepping).close()
    assert not caplog.records


def test_entries_appended_after_a_backfill_keep_the_index_whole(stepping: Path) -> None:
    forget_time_index(stepping, indexed=10)
    store = open_store(stepping)
    try:
        more = [T0 - 7 * SECOND, T0 + 500 * SECOND, T0]
        write(store, timed_bodies(more))
        assert store.time_index_size() == len(STEPPING) + 3
        assert index_keys(store) == sorted((t, seq) for seq, t in enumerate(STEPPING + more))
    finally:
        store.close()


# --- any times, any ranges -----------------------------------------------------------------------------------

_times = st.lists(
    st.one_of(
        st.integers(min_value=T0, max_value=T0 + 40),  # dense: ties and out-of-order neighbours
        st.integers(min_value=0, max_value=2**64 - 1),  # anywhere a fixed64 reaches, 0 and its maximum included
    ),
    min_size=1,
    max_size=120,
)
_bound = st.one_of(st.just(0), st.integers(min_value=T0 - 2, max_value=T0 + 42), st.integers(0, 2**64 - 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    times=_times,
    since=_bound,
    until=_bound,
    cut=st.tuples(st.integers(0, 120), st.integers(0, 120)),
    limit=st.one_of(st.none(), st.integers(1, 10)),
    listed_max=st.sampled_from([1, 4, 1 << 16]),
    seed=st.integers(0, 1000),
)
def test_any_time_range_of_any_times_lists_what_a_brute_force_filter_finds(
    times: list[int],
    since: int,
    until: int,
    cut: tuple[int, int],
    limit: int | None,
    listed_max: int,
    seed: int,
) -> None:
    if since and until and since >= until:
        since, until = until, since + (since == until)
    start, end = sorted(min(c, len(times)) for c in cut)
    flt = EntryFilter(since_unix_nano=since, until_unix_nano=until)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "ledger")
        try:
            write(store, timed_bodies(times), seed=seed, max_batch=17)
            assert index_keys(store) == sorted((t, seq) for seq, t in enumerate(times))
            reader = LedgerReader(store, chunk=2, listed_max=listed_max)
            want = brute_force(times, flt, start, end)[:limit]
            got = list(reader.list_entries(start, end, limit, flt))
            assert [e.index for e in got] == want
            # The same bytes as the scan serves (a range no longer than a chunk is always scanned).
            scan = LedgerReader(store, chunk=1000).list_entries(start, end, limit, flt)
            assert [e.raw for e in got] == [e.raw for e in scan]
        finally:
            store.close()


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=(1 << 64) - 1),
    time_unix_nano=st.integers(min_value=0, max_value=(1 << 64) - 1),
    path=st.text(max_size=40),
)
def test_the_fast_time_read_agrees_with_the_full_decode(seq: int, time_unix_nano: int, path: str) -> None:
    """entry_time skips the decode for entries as the writer stores them; it must read what decoding reads."""
    body = DecisionRecord(
        time_unix_nano=time_unix_nano, decision_id=str(new_decision_id()), path=path, outcome=OUTCOME_ALLOW
    ).encode()
    stored = sequence_prefix(seq) + body
    assert time_index.entry_time(stored) == LedgerEntry.FromString(stored).time_unix_nano == time_unix_nano


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"\x19" + (7).to_bytes(8, "little"), 7, id="time as the first field is read"),
        pytest.param(b"\x20\x01\x19" + (9).to_bytes(8, "little"), 9, id="fields out of order take the full decode"),
        pytest.param(b"\x19\x01\x02", time_index.UNKNOWN_TIME, id="a time cut short does not decode"),
        pytest.param(b"", 0, id="an empty entry has time zero, as decoding says"),
    ],
)
def test_entries_not_shaped_as_the_writer_stores_them_read_as_decoding_reads_them(data: bytes, expected: int) -> None:
    assert time_index.entry_time(data) == expected
