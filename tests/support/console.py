"""Ledgers for the console's tests: real writer, real LMDB, entries shaped like real Checks (an input document
with request headers, users, mTLS principals, outcomes, paths, policy versions, times not monotonic in seq)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from authz_ledger.console.facts import Facts, facts_of
from authz_ledger.ledger.queue import Pending
from authz_ledger.ledger.store import Store
from authz_ledger.ledger.writer import LedgerWriter
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR, DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import note
from tests.conftest import ORIGIN, make_writer

T0 = 1_790_000_000_000_000_000
USERS = ("alice", "bob", "carol", "dave", "")
PATHS = ("/api/items", "/api/items/7", "/admin/users", "/admin/users/3/roles", "/health", "/administrators", "/")
HOSTS = ("api.example.com", "Admin.Example.com")
TENANTS = ("acme", "globex")


def record(i: int, rng: random.Random, version: str) -> DecisionRecord:
    user = rng.choice(USERS)
    headers = {"x-request-id": f"req-{i}", "x-tenant": rng.choice(TENANTS)}
    if user:
        headers["x-user"] = user
    path = rng.choice(PATHS) + ("?page=2" if rng.random() < 0.2 else "")
    host = rng.choice(HOSTS)
    method = rng.choice(("GET", "POST", "DELETE"))
    document = {"attributes": {"request": {"http": {"method": method, "host": host, "path": path, "headers": headers}}}}
    outcome = rng.choice((OUTCOME_ALLOW, OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR))
    principal = "spiffe://example/sa/batch" if rng.random() < 0.1 else ""
    return DecisionRecord(
        # Times step back now and then, as handler threads stamp decisions before the writer orders them.
        time_unix_nano=T0 + i * 50_000_000 - (2_000_000_000 if rng.random() < 0.05 else 0),
        decision_id=str(new_decision_id()),
        method=method,
        host=host,
        path=path,
        source_principal=principal,
        input_json=json.dumps(document).encode(),
        policy_version=version,
        outcome=outcome,
        allowed=outcome == OUTCOME_ALLOW,
        http_status={OUTCOME_ALLOW: 200, OUTCOME_DENY: 403, OUTCOME_ERROR: 500}[outcome],
        result_json=b"true" if outcome == OUTCOME_ALLOW else b"false",
        error="engine_timeout" if outcome == OUTCOME_ERROR else "",
    )


@dataclass
class ConsoleLedger:
    store: Store
    writer: LedgerWriter
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    size: int = 0
    shift_ns: int = 0
    """Added to every entry's time: replicas of a fleet whose decisions interleave in time."""

    def append(self, n: int, *, version: str = "v1", batch: int = 500) -> None:
        pending = []
        for _ in range(n):
            rec = record(self.size, self.rng, version)
            rec.time_unix_nano += self.shift_ns
            self.size += 1
            pending.append(Pending(rec.encode(), bytes.fromhex(rec.decision_id.replace("-", "")), False))
        for start in range(0, len(pending), batch):
            assert self.writer._commit(pending[start : start + batch])

    def checkpoint(self) -> None:
        self.writer._publish_checkpoint(force=True)

    def facts(self) -> Iterator[Facts]:
        for seq, raw in self.store.iter_entries():
            yield facts_of(seq, raw)


def open_console_ledger(path: Path, signer: note.Signer) -> ConsoleLedger:
    store = Store(path, map_size=256 << 20, durable=False)
    return ConsoleLedger(store, make_writer(store, signer))


__all__ = ["ORIGIN", "T0", "ConsoleLedger", "open_console_ledger", "record"]
