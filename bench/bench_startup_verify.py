"""Start-up verification time: what ``serve`` spends checking a large ledger before it answers a Check.

Usage (from the repository root)::

    python bench/bench_startup_verify.py [--sizes 1000000,10000000] [--keep DIR] [--checkpoint-every 1024]

For each size N:

1. Build a data directory of N entries with the real writer's commit path (``LedgerWriter._commit`` in batches of
   512, as the writer thread commits them): each entry is a real ``LedgerEntry`` encoded by
   ``DecisionRecord.encode()`` (900-1550 B: input document built by ``check.input`` from a few CheckRequest
   templates, redacted, with the policy result), under a fresh UUIDv7 from ``record.ids.new_decision_id`` that the
   entry carries too. Item id, request id and time differ per entry. A signed checkpoint is published every
   ``--checkpoint-every`` entries (the default 1024 is what a writer at ~1000 Checks/s with the 1 s
   ``checkpoint_interval`` stores) and at the end, with the ``checkpoint`` file, as a clean shutdown leaves it.
   The store is opened non-durable while building (no fsync per batch) and synced once at the end.
2. Each measurement runs in a fresh process (a start-up), so its peak RSS is its own:

   a. ``verify_ledger`` in full: the default start-up check (ledger/trust.py);
   b. ``verify_store(..., check_ids=False)``: the same sweep without the decision-id index check;
   c. ``verify_ledger(..., unsafe_tail_only=True)``: ``ledger.unsafe_verify_tail_only = true``;
   d. ``open_for_serving`` with a LedgerConfig on the data directory: keys, store, full verification, writer;
   e. (a) again after dropping this ledger's pages from the page cache (``posix_fadvise(DONTNEED)`` on
      data.mdb only): a start-up on a node that has not read the volume yet.

Printed per measurement: seconds (wall and CPU), entries verified per second, µs per ledger entry, major page
faults, peak RSS (``ru_maxrss``) and, at the end of the run, the anonymous and file-backed parts of RSS (LMDB
maps the file, so pages it read count as file-backed RSS). Ledgers are deleted at the end unless ``--keep DIR``
is given; with it a ledger already built there (same size) is reused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from _workload import check_request, loadavg  # noqa: E402

from authz_ledger import keys  # noqa: E402
from authz_ledger.check import input as input_document  # noqa: E402
from authz_ledger.check.handler import _compact_json, _describe_request  # noqa: E402
from authz_ledger.config import LedgerConfig  # noqa: E402
from authz_ledger.ledger.opening import LedgerPaths, open_for_serving  # noqa: E402
from authz_ledger.ledger.queue import Pending  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.trust import Trust, verify_ledger  # noqa: E402
from authz_ledger.ledger.verify import VerifyReport, verify_store  # noqa: E402
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions  # noqa: E402
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, DecisionRecord  # noqa: E402
from authz_ledger.record.ids import new_decision_id  # noqa: E402
from authz_ledger.record.redact import RedactionRules, Redactor  # noqa: E402
from authz_ledger.tlog import note  # noqa: E402

ORIGIN = "bench.local/startup-verify"
BATCH = 512
ITEM = "ITEMID"
REQUEST_ID = "REQUESTID"
MODES = {
    "full": "a. verify_ledger, full (default start-up)",
    "no-ids": "b. verify_store, check_ids=False",
    "tail": "c. verify_ledger, unsafe_tail_only",
    "open": "d. open_for_serving (keys, store, full verify, writer)",
    "full-cold": "e. (a) with data.mdb dropped from the page cache",
}


@dataclass
class Template:
    """One kind of decision: a record whose item id and request id are placeholders, replaced per entry."""

    record: DecisionRecord
    path: str
    input_json: bytes
    request_id: str


def _template(
    redactor: Redactor, method: str, path: str, headers: dict[str, str | None], body: str, allowed: bool, result: bytes
) -> Template:
    """``headers``: added to (or, with None, removed from) ``_workload``'s request."""
    req = check_request()
    http = req.attributes.request.http
    http.method, http.path, http.id = method, path, REQUEST_ID
    http.headers.update({":method": method, ":path": path, "x-request-id": REQUEST_ID})
    for name, value in headers.items():
        if value is None:
            del http.headers[name]
        else:
            http.headers[name] = value
    if body:
        http.body, http.size = body, len(body)
    document = input_document.build_input(req)
    record = _describe_request(req, "", redactor)
    record.input_json = _compact_json(redactor.redact_input(document))
    record.engine, record.decision_path, record.policy_version = "embedded", "envoy/authz/allow", "bundle-2026.12.1"
    record.result_json = result
    record.outcome, record.allowed = (OUTCOME_ALLOW, True) if allowed else (OUTCOME_DENY, False)
    record.http_status = 200 if allowed else 403
    record.eval_ns = 180_000
    record.traceparent = http.headers.get("traceparent", "")
    return Template(record, record.path, record.input_json, record.request_id)


