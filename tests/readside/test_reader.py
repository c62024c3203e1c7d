"""LedgerReader on real LMDB ledgers: entries, filters, streaming in short transactions, proofs checked with the
RFC 9162 algorithms written independently in tests/rfc9162.py, receipts, argument errors, fail-closed reads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz_ledger.errors import (
    AuthzLedgerError,
    InvalidRequestError,
    LedgerCorruptError,
    NotFoundError,
    OutOfRangeError,
    ProofError,
)
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.store import Store
from authz_ledger.readside.reader import LedgerReader
from authz_ledger.readside.values import EntryFilter
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR
from authz_ledger.tlog import checkpoint, receipt, tree
from tests.conftest import ROOT
from tests.support import rfc9162
from tests.support.readside import T0, Ledger, build_ledger, open_ledger
from tests.support.waits import wait_until

SIZES = [1, 2, 3, 8, 100, 257, 300]
"""Checkpoints at these sizes; the ledger holds 300 entries."""


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    led = build_ledger(tmp_path_factory.mktemp("reader") / "data", SIZES)
    yield led
    led.close()


@pytest.fixture(scope="module")
def raw(ledger: Ledger) -> list[bytes]:
    return ledger.raw_entries()


@pytest.fixture(scope="module")
def reader(ledger: Ledger) -> LedgerReader:
    return LedgerReader(ledger.store, chunk=16)


# --- entries -----------------------------------------------------------------------------------------------


def test_an_entry_is_found_by_index_and_by_decision_id_with_its_stored_bytes(
    ledger: Ledger, reader: LedgerReader, raw: list[bytes]
) -> None:
    by_index = reader.get_entry(index=42)
    by_id = reader.get_entry(decision_id=ledger.decision_ids[42])
    assert by_index == by_id
    assert by_index.raw == raw[42]
    assert by_index.leaf_hash == rfc9162.leaf(raw[42])
    assert by_index.message.sequence == 42 and by_index.message.path == "/svc0/item42"


def test_a_decision_id_is_found_in_any_uuid_spelling(ledger: Ledger, reader: LedgerReader) -> None:
    assert reader.get_entry(decision_id=ledger.decision_ids[7].upper()).index == 7


def test_listing_everything_returns_every_entry_in_order(reader: LedgerReader, raw: list[bytes]) -> None:
    assert [e.raw for e in reader.list_entries()] == raw


FILTERS: dict[str, tuple[EntryFilter, Callable[[int], bool]]] = {
    "no filter matches everything": (EntryFilter(), lambda i: True),
    "a time range is inclusive below and exclusive above": (
        EntryFilter(since_unix_nano=T0 + 10 * 10**9, until_unix_nano=T0 + 20 * 10**9),
        lambda i: 10 <= i < 20,
    ),
    "only a lower time bound": (EntryFilter(since_unix_nano=T0 + 290 * 10**9), lambda i: i >= 290),
    "allow only": (EntryFilter(outcome=OUTCOME_ALLOW), lambda i: i % 3 == 0),
    "deny only": (EntryFilter(outcome=OUTCOME_DENY), lambda i: i % 3 == 1),
    "error only": (EntryFilter(outcome=OUTCOME_ERROR), lambda i: i % 3 == 2),
    "a path prefix": (EntryFilter(path_prefix="/svc1/item1"), lambda i: i % 3 == 1 and str(i).startswith("1")),
    "a source principal": (EntryFilter(principal="spiffe://example/sa/client3"), lambda i: i % 4 == 3),
    "a destination principal": (EntryFilter(principal="spiffe://example/sa/admin"), lambda i: i % 5 == 0),
    "every condition at once": (
        EntryFilter(
            since_unix_nano=T0 + 100 * 10**9,
            until_unix_nano=T0 + 200 * 10**9,
            outcome=OUTCOME_DENY,
            path_prefix="/svc1/",
            principal="spiffe://example/sa/client0",
        ),
        lambda i: 100 <= i < 200 and i % 3 == 1 and i % 4 == 0,
    ),
    "a principal nobody has matches nothing": (EntryFilter(principal="spiffe://nobody"), lambda i: False),
}


@pytest.mark.parametrize(("flt", "want"), FILTERS.values(), ids=FILTERS.keys())
def test_filters(reader: LedgerReader, flt: EntryFilter, want: Callable[[int], bool]) -> None:
    assert [e.index for e in reader.list_entries(filter=flt)] == [i for i in range(300) if want(i)]


RANGES: dict[str, tuple[dict[str, Any], list[int]]] = {
    "a start and an end": ({"start": 10, "end": 13}, [10, 11, 12]),
    "a limit counts matching entries": (
        {"start": 0, "limit": 3, "filter": EntryFilter(outcome=OUTCOME_ERROR)},
        [2, 5, 8],
    ),
    "a start at the end is empty": ({"start": 300}, []),
    "an empty range": ({"start": 5, "end": 5}, []),
    "a zero limit is empty": ({"limit": 0}, []),
    "a range across many chunks": ({"start": 1, "end": 299}, list(range(1, 299))),
}


@pytest.mark.parametrize(("kwargs", "want"), RANGES.values(), ids=RANGES.keys())
def test_ranges(reader: LedgerReader, kwargs: dict[str, Any], want: list[int]) -> None:
    assert [e.index for e in reader.list_entries(**kwargs)] == want


class CountingEnv:
    """Wraps the LMDB environment to count open read transactions and what each one reads."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.open = 0
        self.reads_per_txn: list[int] = []

    def begin(self, **kwargs: Any) -> Any:
        self.open += 1
        self.reads_per_txn.append(0)
        return CountingTxn(self.env.begin(**kwargs), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)


