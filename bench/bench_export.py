"""Export benchmarks: C2SP tlog-tiles directory and JSON Lines, on a ledger built with the real writer.

Usage (from the repository root): ``python bench/bench_export.py [--entries 1000000] [--quick]``

The process is pinned to CPU 0 ("one core"), like bench_ledger.py (``--no-pin`` to run anywhere). Steps:

1. Build a ledger of ``--entries`` ~600-byte entries (the writer's queue is pre-filled with ``Pending`` entries,
   then the thread is started and closed, which publishes the final signed checkpoint).
2. ``export_tiles`` into an empty directory, durable (every file fsynced before the checkpoint is replaced):
   entries/s and MB/s written (tiles + bundles + checkpoint). Target: >= 200,000 entries/s.
3. The same without fsyncs (``durable=False``): the CPU-bound figure.
4. Re-running the export with nothing new (what a cron job does most of the time), then after 10,000 more
   entries (the incremental case: only the new tiles, bundles and partial tiles are written).
5. ``export_jsonl`` of the whole ledger into a new file: entries/s and MB/s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))

from authz_ledger.ledger.queue import Pending  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions  # noqa: E402
from authz_ledger.readside.export_jsonl import export_jsonl  # noqa: E402
from authz_ledger.readside.export_tiles import export_tiles  # noqa: E402
from authz_ledger.record.entry import OUTCOME_ALLOW, DecisionRecord  # noqa: E402
from authz_ledger.record.ids import new_decision_id  # noqa: E402
from authz_ledger.tlog import note  # noqa: E402

ORIGIN = "bench.local/export"
DISTINCT_BODIES = 1024
MAP_SIZE = 8 << 30
TARGET = 200_000


def entry_bodies(n: int) -> list[bytes]:
    """``n`` distinct ~600-byte entry bodies shaped like the handler's (input document, result, metadata)."""
    out = []
    for i in range(n):
        did = new_decision_id()
        document = {
            "attributes": {
                "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 53124 + i % 1000}}},
                "destination": {"address": {"socketAddress": {"address": "10.1.0.7", "portValue": 8080}}},
                "request": {
                    "http": {
                        "id": str(did.int ^ 0x5A5A),
                        "method": "GET",
                        "path": f"/api/items/{i}",
                        "host": "api.example.com",
                        "headers": {":method": "GET", "x-user": "alice", "accept": "application/json"},
                    }
                },
            },
            "parsed_path": ["api", "items", str(i)],
            "parsed_query": {},
        }
        rec = DecisionRecord(
            time_unix_nano=1_767_225_600_000_000_000 + i,
            decision_id=str(did),
            request_id=str(did.int ^ 0x5A5A),
            source_address="10.1.2.3",
            source_port=53124,
            destination_address="10.1.0.7",
            destination_port=8080,
            method="GET",
            host="api.example.com",
            path=f"/api/items/{i}",
            input_json=json.dumps(document, separators=(",", ":")).encode(),
            engine="opa",
            decision_path="envoy/authz/allow",
            policy_version="opa/1.4.2",
            result_json=b"true",
            outcome=OUTCOME_ALLOW,
            allowed=True,
            http_status=200,
            eval_ns=180_000 + i,
        )
        out.append(rec.encode())
    return out


def build(store: Store, signer: note.Signer, bodies: list[bytes], n: int) -> float:
    writer = LedgerWriter(
        store,
        [signer],
        signer.name,  # the checkpoint's origin line: the key's name, as C2SP tlog-checkpoint readers expect
        WriterOptions(durability=Durability.ASYNC, queue_size=n + 1, checkpoint_interval_s=3600),
    )
    for i in range(n):
        writer._queue.put(Pending(bodies[i % len(bodies)], new_decision_id().bytes, False), 0)
    t0 = time.perf_counter()
    writer.start()
    writer.close(timeout=3600)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--entries", type=int, default=1_000_000, help="ledger size (1M)")
    ap.add_argument("--quick", action="store_true", help="200k entries")
    ap.add_argument("--no-jsonl", action="store_true", help="skip the (slower) JSON Lines step")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to CPU 0 (e.g. when CPU 0 is busy)")
    args = ap.parse_args()
    n = 200_000 if args.quick else args.entries
    if not args.no_pin:
        os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="authz-bench-export-", dir=os.environ.get("BENCH_TMP")))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    pinned = "not pinned" if args.no_pin else "pinned to CPU 0"
    print(f"# bench_export {datetime.datetime.now().isoformat(timespec='seconds')}: {n} entries, {pinned}")
    print(f"# loadavg before: {load}; data in {work}")
    try:
        signer = note.generate_signer(ORIGIN)
        bodies = entry_bodies(DISTINCT_BODIES)
        store = Store(work / "ledger", map_size=MAP_SIZE, durable=False)
        built = build(store, signer, bodies, n)
        stored = sum(len(d) for _, d in store.iter_entries(0, 10_000)) / min(n, 10_000)
        print(f"ledger built in {built:.1f} s; entry size {stored:.0f} B on average")

        c0 = time.process_time()
        r = export_tiles(store, work / "tiles")
        cpu = time.process_time() - c0
        files = r.files_written + 1
        print(
            f"export_tiles, durable, empty directory: {r.entries_written:,} entries, {files:,} files, "
            f"{r.bytes_written / 1e6:.1f} MB in {r.seconds:.2f} s = {r.entries_per_second:,.0f} entries/s, "
            f"{r.megabytes_per_second:.1f} MB/s; target >= {TARGET:,}/s: "
            f"{'meets' if r.entries_per_second >= TARGET else 'MISSES'}; CPU {cpu / n * 1e6:.2f} µs/entry "
            f"({n / cpu:,.0f} entries per CPU-second)",
            flush=True,
        )
        c0 = time.process_time()
        r2 = export_tiles(store, work / "tiles-nosync", durable=False)
        cpu = time.process_time() - c0
        print(
            f"export_tiles, no fsync: {r2.seconds:.2f} s = {r2.entries_per_second:,.0f} entries/s, "
            f"{r2.megabytes_per_second:.1f} MB/s; CPU {cpu / n * 1e6:.2f} µs/entry",
            flush=True,
        )
        r3 = export_tiles(store, work / "tiles")
        print(
            f"re-export, nothing new: {r3.files_written} files written, {r3.files_existing:,} present, "
            f"checkpoint {'updated' if r3.checkpoint_updated else 'unchanged'}, {r3.seconds * 1000:.0f} ms"
        )
        build(store, signer, bodies, 10_000)
        r4 = export_tiles(store, work / "tiles")
        print(
            f"incremental export after 10,000 more entries: {r4.files_written} files "
            f"({r4.hash_tiles_written} hash tiles, {r4.bundles_written} bundles, {r4.entries_written:,} entries), "
            f"{r4.bytes_written / 1e6:.1f} MB in {r4.seconds * 1000:.0f} ms",
            flush=True,
        )
        if not args.no_jsonl:
            c0, t0 = time.process_time(), time.perf_counter()
            count = export_jsonl(store, work / "ledger.jsonl", stop=n)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            mb = (work / "ledger.jsonl").stat().st_size / 1e6
            print(
                f"export_jsonl: {count:,} entries, {mb:.0f} MB in {secs:.1f} s = {count / secs:,.0f} entries/s, "
                f"{mb / secs:.1f} MB/s; CPU {cpu / count * 1e6:.1f} µs/entry"
            )
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"# loadavg after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
