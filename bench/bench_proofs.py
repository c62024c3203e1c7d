"""Proof latency and receipts/s on a 1M-entry ledger, through ``authz_ledger.readside.reader.LedgerReader``.

Usage (from the repository root): ``python bench/bench_proofs.py [--entries 1000000] [--samples 20000]
[--keep DIR]``

1. Builds a ledger of ``--entries`` entries with the real writer (``LedgerWriter``, durable Store, async
   durability, queue pre-filled, batches of 512, one signed checkpoint at the end), or reuses ``--keep DIR`` if
   it already holds one of that size.
2. Inclusion proofs at uniformly random indexes against the latest checkpoint's size, and consistency proofs
   between uniformly random size pairs (1 <= size1 < size2 <= size): p50 / p99 / max of the wall-clock time of
   one ``LedgerReader`` call, which includes its read transaction, the O(log n) stored-hash reads, the roots,
   and checking the proof before returning it (fail closed). Target: every proof <= 1 ms at 1M entries.
3. Receipts (C2SP tlog-proof, by decision id: id lookup, entry, checkpoint, inclusion proof, root check,
   text): receipts/s over ``--samples`` random decisions, on one thread.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))

from authz_ledger.ledger.queue import Pending  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions  # noqa: E402
from authz_ledger.readside.reader import LedgerReader  # noqa: E402
from authz_ledger.record.entry import OUTCOME_ALLOW, DecisionRecord  # noqa: E402
from authz_ledger.record.ids import new_decision_id  # noqa: E402
from authz_ledger.tlog import note  # noqa: E402

ORIGIN = "bench.local/proofs"
MAP_SIZE = 8 << 30


def build(path: Path, entries: int) -> None:
    store = Store(path, map_size=MAP_SIZE)
    try:
        have = store.head().size
        if have == entries and store.checkpoint() is not None:
            print(f"reusing the {entries}-entry ledger at {path}")
            return
        if have:
            sys.exit(f"{path} holds {have} entries, not {entries}: use another --keep directory")
        signer = note.generate_signer(ORIGIN)
        writer = LedgerWriter(
            store,
            [signer],
            ORIGIN,
            WriterOptions(
                durability=Durability.ASYNC,
                queue_size=entries + 1,
                batch_max_entries=512,
                checkpoint_interval_s=3600,
                map_max_size=MAP_SIZE,
            ),
        )
        started = time.perf_counter()
        for i in range(entries):
            did = new_decision_id()
            rec = DecisionRecord(
                time_unix_nano=time.time_ns(),
                decision_id=str(did),
                method="GET",
                host="api.example",
                path=f"/items/{i}",
                input_json=b'{"attributes":{"request":{"http":{"method":"GET"}}}}',
                result_json=b"true",
                outcome=OUTCOME_ALLOW,
                allowed=True,
                http_status=200,
            )
            writer._queue.put(Pending(rec.encode(), did.bytes, wait=False), 0, force=True)
        writer.start()
        writer.close(timeout=3600)
        print(f"built {entries} entries in {time.perf_counter() - started:.1f} s at {path}")
    finally:
        store.close()


def percentiles(samples: list[float]) -> str:
    s = sorted(samples)
    p50 = statistics.median(s)
    p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
    return f"p50 {p50 * 1e6:7.1f} us   p99 {p99 * 1e6:7.1f} us   max {s[-1] * 1e6:7.1f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--keep", metavar="DIR", help="build the ledger here (and reuse it next time)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-proofs-") as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "ledger"
        build(path, args.entries)
        store = Store(path, readonly=True, map_size=MAP_SIZE)
        try:
            run(LedgerReader(store), args.samples)
        finally:
            store.close()


def run(reader: LedgerReader, samples: int) -> None:
    rng = random.Random(1)
    size = reader.checkpoint().size
    print(f"ledger: {size} entries; {samples} samples each; pid {os.getpid()}")
    for _ in range(1000):  # warm the page cache and the code paths
        reader.inclusion_proof(rng.randrange(size))

    times = []
    for _ in range(samples):
        index = rng.randrange(size)
        t = time.perf_counter()
        reader.inclusion_proof(index)
        times.append(time.perf_counter() - t)
    print(f"inclusion proof   {percentiles(times)}")

    times = []
    for _ in range(samples):
        size2 = rng.randint(2, size)
        size1 = rng.randint(1, size2 - 1)
        t = time.perf_counter()
        reader.consistency_proof(size1, size2)
        times.append(time.perf_counter() - t)
    print(f"consistency proof {percentiles(times)}")

    ids = [e.message.decision_id for e in reader.list_entries(rng.randrange(size - 10_000), limit=10_000)]
    picks = [rng.choice(ids) for _ in range(samples)]
    t = time.perf_counter()
    for did in picks:
        reader.receipt(decision_id=did)
    elapsed = time.perf_counter() - t
    print(f"receipts          {samples / elapsed:9.0f} /s  ({elapsed / samples * 1e6:.1f} us each, one thread)")


if __name__ == "__main__":
    main()