class CountingTxn:
    def __init__(self, txn: Any, env: CountingEnv) -> None:
        self.txn, self.env = txn, env

    def cursor(self, **kwargs: Any) -> Any:
        env = self.env
        cur = self.txn.cursor(**kwargs)

        class Cur:
            def set_key(self, k: bytes) -> bool:
                return bool(cur.set_key(k))

            def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
                for kv in cur:
                    env.reads_per_txn[-1] += 1
                    yield kv

        return Cur()

    def abort(self) -> None:
        self.env.open -= 1
        self.txn.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)


def test_a_paused_consumer_holds_no_read_transaction(ledger: Ledger) -> None:
    counting = CountingEnv(ledger.store.env)
    store = Store.__new__(Store)
    store.__dict__.update({**{k: getattr(ledger.store, k) for k in vars(ledger.store)}, "env": counting})
    reader = LedgerReader(store, chunk=16)
    entries = reader.list_entries()
    next(entries)
    assert counting.open == 0, "a suspended generator must not keep a snapshot open"
    rest = list(entries)
    assert len(rest) == 299 and counting.open == 0
    # Every transaction read at most one chunk (plus the one look past its end).
    assert max(counting.reads_per_txn) <= 17


def test_following_sees_entries_committed_after_it_started(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "data")
    try:
        led.append(5)
        reader = LedgerReader(led.store)
        stop = threading.Event()
        got: list[int] = []
        follower = reader.follow(3, EntryFilter(), led.writer.wait_for_size, lambda: not stop.is_set())

        def consume() -> None:
            for e in follower:
                got.append(e.index)
                if e.index == 9:
                    stop.set()

        t = threading.Thread(target=consume)
        t.start()
        # It has sent what was committed when it started (and nothing more can come until the next commit).
        assert wait_until(lambda: list(got), lambda seen: len(seen) >= 2, message="the follower sent nothing") == [3, 4]
        led.append(5)
        t.join(10)
        assert not t.is_alive() and got == list(range(3, 10))
    finally:
        led.close()


def test_following_from_the_end_sends_only_new_entries_and_stops_when_asked(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "data")
    try:
        led.append(5)
        active = [True]
        follower = LedgerReader(led.store).follow(
            None, EntryFilter(outcome=OUTCOME_ALLOW), led.writer.wait_for_size, lambda: active[0], poll_seconds=0.05
        )
        led.append(6)
        assert [next(follower).index, next(follower).index] == [6, 9]
        active[0] = False
        assert list(follower) == []
    finally:
        led.close()


