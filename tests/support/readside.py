"""Ledgers for the read-side tests: real writer, real LMDB, entries with varied fields, checkpoints where asked."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from authz_ledger.keys import load_or_create_signing_key
from authz_ledger.ledger.opening import LedgerPaths
from authz_ledger.ledger.queue import Pending
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import LedgerWriter
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR, DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import note
from tests.conftest import ORIGIN, make_writer

OUTCOMES = (OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR)
T0 = 1_700_000_000_000_000_000


def record(i: int) -> DecisionRecord:
    """Entry i: time T0 + i seconds, outcome allow/deny/error in turn, path /svc<i%3>/item<i>, principals."""
    outcome = OUTCOMES[i % 3]
    return DecisionRecord(
        time_unix_nano=T0 + i * 1_000_000_000,
        decision_id=str(new_decision_id()),
        method="GET" if i % 2 else "POST",
        host="api.example",
        path=f"/svc{i % 3}/item{i}",
        source_address="10.0.0.1",
        source_principal=f"spiffe://example/sa/client{i % 4}",
        destination_address="10.0.0.2",
        destination_principal="spiffe://example/sa/api" if i % 5 else "spiffe://example/sa/admin",
        outcome=outcome,
        allowed=outcome == OUTCOME_ALLOW,
        http_status=200 if outcome == OUTCOME_ALLOW else 403,
        input_json=b'{"i":%d}' % i,
        result_json=b"true" if outcome == OUTCOME_ALLOW else b"false",
    )


@dataclass
class Ledger:
    data_dir: Path
    signer: note.Signer
    store: Store
    writer: LedgerWriter
    decision_ids: list[str] = field(default_factory=list)
    shift_ns: int = 0
    """Added to every entry's time: replicas of a fleet whose decisions interleave in time."""

    def append(self, n: int, *, batch: int = 0, rng: random.Random | None = None) -> None:
        """Commit n more entries in batches (random sizes up to ``batch``, or all in one)."""
        rng = rng or random.Random(n)
        pending = []
        for _ in range(n):
            rec = record(len(self.decision_ids))
            rec.time_unix_nano += self.shift_ns
            self.decision_ids.append(rec.decision_id)
            pending.append(Pending(rec.encode(), bytes.fromhex(rec.decision_id.replace("-", "")), False))
        while pending:
            take = rng.randint(1, batch) if batch else len(pending)
            self.writer._commit(pending[:take])
            pending = pending[take:]

    def record(self, n: int) -> None:
        """Hand n more entries to the running writer thread (as Checks do)."""
        for _ in range(n):
            rec = record(len(self.decision_ids))
            rec.time_unix_nano += self.shift_ns
            self.decision_ids.append(rec.decision_id)
            self.writer.record(rec.encode(), bytes.fromhex(rec.decision_id.replace("-", "")))

    def checkpoint(self) -> None:
        self.writer._publish_checkpoint(force=True)

    def raw_entries(self) -> list[bytes]:
        return [data for _, data in self.store.iter_entries()]

    def close(self) -> None:
        self.store.close()


def open_ledger(data_dir: Path, map_size: int = 64 << 20, *, origin: str = ORIGIN) -> Ledger:
    paths = LedgerPaths(data_dir)
    signer, _ = load_or_create_signing_key(paths.signing_key, origin)
    store = Store(paths.store, map_size=map_size)
    writer = make_writer(store, signer)
    writer.checkpoint_file = paths.checkpoint
    return Ledger(data_dir, signer, store, writer)


def build_ledger(
    data_dir: Path, sizes: list[int], *, batch: int = 7, origin: str = ORIGIN, shift_ns: int = 0
) -> Ledger:
    """A ledger with a checkpoint at each of ``sizes`` (increasing); the last size is the ledger's.

    ``origin`` names its log (and signing key); ``shift_ns`` moves every entry's time (a fleet's replicas)."""
    ledger = open_ledger(data_dir, origin=origin)
    ledger.shift_ns = shift_ns
    rng = random.Random(1)
    for size in sizes:
        ledger.append(size - len(ledger.decision_ids), batch=batch, rng=rng)
        ledger.checkpoint()
    return ledger
