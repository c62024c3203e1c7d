"""Lookups on a large ledger: by decision id and by time range, through the indexes and by a full scan.

Usage (from the repository root)::

    python bench/bench_lookups.py [--size 1000000] [--keep DIR] [--repeat 5]

Builds (or, with ``--keep DIR``, reuses) a data directory of ``--size`` real entries exactly as
bench_startup_verify.py does (the writer's commit path, batches of 512, entries of 0.9-1.5 KB stamped with the
wall clock while building), then measures what ``show --decision-id`` and ``list --since/--until`` do, through
``readside.reader.LedgerReader``:

1. by decision id: ``get_entry(decision_id=...)`` for 1,000 ids drawn at random from the ``ids`` index (each one
   the index read, the entry read, and the check that the entry records that decision);
2. by time range: ``list_entries`` with a time filter for windows of 1 ms, 100 ms and 1 s around the middle of
   the ledger's time span, through the ``times`` index;
3. the same queries as a reader without the indexes must answer them: a scan of every entry (the time index
   disabled on the open store; for a decision id, the scan that stops at the entry found, at the middle).

Prints the median of ``--repeat`` runs per query, the entries returned, and the ratio scan / index.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from bench_startup_verify import build, built_size  # noqa: E402

from authz_ledger.ledger.opening import LedgerPaths  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.readside.reader import LedgerReader  # noqa: E402
from authz_ledger.readside.values import EntryFilter  # noqa: E402
from authz_ledger.record import entry  # noqa: E402

IDS = 1000
WINDOWS_NS = {"1 ms": 1_000_000, "100 ms": 100_000_000, "1 s": 1_000_000_000}


def median_seconds(run: Callable[[], int], repeat: int) -> tuple[float, int]:
    times, found = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        found = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def sample_ids(store: Store, count: int, rng: random.Random) -> list[str]:
    with store.env.begin(db=store.ids) as txn:
        keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
    return [str(uuid.UUID(bytes=k)) for k in rng.sample(keys, min(count, len(keys)))]


def time_span(store: Store, size: int) -> tuple[int, int]:
    with store.env.begin(db=store.entries) as txn:
        first = entry.decode(bytes(txn.get((0).to_bytes(8, "big"))), 0).time_unix_nano
        last = entry.decode(bytes(txn.get((size - 1).to_bytes(8, "big"))), size - 1).time_unix_nano
    return first, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="build the ledger in DIR/n<size> and keep it; reuse one built there")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    scratch = None
    if args.keep:
        data_dir = args.keep / f"n{args.size}"
    else:
        scratch = tempfile.TemporaryDirectory(prefix="bench-lookups-")
        data_dir = Path(scratch.name) / "data"
    if not data_dir.exists() or built_size(data_dir) != args.size:
        print(f"building {args.size} entries in {data_dir} ...", flush=True)
        built = build(data_dir, args.size, 1024)
        print(f"  built in {built['seconds']:.1f} s, {built['disk_gb']:.2f} GB", flush=True)

    store = Store(LedgerPaths(data_dir).store, readonly=True)
    try:
        reader = LedgerReader(store)
        size = reader.size()
        rng = random.Random(1)
        ids = sample_ids(store, IDS, rng)
        print(f"ledger: {size} entries; time index covers {store.time_index_size()}")

        def by_id() -> int:
            for decision_id in ids:
                reader.get_entry(decision_id=decision_id)
            return len(ids)

        seconds, _ = median_seconds(by_id, args.repeat)
        per_id = seconds / len(ids)
        print(f"by decision id (index):   {per_id * 1e6:9.1f} µs per lookup ({len(ids)} random ids)")

        middle_id = reader.get_entry(index=size // 2).message.decision_id

        def id_scan() -> int:
            for found in reader.list_entries():
                if found.message.decision_id == middle_id:
                    return 1
            return 0

        scan_seconds, found = median_seconds(id_scan, 1)
        assert found == 1
        print(
            f"by decision id (scan to the middle entry): {scan_seconds * 1e3:9.1f} ms  ({scan_seconds / per_id:,.0f}x)"
        )

        first, last = time_span(store, size)
        centre = (first + last) // 2
        print(f"time span: {(last - first) / 1e9:.1f} s of decisions")
        for name, width in WINDOWS_NS.items():
            flt = EntryFilter(since_unix_nano=centre, until_unix_nano=centre + width)

            def query(flt: EntryFilter = flt) -> int:
                return sum(1 for _ in reader.list_entries(filter=flt))

            indexed, count = median_seconds(query, args.repeat)
            times_db = store.times
            store.times = None  # a reader of a ledger without the index: it scans
            try:
                scanned, scan_count = median_seconds(query, 1)
            finally:
                store.times = times_db
            assert scan_count == count, (scan_count, count)
            print(
                f"time window {name:>6s}: {count:7d} entries | index {indexed * 1e3:9.2f} ms | "
                f"scan {scanned * 1e3:9.1f} ms | {scanned / indexed:7.0f}x"
            )
    finally:
        store.close()
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