# --- proofs, checked with the independent RFC 9162 code ------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_inclusion_proofs_verify_independently(
    reader: LedgerReader, raw: list[bytes], data: st.DataObject
) -> None:
    size = data.draw(st.integers(1, 300), label="tree size")
    index = data.draw(st.integers(0, size - 1), label="index")
    p = reader.inclusion_proof(index, size)
    assert (p.index, p.tree_size, p.entry) == (index, size, raw[index])
    assert p.root == rfc9162.mth(raw[:size])
    assert list(p.hashes) == rfc9162.path(index, raw[:size])
    assert rfc9162.verify_inclusion(index, size, rfc9162.leaf(raw[index]), p.hashes, p.root)
    assert (p.checkpoint is not None) == (size in SIZES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_consistency_proofs_verify_independently(
    reader: LedgerReader, raw: list[bytes], data: st.DataObject
) -> None:
    size2 = data.draw(st.integers(1, 300), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    p = reader.consistency_proof(size1, size2)
    assert (p.root1, p.root2) == (rfc9162.mth(raw[:size1]), rfc9162.mth(raw[:size2]))
    assert list(p.hashes) == (rfc9162.proof(size1, raw[:size2]) if size1 < size2 else [])
    assert rfc9162.verify_consistency(size1, size2, p.root1, p.root2, p.hashes)


def test_a_consistency_proof_from_the_empty_tree_is_empty(reader: LedgerReader) -> None:
    p = reader.consistency_proof(0, 100)
    assert (p.root1, p.hashes) == (tree.EMPTY_ROOT, ())


def test_sizes_left_out_mean_the_latest_checkpoint(reader: LedgerReader, raw: list[bytes]) -> None:
    assert reader.inclusion_proof(17).tree_size == 300
    p = reader.consistency_proof(8)
    assert (p.size2, p.root2) == (300, rfc9162.mth(raw))


def test_checkpoints_latest_and_by_size(ledger: Ledger, reader: LedgerReader, raw: list[bytes]) -> None:
    latest = reader.checkpoint()
    cp, _ = checkpoint.open_checkpoint(latest.note, [ledger.signer.verifier()])
    assert (latest.size, latest.root, latest.origin) == (300, rfc9162.mth(raw), ledger.signer.name)
    assert (cp.size, cp.root) == (latest.size, latest.root)
    assert reader.checkpoint(8).root == rfc9162.mth(raw[:8])


def test_the_cosigned_form_is_served_when_asked_for(tmp_path: Path) -> None:
    led = build_ledger(tmp_path / "data", [10, 20])
    try:
        cosigned = led.store.checkpoint(10)[1] + "— witness.example AAAAAAAA\n".encode()  # type: ignore[index]
        led.store.put_cosigned(10, cosigned)
        reader = LedgerReader(led.store)
        assert reader.checkpoint(10, cosigned=True).note == cosigned
        assert reader.checkpoint(10).note != cosigned
        assert reader.checkpoint(cosigned=True).size == 10, "the latest witnessed checkpoint"
        assert reader.checkpoint(20, cosigned=True).size == 20, "no cosigned form: the plain one"
        # A receipt prefers the witnessed checkpoint when it covers the entry.
        assert reader.receipt(index=3).checkpoint.note == cosigned
        assert reader.receipt(index=15).checkpoint.size == 20
    finally:
        led.close()


def test_receipts_verify_offline_for_every_entry(ledger: Ledger, reader: LedgerReader, raw: list[bytes]) -> None:
    vkeys = [ledger.signer.verifier()]
    for index in range(0, 300, 7):
        issued = reader.receipt(decision_id=ledger.decision_ids[index])
        assert issued.entry.raw == raw[index]
        cp = receipt.verify_receipt(issued.proof, raw[index], vkeys, ledger.signer.name)
        assert cp.size == 300
        parsed = receipt.parse_receipt(issued.proof)
        assert rfc9162.verify_inclusion(index, cp.size, rfc9162.leaf(raw[index]), parsed.proof, rfc9162.mth(raw))


# --- argument errors ---------------------------------------------------------------------------------------

UNKNOWN_ID = "01890a5d-ac96-774b-bcce-b302099a8057"
ERRORS: dict[str, tuple[Callable[[LedgerReader], Any], type[AuthzLedgerError], str]] = {
    "neither index nor decision id": (lambda r: r.get_entry(), InvalidRequestError, "exactly one"),
    "a negative index": (lambda r: r.get_entry(index=-1), InvalidRequestError, "non-negative"),
    "an index beyond the ledger": (
        lambda r: r.get_entry(index=300),
        NotFoundError,
        "no entry 300: the ledger holds 300",
    ),
    "an unknown decision id": (lambda r: r.get_entry(decision_id=UNKNOWN_ID), NotFoundError, "no decision with id"),
    "a decision id that is not a UUID": (lambda r: r.get_entry(decision_id="abc"), InvalidRequestError, "not a UUID"),
    "a negative start": (lambda r: r.list_entries(-1), InvalidRequestError, "start index must be non-negative"),
    "an end before the start": (lambda r: r.list_entries(10, 5), InvalidRequestError, "before start index 10"),
    "a negative limit": (lambda r: r.list_entries(limit=-1), InvalidRequestError, "limit"),
    "a start beyond the ledger": (lambda r: r.list_entries(301), OutOfRangeError, "beyond the ledger's 300 entries"),
    "a huge range": (lambda r: r.list_entries(0, 2**62), OutOfRangeError, f"end index {2**62} is beyond"),
    "an empty time range": (
        lambda r: r.list_entries(filter=EntryFilter(since_unix_nano=5, until_unix_nano=5)),
        InvalidRequestError,
        "empty time range",
    ),
    "an unknown outcome": (lambda r: r.list_entries(filter=EntryFilter(outcome=9)), InvalidRequestError, "outcome"),
    "following from beyond the end": (
        lambda r: r.follow(301, EntryFilter(), lambda s, t: s, lambda: True),
        OutOfRangeError,
        "beyond",
    ),
    "a checkpoint at a size never published": (lambda r: r.checkpoint(5), NotFoundError, "no checkpoint was published"),
    "a checkpoint at a negative size": (lambda r: r.checkpoint(-1), InvalidRequestError, "non-negative"),
    "an inclusion proof for a negative index": (lambda r: r.inclusion_proof(-1), ProofError, "non-negative"),
    "an inclusion proof for a negative size": (lambda r: r.inclusion_proof(0, -3), ProofError, "non-negative"),
    "an inclusion proof for an index outside the tree size": (
        lambda r: r.inclusion_proof(10, 10),
        ProofError,
        "leaf index 10 is not in a tree of 10 leaves",
    ),
    "an inclusion proof at a size beyond the ledger": (
        lambda r: r.inclusion_proof(10, 301),
        OutOfRangeError,
        "tree size 301 is beyond the ledger's 300 entries",
    ),
    "an inclusion proof for an index beyond the latest checkpoint": (
        lambda r: r.inclusion_proof(300),
        OutOfRangeError,
        "not covered by the latest checkpoint",
    ),
    "a consistency proof with size1 > size2": (
        lambda r: r.consistency_proof(10, 9),
        ProofError,
        "size1 10 is larger than size2 9",
    ),
    "a consistency proof from a negative size": (lambda r: r.consistency_proof(-1, 9), ProofError, "non-negative"),
    "a consistency proof to a negative size": (lambda r: r.consistency_proof(1, -9), ProofError, "non-negative"),
    "a consistency proof to a size beyond the ledger": (
        lambda r: r.consistency_proof(1, 2**40),
        OutOfRangeError,
        "beyond the ledger",
    ),
    "a consistency proof from beyond the latest checkpoint": (
        lambda r: r.consistency_proof(301),
        OutOfRangeError,
        "beyond the latest checkpoint",
    ),
    "a receipt for an unknown decision": (lambda r: r.receipt(decision_id=UNKNOWN_ID), NotFoundError, "no decision"),
}


@pytest.mark.parametrize(("call", "error", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_argument_errors(
    reader: LedgerReader, call: Callable[[LedgerReader], Any], error: type[AuthzLedgerError], message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        call(reader)


def test_an_empty_ledger_has_no_checkpoint_to_prove_against(tmp_path: Path) -> None:
    led = open_ledger(tmp_path / "data")
    try:
        reader = LedgerReader(led.store)
        assert list(reader.list_entries()) == []
        for call in (reader.checkpoint, lambda: reader.inclusion_proof(0), lambda: reader.consistency_proof(0)):
            with pytest.raises(NotFoundError, match="no checkpoint has been published yet"):
                call()
    finally:
        led.close()


def test_a_receipt_waits_for_a_checkpoint_covering_the_entry(tmp_path: Path) -> None:
    led = build_ledger(tmp_path / "data", [4])
    try:
        led.append(2)
        reader = LedgerReader(led.store)
        with pytest.raises(OutOfRangeError, match="entry 5 is not covered by a signed checkpoint yet"):
            reader.receipt(index=5)
        led.checkpoint()
        assert receipt.parse_receipt(reader.receipt(index=5).proof).index == 5
    finally:
        led.close()


# --- fail closed -------------------------------------------------------------------------------------------


def test_a_stored_checkpoint_that_disagrees_with_the_tree_is_corruption(tmp_path: Path) -> None:
    led = build_ledger(tmp_path / "data", [10])
    try:
        led.append(6)
        # A validly signed checkpoint at size 16 with a wrong root: the store lies; nothing is served from it.
        bogus = checkpoint.sign_checkpoint(checkpoint.Checkpoint(led.signer.name, 16, b"\x01" * 32), [led.signer])
        led.store.put_checkpoint(16, bogus)
        reader = LedgerReader(led.store)
        with pytest.raises(LedgerCorruptError, match="disagrees with the stored tree"):
            reader.inclusion_proof(3, 16)
        with pytest.raises(LedgerCorruptError, match="disagrees with the stored tree"):
            reader.receipt(index=3)
    finally:
        led.close()


def test_an_entry_altered_in_place_is_not_served_with_a_proof(tmp_path: Path) -> None:
    led = build_ledger(tmp_path / "data", [10])
    try:
        with led.store.env.begin(write=True, db=led.store.entries) as txn:
            key = (4).to_bytes(8, "big")
            txn.put(key, bytes(txn.get(key)) + b"\x00")
        with pytest.raises(LedgerCorruptError, match="does not hash to its stored leaf hash"):
            LedgerReader(led.store).inclusion_proof(4)
    finally:
        led.close()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path[:0] = [{root!r}, {server!r}]
    from tests.support.readside import open_ledger
    led = open_ledger(Path({data!r}), map_size=256 << 10)
    led.writer.options = type(led.writer.options)(map_max_size=64 << 20)
    for _ in range(40):
        led.append(100)
    led.checkpoint()
    print(led.store.map_size(), flush=True)
    led.close()
    """
)


def test_a_reader_in_another_process_follows_the_map_as_the_writer_grows_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    led = open_ledger(data, map_size=256 << 10)
    led.append(1)
    led.close()
    store = Store(LedgerPaths(data).store, readonly=True, map_size=256 << 10)
    try:
        reader = LedgerReader(store)
        assert reader.size() == 1
        script = WRITER_SCRIPT.format(root=str(ROOT), server=str(ROOT / "server"), data=str(data))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert int(proc.stdout) > 256 << 10, "the writer grew the map"
        assert reader.size() == 4001
        assert sum(1 for _ in reader.list_entries()) == 4001
        assert reader.inclusion_proof(4000).tree_size == 4001
    finally:
        store.close()
