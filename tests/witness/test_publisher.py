"""Publishing to C2SP witnesses over real HTTP, against a witness written from the spec (tests/spec_witness.py).

Each ledger here is wired exactly as the server wires it: ``open_for_serving``, then ``attach_witnesses`` (rollback
checks, ``on_checkpoint`` hook), then the writer starts; shutdown closes the writer (final checkpoint), then the
publisher, then the store.
"""

from __future__ import annotations

import base64
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz_ledger import keys
from authz_ledger.config import LedgerConfig, WitnessConfig
from authz_ledger.errors import RollbackError
from authz_ledger.ledger.opening import LedgerPaths, OpenLedger, open_for_serving
from authz_ledger.ledger.rollback import WITNESSED_FILE
from authz_ledger.ledger.store import Store
from authz_ledger.server import attach_witnesses
from authz_ledger.tlog import checkpoint, note, tree
from authz_ledger.tlog.cosignature import CosignatureVerifier, Cosigner, verify_cosignature
from authz_ledger.tlog.proof import consistency_proof
from authz_ledger.witness.endpoint import WitnessEndpoint
from authz_ledger.witness.publisher import WitnessPublisher
from tests.conftest import ORIGIN, free_port
from tests.support.entries import entry
from tests.support.spec_witness import SpecWitness, rfc9162_verify_consistency
from tests.support.waits import wait_until

# --- Harness ------------------------------------------------------------------------------------------------


@dataclass
class Served:
    opened: OpenLedger
    publisher: WitnessPublisher | None

    @property
    def store(self) -> Store:
        return self.opened.store

    @property
    def pub(self) -> WitnessPublisher:
        assert self.publisher is not None
        return self.publisher

    def record(self, n: int) -> None:
        for _ in range(n):
            self.opened.writer.record(*entry("check"))

    def settle(self, timeout: float = 10.0) -> int:
        """Wait until the head is checkpointed and every witness has answered it; the head size."""
        size = self.opened.writer.head.size
        publisher = self.publisher

        def checkpointed_and_cosigned() -> tuple[int, dict[str, int]]:
            latest = (self.store.checkpoint() or (0, b""))[0]
            stats = publisher.stats if publisher is not None else {}
            return latest, {name: s.cosigned_size for name, s in stats.items()}

        wait_until(
            checkpointed_and_cosigned,
            lambda seen: seen[0] == size and all(cosigned == size for cosigned in seen[1].values()),
            timeout=timeout,
            message=f"size {size} was not checkpointed and cosigned by every witness",
        )
        return size

    def stop(self) -> None:
        self.opened.writer.close()
        if self.publisher is not None:
            self.publisher.close()
        self.opened.close()


def serve(
    data_dir: Path,
    *endpoints: str,
    timeout_ms: float = 2000,
    interval_ms: float = 50,
    checkpoint_interval_ms: float = 20,
    signing_keys: tuple[str, ...] = (),
) -> Served:
    cfg = LedgerConfig(
        data_dir=str(data_dir),
        origin=ORIGIN,
        checkpoint_interval_ms=checkpoint_interval_ms,
        map_size_mb=64,
        signing_keys=list(signing_keys),
    )
    opened = open_for_serving(cfg)
    try:
        publisher = attach_witnesses(
            WitnessConfig(endpoints=list(endpoints), timeout_ms=timeout_ms, interval_ms=interval_ms), opened
        )
    except BaseException:
        opened.close()
        raise
    opened.writer.start()
    return Served(opened, publisher)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def log_vkey(data_dir: Path) -> str:
    """The ledger's key, created before the first start so witnesses can be configured with its vkey."""
    return keys.write_signing_key(LedgerPaths(data_dir).signing_key, ORIGIN).verifier_key()


MakeWitness = Callable[..., SpecWitness]


@pytest.fixture
def make_witness(log_vkey: str) -> Iterator[MakeWitness]:
    started: list[SpecWitness] = []

    def make(name: str = "witness.test/w1", logs: dict[str, list[str]] | None = None) -> SpecWitness:
        w = SpecWitness(name, {ORIGIN: [log_vkey]} if logs is None else logs)
        w.start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.stop()


def open_cosigned(store: Store, log_vkey: str, *witnesses: SpecWitness) -> tuple[int, note.Note]:
    latest = store.cosigned_checkpoint()
    assert latest is not None
    verifiers = [note.Verifier.from_vkey(log_vkey), *(CosignatureVerifier.from_vkey(w.vkey) for w in witnesses)]
    cp, opened = checkpoint.open_checkpoint(latest[1], verifiers, origin=ORIGIN)
    assert cp.size == latest[0]
    return latest[0], opened


def make_cosigner_vkey(name: str) -> str:
    return Cosigner.generate(name).vkey()


# --- The spec witness itself --------------------------------------------------------------------------------


