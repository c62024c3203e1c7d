"""Ledgers whose entries carry chosen decision times (clock steps, ties, out-of-order batches), and the same
ledgers as a version without the time index would have left them."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import lmdb

from authz_ledger.ledger import time_index
from authz_ledger.ledger.queue import Pending
from authz_ledger.ledger.store import Store
from authz_ledger.record import entry
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, DecisionRecord
from authz_ledger.record.ids import new_decision_id
from authz_ledger.tlog import note
from tests.conftest import ORIGIN, make_writer

T0 = 1_700_000_000_000_000_000


def body(i: int, time_unix_nano: int) -> tuple[bytes, bytes]:
    """Entry i at ``time_unix_nano``: (body, decision id bytes); outcomes, paths and the recorded request's
    ``x-user`` header (``a`` for even i, ``b`` for odd) vary with i."""
    decision_id = new_decision_id()
    rec = DecisionRecord(
        time_unix_nano=time_unix_nano,
        decision_id=str(decision_id),
        method="GET",
        host="api.example",
        path=f"/svc{i % 3}/item{i}",
        source_principal=f"spiffe://example/sa/client{i % 4}",
        outcome=OUTCOME_ALLOW if i % 2 else OUTCOME_DENY,
        allowed=bool(i % 2),
        http_status=200 if i % 2 else 403,
        input_json=b'{"attributes":{"request":{"http":{"headers":{"x-user":"%s"}}}},"i":%d}'
        % (b"ab"[i % 2 : i % 2 + 1], i),
    )
    return rec.encode(), decision_id.bytes


def write(store: Store, bodies: Sequence[bytes], *, seed: int = 0, max_batch: int = 40) -> None:
    """Append ``bodies`` through the real writer, in batches of random sizes (one transaction each)."""
    signer = note.generate_signer(ORIGIN)
    writer = make_writer(store, signer)
    rng = random.Random(seed)
    pending = [Pending(b, new_decision_id().bytes, False) for b in bodies]
    while pending:
        take = rng.randint(1, max_batch)
        writer._commit(pending[:take])
        pending = pending[take:]


def timed_bodies(times: Sequence[int]) -> list[bytes]:
    return [body(i, t)[0] for i, t in enumerate(times)]


def open_store(path: Path, **kwargs: object) -> Store:
    return Store(path, map_size=64 << 20, durable=False, **kwargs)  # type: ignore[arg-type]


def index_keys(store: Store) -> list[tuple[int, int]]:
    """Every (time, seq) key of the time index, in key order."""
    with store.env.begin(db=store.times) as txn:
        return [
            (int.from_bytes(k[:8], "big"), int.from_bytes(k[8:], "big")) for k in txn.cursor().iternext(values=False)
        ]


def decoded_times(store: Store) -> list[int]:
    """The time of every stored entry, by seq, decoded the way the reader decodes it."""
    return [entry.decode(data, seq).time_unix_nano for seq, data in store.iter_entries()]


def forget_time_index(path: Path, *, keep_marker: bool = False, indexed: int | None = None) -> None:
    """Make the closed ledger at ``path`` look as an older version left it.

    Default: no ``times`` database and no marker (written before the index existed). ``indexed``: the index
    covers only seqs below it (extended by a version that did not keep it). ``keep_marker``: the database is
    gone but the marker still claims it.
    """
    env = lmdb.open(str(path), max_dbs=16, subdir=True)
    try:
        with env.begin(write=True) as txn:
            times = env.open_db(b"times", txn=txn)
            meta = env.open_db(b"meta", txn=txn)
            if indexed is None:
                txn.drop(times, delete=True)
                if not keep_marker:
                    txn.delete(time_index.COVERED_KEY, db=meta)
                return
            doomed = [
                bytes(k) for k in txn.cursor(db=times).iternext(values=False) if int.from_bytes(k[8:], "big") >= indexed
            ]
            for k in doomed:
                txn.delete(k, db=times)
            txn.put(time_index.COVERED_KEY, indexed.to_bytes(8, "big"), db=meta)
    finally:
        env.close()


def in_range(t: int, since: int, until: int) -> bool:
    """The CLI's and the API's time bounds, written out: since inclusive, until exclusive, 0 = unbounded."""
    return (since == 0 or t >= since) and (until == 0 or t < until)
