"""The audit console on a large ledger: index build, list queries and the entry view, through real HTTP.

Usage (from the repository root)::

    python bench/bench_console.py [--size 1000000] [--keep DIR] [--repeat 20]

1. Builds (or, with ``--keep DIR``, reuses) a data directory of ``--size`` entries committed as the writer does
   (batches of 512): Envoy-shaped input documents of about 1 KB with an ``x-user`` header drawn from 2,000 users
   (a few very active, most rare, as real traffic is), outcomes 80 % allow / 15 % deny / 5 % error, paths with ids
   under /api, /orders, /people and /admin, three policy versions, times spread over 30 days.
2. Builds the console's index from scratch in this process (``ConsoleIndex.catch_up``): seconds, entries/s, size.
3. Starts ``authz-ledger console`` on that ledger and index (its own process) and times, from this process over
   loopback HTTP, ``--repeat`` requests of each list query (the first page, 50 rows, as the browser asks for it) and
   of the entry view (the page, then the entry bytes and the inclusion proof the page's script fetches).

Prints p50 / p95 / max in milliseconds per query, and the rows each returned.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from _harness import free_port  # noqa: E402

from authz_ledger import keys  # noqa: E402
from authz_ledger.console.index import ConsoleIndex  # noqa: E402
from authz_ledger.ledger.opening import LedgerPaths  # noqa: E402
from authz_ledger.ledger.queue import Pending  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.ledger.writer import Durability, LedgerWriter, WriterOptions  # noqa: E402
from authz_ledger.record.entry import OUTCOME_ALLOW, OUTCOME_DENY, OUTCOME_ERROR, DecisionRecord  # noqa: E402
from authz_ledger.record.ids import new_decision_id  # noqa: E402

ORIGIN = "bench.example/console"
DAYS = 30
USERS = 2000
BATCH = 512
T_END = 1_796_000_000_000_000_000  # 2026-11-30: the ledger's last decision


def user_of(rng: random.Random) -> str:
    # Zipf-like: user k is drawn with weight about 1/k, so user0 is frequent and user1999 rare.
    k = int(USERS ** rng.random()) - 1
    return f"user{k}"


def record(i: int, n: int, rng: random.Random) -> DecisionRecord:
    user = user_of(rng)
    r = rng.random()
    outcome = OUTCOME_ALLOW if r < 0.80 else OUTCOME_DENY if r < 0.95 else OUTCOME_ERROR
    kind = rng.choice(("/api/items", "/orders", "/people", "/admin/users"))
    path = f"{kind}/{rng.randrange(100_000)}"
    method = rng.choice(("GET", "GET", "GET", "POST", "DELETE"))
    headers = {
        ":authority": "shop.example",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0",
        "accept": "application/json",
        "accept-encoding": "gzip, br",
        "x-request-id": str(new_decision_id()),
        "x-user": user,
        "x-tenant": rng.choice(("acme", "globex", "initech")),
        "traceparent": f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01",
        "authorization": "hmac-sha256+bearer:" + f"{rng.getrandbits(256):064x}",
    }
    document = {
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 51234}}},
            "destination": {"address": {"socketAddress": {"address": "10.1.9.9", "portValue": 8080}}},
            "request": {"http": {"method": method, "host": "shop.example", "path": path, "headers": headers}},
        },
        "parsed_path": [s for s in path.split("/") if s],
        "parsed_query": {},
        "version": {"encoding": "protojson", "ext_authz": "v3"},
    }
    span = DAYS * 86_400 * 10**9
    return DecisionRecord(
        time_unix_nano=T_END - span + span * i // n + rng.randrange(-500_000_000, 500_000_000),
        decision_id=str(new_decision_id()),
        method=method,
        host="shop.example",
        path=path,
        input_json=json.dumps(document).encode(),
        engine="embedded",
        decision_path="envoy/authz/allow",
        policy_version=f"sha256:{'abc'[3 * i // n]}{i * 3 // n}",
        result_json=b'{"allowed":true}' if outcome == OUTCOME_ALLOW else b'{"allowed":false,"http_status":403}',
        outcome=outcome,
        allowed=outcome == OUTCOME_ALLOW,
        http_status={OUTCOME_ALLOW: 200, OUTCOME_DENY: 403, OUTCOME_ERROR: 500}[outcome],
        eval_ns=120_000,
    )


def build(data_dir: Path, n: int) -> float:
    paths = LedgerPaths(data_dir)
    data_dir.mkdir(parents=True, mode=0o700)
    signer = keys.write_signing_key(paths.signing_key, ORIGIN)
    store = Store(paths.store, map_size=max(n * 3072, 1 << 30), durable=False)
    writer = LedgerWriter(store, [signer], ORIGIN, WriterOptions(durability=Durability.SYNC, batch_max_entries=BATCH))
    rng = random.Random(1)
    started = time.perf_counter()
    while writer.head.size < n:
        batch = []
        for _ in range(min(BATCH, n - writer.head.size)):
            rec = record(writer.head.size + len(batch), n, rng)
            batch.append(Pending(rec.encode(), bytes.fromhex(rec.decision_id.replace("-", "")), False))
        if not writer._commit(batch):
            raise RuntimeError(f"commit failed: {writer.failure}")
        if writer.head.size % (BATCH * 128) == 0:
            writer._publish_checkpoint(force=True)
    writer.checkpoint_file = paths.checkpoint
    writer._publish_checkpoint(force=True)
    store.env.sync(True)
    store.close()
    return time.perf_counter() - started


def timed(url: str, repeat: int) -> tuple[list[float], bytes]:
    times, body = [], b""
    for _ in range(repeat):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            body = r.read()
        times.append((time.perf_counter() - started) * 1000)
    return times, body


def row(name: str, times: list[float], rows: str) -> None:
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"| {name} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} | {rows} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="build the ledger here once and reuse it")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    data_dir = args.keep or work / "data"
    paths = LedgerPaths(data_dir)
    if not (paths.store / "data.mdb").exists():
        print(f"building {args.size:,} entries in {data_dir} ...", flush=True)
        print(f"built in {build(data_dir, args.size):.0f} s", flush=True)
    store = Store(paths.store, readonly=True)
    size = store.head().size
    index_dir = work / "index"
    index = ConsoleIndex(index_dir, store)
    started, cpu = time.perf_counter(), time.process_time()
    index.catch_up()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    index_mb = sum(p.stat().st_blocks * 512 for p in index_dir.iterdir()) / 1e6
    ledger_mb = (paths.store / "data.mdb").stat().st_blocks * 512 / 1e6
    print(f"\nindex build: {size:,} entries in {seconds:.1f} s ({size / seconds:,.0f} entries/s, CPU {cpu:.1f} s); ")
    print(f"index {index_mb:.0f} MB on disk beside a ledger of {ledger_mb:.0f} MB\n")
    index.close()
    store.close()

    vkey = keys.load_or_create_signing_key(paths.signing_key, ORIGIN)[0].verifier_key()
    port = free_port()
    argv = [sys.executable, "-m", "authz_ledger.cli", "console", "--data-dir", str(data_dir), "--vkey", vkey]
    argv += ["--addr", f"127.0.0.1:{port}", "--index-dir", str(index_dir)]
    console = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert console.stdout is not None
        console.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        day = 86_400 * 10**9
        mid = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((T_END - 15 * day) / 1e9))
        mid_end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((T_END - 15 * day + 3_600 * 10**9) / 1e9))
        queries = [
            ("the latest page (no query)", ""),
            ("a frequent user", "user:user0"),
            ("a rare user", "user:user1500"),
            ("one outcome", "outcome:deny"),
            ("user, outcome and path", "user:user3 outcome:deny path:/admin"),
            ("status and method", "status:500 method:DELETE"),
            ("a one-hour window 15 days back", f"since:{mid} until:{mid_end}"),
            ("a window and an outcome", f"since:{mid} until:{mid_end} outcome:error"),
            ("a policy version and outcome", "version:sha256:a0 outcome:deny"),
            ("free text (a path word)", "orders"),
            ("an unindexed header, narrowed by outcome", "header:x-tenant=acme outcome:error"),
            ("an unindexed header alone", "header:x-tenant=initech"),
            ("a rare user and an outcome (the join skips)", "user:user1200 outcome:error"),
            ("nothing matches (an unknown user)", "user:nobody"),
            ("the worst case: a header value no entry has (reads its budget)", "header:x-tenant=umbrella"),
        ]
        print(f"{args.repeat} requests each, first page (50 rows), HTTP from this process:\n")
        print("| query | p50 ms | p95 ms | max ms | rows |")
        print("|---|---:|---:|---:|---|")
        for name, q in queries:
            times, body = timed(f"{base}/?q={urllib.parse.quote(q)}", args.repeat)
            rows = body.count(b'data-testid="row"')
            row(f"{name}: `{q}`" if q else name, times, str(rows))
        page_times, body = timed(f"{base}/api/search?q=user:user0&before={size // 2}", args.repeat)
        row(f"a deep page (before={size // 2}): `user:user0`", page_times, str(len(json.loads(body)["rows"])))
        for name in ("24h", "30d"):
            times, _ = timed(f"{base}/stats?range={name}", max(args.repeat // 4, 3))
            row(f"the See page, range {name} (rates, top denied, versions, checkpoints)", times, "-")
        rng = random.Random(2)
        entry_times, proof_times = [], []
        for _ in range(args.repeat):
            i = rng.randrange(size)
            t, _ = timed(f"{base}/entry/{i}", 1)
            entry_times += t
            t1, _ = timed(f"{base}/api/entry/{i}", 1)
            t2, _ = timed(f"{base}/api/proof/{i}", 1)
            proof_times.append(t1[0] + t2[0])
        row("entry view (the page)", entry_times, "1")
        row("entry bytes + inclusion proof (what the page's script fetches)", proof_times, "1")
    finally:
        console.terminate()
        console.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