def test_the_spec_witness_verifies_the_rfc6962_reference_consistency_proofs() -> None:
    # RFC 6962 8-leaf reference tree: PROOF(3, D[7]) and PROOF(4, D[8]) from our own store-independent hashing.
    leaves = [bytes.fromhex(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657")]
    leaves.append(bytes.fromhex("606162636465666768696a6b6c6d6e6f"))
    hashes = [tree.leaf_hash(x) for x in leaves]
    frontier = tree.Frontier()
    stored = [h for leaf in hashes for h in frontier.append(leaf)]
    for m, n in ((3, 7), (4, 8), (1, 8), (6, 8), (7, 8)):
        proof = consistency_proof(m, n, lambda indexes: [stored[i] for i in indexes])
        root1, root2 = tree.root_from_leaf_hashes(hashes[:m]), tree.root_from_leaf_hashes(hashes[:n])
        assert rfc9162_verify_consistency(m, n, root1, root2, proof)
        assert not rfc9162_verify_consistency(m, n, root2, root1, proof)
        assert not rfc9162_verify_consistency(m, n, root1, root2, proof[:-1])


def test_the_spec_witness_answers_each_status_the_spec_names(
    data_dir: Path, log_vkey: str, make_witness: MakeWitness
) -> None:
    served = serve(data_dir)  # no witness configured: we drive the spec witness by hand
    served.record(5)
    size = served.settle()
    served.stop()
    store = Store(LedgerPaths(data_dir).store, readonly=True)
    signed = (store.checkpoint(size) or (0, b""))[1]
    w = make_witness()
    stranger = make_witness("witness.test/stranger", logs={"another.test/log": [log_vkey]})
    other_key = make_witness("witness.test/other-key", logs={ORIGIN: [note.generate_signer(ORIGIN).verifier_key()]})

    def body(old: int, proof: Sequence[bytes] = ()) -> bytes:
        return f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof) + b"\n" + signed

    assert stranger.add_checkpoint(body(0)).status == 404
    assert other_key.add_checkpoint(body(0)).status == 403
    assert w.add_checkpoint(body(size + 1)).status == 400
    assert w.add_checkpoint(body(0)).status == 200
    conflict = w.add_checkpoint(body(3))
    assert (conflict.status, conflict.content_type, conflict.body) == (409, "text/x.tlog.size", b"%d\n" % size)
    w.latest[ORIGIN] = (3, tree.tree_hash(3, store.read_hashes))
    good = consistency_proof(3, size, store.read_hashes)
    bad = [good[0], bytes(32), *good[2:]]
    assert w.add_checkpoint(body(3, bad)).status == 422
    assert w.add_checkpoint(body(3, good)).status == 200
    store.close()


# --- Publishing ---------------------------------------------------------------------------------------------


def test_new_checkpoints_are_cosigned_stored_and_served_with_proofs_from_the_last_cosigned_size(
    data_dir: Path, log_vkey: str, make_witness: MakeWitness
) -> None:
    w = make_witness()
    served = serve(data_dir, w.endpoint)
    try:
        served.record(3)
        first = served.settle()
        served.record(4)
        second = served.settle()
        size, opened = open_cosigned(served.store, log_vkey, w)
        assert size == second == 7
        assert [s.name for s in opened.verified] == [ORIGIN, w.name]
        verify_cosignature(CosignatureVerifier.from_vkey(w.vkey), opened.verified[1], opened.text)
        assert w.latest[ORIGIN] == (7, served.store.head().root)
        # The start-up probe of the empty ledger is (0, 0); then every submission starts from the size the
        # witness last cosigned, with a proof the witness verified (checkpoints may come at any size between).
        assert w.requests[0] == (0, 0, 200)
        assert all(status == 200 for _, _, status in w.requests)
        assert all(old == prev for (old, _, _), (_, prev, _) in zip(w.requests[1:], w.requests, strict=False))
        assert {first, second} <= {size for _, size, _ in w.requests}
        assert served.pub.stats[w.name].published >= 2 and served.pub.failed == 0
        witnessed = (data_dir / WITNESSED_FILE).read_bytes()
        assert witnessed == (served.store.cosigned_checkpoint() or (0, b""))[1]
        assert served.store.cosigned_checkpoint(first) is not None
    finally:
        served.stop()


def test_a_witness_ahead_of_what_we_remember_answers_409_and_we_retry_from_its_size(
    data_dir: Path, log_vkey: str, make_witness: MakeWitness
) -> None:
    served = serve(data_dir)
    served.record(4)
    four = served.settle()
    served.record(5)
    nine = served.settle()
    served.stop()
    store = Store(LedgerPaths(data_dir).store, map_size=64 << 20)
    w = make_witness()
    # Someone else (a monitor relaying our checkpoints) already brought the witness to size 4.
    w.latest[ORIGIN] = (four, tree.tree_hash(four, store.read_hashes))
    signer = keys.load_signing_key(LedgerPaths(data_dir).signing_key)
    publisher = WitnessPublisher(store, [signer], ORIGIN, [WitnessEndpoint.parse(w.endpoint)], retry_interval=0.05)
    try:
        publisher.start()  # offers the latest checkpoint; we know nothing of the witness, so old is 0
        assert publisher.wait_idle(10), publisher.stats
        assert w.requests == [(0, nine, 409), (four, nine, 200)]
        assert publisher.stats[w.name].conflicts == 1
        assert publisher.published == 1 and publisher.failed == 0
        assert store.cosigned_checkpoint(nine) is not None
    finally:
        publisher.close()
        store.close()


def test_two_witnesses_cosignatures_are_merged_into_one_stored_note(
    data_dir: Path, log_vkey: str, make_witness: MakeWitness
) -> None:
    w1, w2 = make_witness("witness.test/w1"), make_witness("witness.test/w2")
    served = serve(data_dir, w1.endpoint, w2.endpoint)
    try:
        served.record(6)
        size = served.settle()
        cosigned_size, opened = open_cosigned(served.store, log_vkey, w1, w2)
        assert cosigned_size == size
        assert sorted(s.name for s in opened.verified) == sorted([ORIGIN, w1.name, w2.name])
        assert len(opened.signatures) == 3
    finally:
        served.stop()


@pytest.mark.parametrize(
    ("case", "logs", "status", "message"),
    [
        ("a witness that does not know the log", {"another.test/log": []}, 404, "does not know this log's origin"),
        ("a witness that trusts another key for the log", None, 403, "does not trust any key"),
    ],
)
def test_a_witness_that_refuses_the_log_is_a_counted_and_explained_failure(
    data_dir: Path, make_witness: MakeWitness, case: str, logs: dict[str, list[str]] | None, status: int, message: str
) -> None:
    if logs is None:
        logs = {ORIGIN: [note.generate_signer(ORIGIN).verifier_key()]}
    w = make_witness(logs=logs)
    served = serve(data_dir, w.endpoint)
    try:
        served.record(2)
        wait_until(lambda: served.pub.stats[w.name].failed, lambda failed: failed >= 2, message="fewer than 2 failures")
        stats = served.pub.stats[w.name]
        assert stats.published == 0
        assert stats.last_error is not None and f"HTTP {status}" in stats.last_error and message in stats.last_error
        assert served.store.cosigned_checkpoint() is None
    finally:
        served.stop()


def test_a_cosignature_that_does_not_verify_is_never_stored(data_dir: Path, make_witness: MakeWitness) -> None:
    w = make_witness()
    w.forge_cosignatures = True
    served = serve(data_dir, w.endpoint)
    try:
        served.record(3)
        wait_until(lambda: served.pub.failed, lambda failed: failed >= 2, message="fewer than 2 failures")
        assert "no valid cosignature" in (served.pub.stats[w.name].last_error or "")
        assert served.store.cosigned_checkpoint() is None
        assert not (data_dir / WITNESSED_FILE).exists()
    finally:
        served.stop()


def test_a_witness_holding_another_history_answers_422_and_nothing_is_stored(
    data_dir: Path, make_witness: MakeWitness
) -> None:
    served = serve(data_dir)
    served.record(6)
    served.settle()
    served.stop()
    w = make_witness()
    w.latest[ORIGIN] = (3, b"\x07" * 32)  # a fork: the witness was shown another tree at size 3
    served = serve(data_dir, w.endpoint)
    try:
        wait_until(lambda: served.pub.failed, lambda failed: failed >= 2, message="fewer than 2 failures")
        assert w.requests[0] == (6, 6, 409)  # start-up probe: the witness is at 3
        assert (3, 6, 422) in w.requests
        assert "HTTP 422" in (served.pub.stats[w.name].last_error or "")
        assert served.store.cosigned_checkpoint() is None
    finally:
        served.stop()


def test_a_witness_that_is_down_or_hangs_counts_failures_and_checks_are_unaffected(
    data_dir: Path, log_vkey: str
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/w"  # nothing listens
    hanging = socket.socket()  # listens, never answers: connect succeeds, the read times out
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    keys_ = [make_cosigner_vkey(n) for n in ("witness.test/down", "witness.test/hangs")]
    endpoints = [f"{keys_[0]} {refused}", f"{keys_[1]} http://127.0.0.1:{hanging.getsockname()[1]}/w"]
    started = time.monotonic()
    served = serve(data_dir, *endpoints, timeout_ms=1000, interval_ms=50)
    try:
        assert time.monotonic() - started < 2.5  # the start-up probe is bounded by the timeout
        slowest = 0.0
        for _ in range(200):
            t0 = time.monotonic()
            served.record(1)
            slowest = max(slowest, time.monotonic() - t0)
        # A Check that waited for a witness would take the whole 1 s timeout.
        assert slowest < 0.5, f"a Check waited {slowest:.3f} s for the ledger while witnesses were down"
        wait_until(
            lambda: {name: s.failed for name, s in served.pub.stats.items()},
            lambda failed: min(failed.values()) >= 2,
            message="fewer than 2 failures at some witness",
        )
        assert served.pub.published == 0
        stats = served.pub.stats
        assert "unreachable" in (stats["witness.test/down"].last_error or "")
        assert "unreachable" in (stats["witness.test/hangs"].last_error or "")
        assert served.store.cosigned_checkpoint() is None
    finally:
        t0 = time.monotonic()
        served.stop()
        assert time.monotonic() - t0 < 3.5, "shutdown was not bounded by the witness timeout"
        hanging.close()


def test_the_final_checkpoint_at_shutdown_is_cosigned_before_the_store_closes(
    data_dir: Path, log_vkey: str, make_witness: MakeWitness
) -> None:
    w = make_witness()
    served = serve(data_dir, w.endpoint, checkpoint_interval_ms=3_600_000)
    served.record(5)
    served.stop()  # writer.close signs the final checkpoint at 5; publisher.close gives it one bounded attempt
    assert w.latest[ORIGIN][0] == 5
    store = Store(LedgerPaths(data_dir).store, readonly=True)
    try:
        size, _ = open_cosigned(store, log_vkey, w)
        assert size == 5
    finally:
        store.close()


# --- Rollback defence ---------------------------------------------------------------------------------------


def grow(data_dir: Path, n: int, *endpoints: str) -> int:
    served = serve(data_dir, *endpoints)
    try:
        served.record(n)
        return served.settle()
    finally:
        served.stop()


def test_restoring_the_whole_data_dir_is_refused_by_a_witness_that_saw_the_larger_tree(
    tmp_path: Path, data_dir: Path, make_witness: MakeWitness
) -> None:
    w = make_witness()
    grow(data_dir, 3, w.endpoint)
    shutil.copytree(data_dir, tmp_path / "backup")
    assert grow(data_dir, 4, w.endpoint) == 7
    shutil.rmtree(data_dir)
    shutil.copytree(tmp_path / "backup", data_dir)  # store, checkpoint and witnessed files all at size 3
    # Sources (a) and (b) live in the data dir and were restored with it: without witnesses the start succeeds.
    served = serve(data_dir)
    served.stop()
    with pytest.raises(RollbackError, match=r"witness\.test/w1 .*size 7.*latest checkpoint is size 3"):
        serve(data_dir, w.endpoint)


def test_restoring_an_older_store_and_checkpoint_file_is_refused_by_the_witnessed_file(
    tmp_path: Path, data_dir: Path, make_witness: MakeWitness
) -> None:
    w = make_witness()
    paths = LedgerPaths(data_dir)
    grow(data_dir, 3, w.endpoint)
    backup = (paths.store / "data.mdb").read_bytes(), paths.checkpoint.read_bytes()
    grow(data_dir, 4, w.endpoint)
    (paths.store / "data.mdb").write_bytes(backup[0])
    paths.checkpoint.write_bytes(backup[1])
    w.stop()  # the witness cannot be asked: the witnessed file alone must refuse
    with pytest.raises(RollbackError, match=r"witnessed tree of size 7 .* holds only 3 entries"):
        serve(data_dir, w.endpoint, timeout_ms=300)
    with pytest.raises(RollbackError, match="witnessed tree of size 7"):
        serve(data_dir)  # also with the witness no longer configured


def test_a_witness_holding_another_root_at_our_size_refuses_the_start(
    data_dir: Path, make_witness: MakeWitness
) -> None:
    size = grow(data_dir, 3)
    w = make_witness()
    w.latest[ORIGIN] = (size, b"\x09" * 32)
    with pytest.raises(RollbackError, match="different tree head at size 3"):
        serve(data_dir, w.endpoint)


def test_an_emptied_ledger_with_the_same_key_is_refused_by_a_witness_that_saw_entries(
    tmp_path: Path, data_dir: Path, make_witness: MakeWitness, log_vkey: str
) -> None:
    key = tmp_path / "signing.key"
    shutil.copy(LedgerPaths(data_dir).signing_key, key)
    w = make_witness()
    served = serve(data_dir, w.endpoint, signing_keys=(str(key),))
    served.record(2)
    served.settle()
    served.stop()
    shutil.rmtree(data_dir)  # the whole data dir is gone; the key was kept elsewhere
    with pytest.raises(RollbackError, match=r"size 2 .* latest checkpoint is size 0"):
        serve(data_dir, w.endpoint, signing_keys=(str(key),))