def templates() -> list[Template]:
    """Four decisions of different shapes and sizes: 900 to 1550 bytes encoded, 1.3 KB on average."""
    redactor = Redactor(RedactionRules(), b"r" * 32)
    allow = b'{"allowed":true,"headers":{"x-authz-user":"alice"},"dynamic_metadata":{"user":"alice","roles":["admin"]}}'
    deny = b'{"allowed":false,"http_status":403,"body":"forbidden: alice may not delete users"}'
    bare = ("user-agent", "accept-encoding", "authorization", "accept", "traceparent", "x-forwarded-proto")
    probe: dict[str, str | None] = dict.fromkeys(bare)
    lean: dict[str, str | None] = dict.fromkeys(("user-agent", "accept-encoding"))
    order: dict[str, str | None] = {
        **lean,
        "content-type": "application/json",
        "x-tenant": "acme-eu-west",
    }
    order_body = '{"sku":"A-1042","quantity":2,"ship_to":{"country":"DE","postcode":"10115"},"gift":false}'
    return [
        _template(redactor, "GET", f"/api/items/{ITEM}?page=2&sort=name", {"accept-encoding": None}, "", True, allow),
        _template(redactor, "GET", f"/healthz/{ITEM}", probe, "", True, b"true"),
        _template(redactor, "POST", f"/api/orders/{ITEM}", order, order_body, True, allow),
        _template(redactor, "DELETE", f"/admin/users/{ITEM}", lean, "", False, deny),
    ]


class Entries:
    """Entry bodies and their decision ids, one per call, varied from the templates."""

    def __init__(self) -> None:
        self.templates = templates()
        self.count = 0

    def next(self) -> Pending:
        i = self.count
        self.count += 1
        t = self.templates[i % len(self.templates)]
        did = new_decision_id()
        item = str(i * 7919 % 1_000_003)
        request_id = str(did.int >> 64 ^ 0x5A5A5A5A)
        rec = t.record
        rec.decision_id = str(did)
        rec.time_unix_nano = time.time_ns()
        rec.path = t.path.replace(ITEM, item)
        rec.request_id = t.request_id.replace(REQUEST_ID, request_id)
        rec.input_json = t.input_json.replace(ITEM.encode(), item.encode()).replace(
            REQUEST_ID.encode(), request_id.encode()
        )
        return Pending(rec.encode(), did.bytes, False)


def build(data_dir: Path, n: int, checkpoint_every: int) -> dict[str, float]:
    """A data directory (ledger/, keys/signing.key, checkpoint) of ``n`` entries, committed as the writer does."""
    paths = LedgerPaths(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    signer = keys.write_signing_key(paths.signing_key, ORIGIN)  # note.generate_signer, saved where serve looks
    store = Store(paths.store, map_size=max(n * 2048, 1 << 30), durable=False)
    # SYNC options only so that a failed commit returns False instead of retrying (no Pending waits here);
    # no checkpoint file until the last checkpoint: each write of it is two fsyncs.
    writer = LedgerWriter(store, [signer], ORIGIN, WriterOptions(durability=Durability.SYNC, batch_max_entries=BATCH))
    entries = Entries()
    started, cpu = time.perf_counter(), time.process_time()
    body_bytes = 0
    last_checkpoint = 0
    while writer.head.size < n:
        batch = [entries.next() for _ in range(min(BATCH, n - writer.head.size))]
        body_bytes += sum(len(p.body) for p in batch)
        if not writer._commit(batch):
            raise RuntimeError(f"commit failed at size {writer.head.size}: {writer.failure}")
        if checkpoint_every and writer.head.size - last_checkpoint >= checkpoint_every:
            writer._publish_checkpoint(force=True)
            last_checkpoint = writer.head.size
    writer.checkpoint_file = paths.checkpoint
    writer._publish_checkpoint(force=True)  # what close() publishes at a clean shutdown
    store.env.sync(True)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    checkpoints = sum(1 for _ in store.iter_checkpoints())
    store.close()
    mdb = paths.store / "data.mdb"
    return {
        "seconds": seconds,
        "cpu": cpu,
        "mean_body": body_bytes / n,
        "disk_gb": mdb.stat().st_blocks * 512 / 1e9,
        "checkpoints": checkpoints,
    }


def built_size(data_dir: Path) -> int:
    """Entries of a complete ledger built earlier in ``data_dir`` (0 when there is none)."""
    paths = LedgerPaths(data_dir)
    if not (paths.store / "data.mdb").exists() or not paths.checkpoint.exists():
        return 0
    store = Store(paths.store, readonly=True)
    try:
        return store.head().size
    finally:
        store.close()


# --- one measurement, in its own process ---


def _rss_kb() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            out[name] = int(value.split()[0])
    return out


def _drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(mode: str, data_dir: Path) -> dict[str, Any]:
    paths = LedgerPaths(data_dir)
    mdb = paths.store / "data.mdb"
    if mode == "full-cold":
        _drop_from_page_cache(mdb)
    map_size = mdb.stat().st_size + (1 << 30)
    signer = keys.load_signing_key(paths.signing_key)
    verifiers = [note.Verifier.from_vkey(signer.verifier_key())]
    before = resource.getrusage(resource.RUSAGE_SELF)
    rss: dict[str, int] = {}
    if mode == "open":
        cfg = LedgerConfig(data_dir=str(data_dir), origin=ORIGIN, map_size_mb=map_size >> 20)
        started = time.perf_counter()
        opened = open_for_serving(cfg)
        seconds = time.perf_counter() - started
        report: VerifyReport = opened.recovery
        rss = _rss_kb()
        opened.close()
    else:
        store = Store(paths.store, map_size=map_size)
        trust = Trust(verifiers, ORIGIN, paths.checkpoint)
        started = time.perf_counter()
        if mode == "no-ids":
            report = verify_store(store, verifiers, origin=ORIGIN, check_ids=False)
        else:
            report = verify_ledger(store, trust, unsafe_tail_only=mode == "tail")
        seconds = time.perf_counter() - started
        rss = _rss_kb()
        store.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "verified": report.entries,
        "size": report.size,
        "checkpoints": report.checkpoints,
        "major_faults": after.ru_majflt - before.ru_majflt,
        "peak_rss_mb": after.ru_maxrss / 1024,
        "rss_anon_mb": rss.get("RssAnon", 0) / 1024,
        "rss_file_mb": rss.get("RssFile", 0) / 1024,
    }


def run_measurement(mode: str, data_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", mode, "--data-dir", str(data_dir)]
    load = loadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {mode} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def report_size(n: int, data_dir: Path, modes: list[str]) -> None:
    print(f"## {n:,} entries ({data_dir})", flush=True)
    for mode in modes:
        r = run_measurement(mode, data_dir)
        if r["size"] != n:
            raise RuntimeError(f"{mode}: verified a ledger of {r['size']} entries, expected {n}")
        rate = r["verified"] / r["seconds"] if r["seconds"] else 0.0
        print(
            f"{MODES[mode]:56s} {r['seconds']:8.2f} s wall {r['cpu']:8.2f} s CPU | "
            f"{r['verified']:>10,} entries verified, {rate:>9,.0f}/s, {r['seconds'] / n * 1e6:6.2f} µs per ledger "
            f"entry | {r['checkpoints']:,} checkpoints | major faults {r['major_faults']:,} | peak RSS "
            f"{r['peak_rss_mb']:,.0f} MB (at end: anon {r['rss_anon_mb']:,.0f}, file {r['rss_file_mb']:,.0f}) | "
            f"load {r['load']}",
            flush=True,
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="1000000,10000000", help="ledger sizes, comma separated")
    ap.add_argument("--keep", type=Path, help="build ledgers in DIR/n<size> and keep them; reuse ones built there")
    ap.add_argument("--checkpoint-every", type=int, default=1024, help="entries between signed checkpoints (0: "
                    "only the final one)")  # fmt: skip
    ap.add_argument("--modes", default=",".join(MODES), help=f"measurements, of {', '.join(MODES)}")
    ap.add_argument("--measure", choices=list(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.data_dir)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    root = args.keep or Path(tempfile.mkdtemp(prefix="authz-bench-startup-", dir=os.environ.get("BENCH_TMP")))
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    print(f"# bench_startup_verify {datetime.datetime.now().isoformat(timespec='seconds')}: sizes {sizes}, "
          f"checkpoint every {args.checkpoint_every} entries, batch {BATCH}")  # fmt: skip
    print(f"# {os.cpu_count()} CPUs, nice {os.nice(0)}, loadavg {loadavg()}; {root}: {free / 1e9:.0f} GB free")
    try:
        for n in sizes:
            data_dir = root / f"n{n}"
            if built_size(data_dir) == n:
                print(f"# reusing the ledger of {n:,} entries in {data_dir}")
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
                b = build(data_dir, n, args.checkpoint_every)
                print(
                    f"# built {n:,} entries in {b['seconds']:.0f} s ({n / b['seconds']:,.0f} entries/s, "
                    f"{b['cpu']:.0f} s CPU): mean entry {b['mean_body']:.0f} B + sequence, data.mdb "
                    f"{b['disk_gb']:.2f} GB on disk, {b['checkpoints']:,} checkpoints; loadavg {loadavg()}",
                    flush=True,
                )
            report_size(n, data_dir, modes)
            if args.keep is None:
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
