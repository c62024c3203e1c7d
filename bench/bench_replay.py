"""Impact analysis speed: ``authz-ledger replay`` of recorded decisions with the example policy, on one core.

Usage (from the repository root)::

    python bench/bench_replay.py [--entries 20000] [--keep DIR] [--engine in-process|processes] [--workers N]

Reuses (``--keep``) or builds a ledger exactly as bench_console.py does, then runs the replay of its first
``--entries`` decisions in this process pinned to CPU 0 (Go's threads and the evaluator processes inherit the
pinning), with the bundled example policy and the engine ``authz-ledger replay`` uses (``--engine``, default
in-process, one thread; ``processes``: 2 evaluator processes): decisions/s, and CPU 0's busy time per decision
(this process and its evaluators together, and anything else that ran there: run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "server"))
sys.path.insert(0, str(REPO / "bench"))

from bench_console import T_END, build  # noqa: E402

from authz_ledger.config import EXAMPLE_POLICY  # noqa: E402
from authz_ledger.console.query import Query  # noqa: E402
from authz_ledger.console.replay import IN_PROCESS, PROCESSES, open_engine, replay  # noqa: E402
from authz_ledger.ledger.opening import LedgerPaths  # noqa: E402
from authz_ledger.ledger.store import Store  # noqa: E402
from authz_ledger.policy.embedded.inprocess import GOGC  # noqa: E402


def cpu0_busy_seconds() -> float:
    """Busy time of CPU 0 (everything on it: this process and its evaluators), from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu0 "):
            ticks = [int(x) for x in line.split()[1:]]
            return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    raise RuntimeError("no cpu0 line in /proc/stat")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--engine", choices=(IN_PROCESS, PROCESSES), default=IN_PROCESS)
    ap.add_argument("--workers", type=int, default=0, help="threads in-process (default 1), or processes (2)")
    ap.add_argument(
        "--threads", type=int, default=0, help="evaluations in flight (default: the threads, or 8 per process)"
    )
    args = ap.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench-replay-")) / "data"
    if not (LedgerPaths(data_dir).store / "data.mdb").exists():
        build(data_dir, max(args.entries, 100_000))
    os.sched_setaffinity(0, {0})
    store = Store(LedgerPaths(data_dir).store, readonly=True)
    size = store.head().size
    # The bench ledger spreads its entries evenly over 30 days: the first N of them end at this time.
    span = 30 * 86_400 * 10**9
    q = Query(until_ns=T_END - span + span * args.entries // size)
    in_process = args.engine == IN_PROCESS
    workers = args.workers or (1 if in_process else 2)
    threads = args.threads or (workers if in_process else workers * 8)

    def overrun(error: Exception) -> None:
        print(f"bench_replay: {error}", file=sys.stderr, flush=True)
        os._exit(2)

    with open_engine(EXAMPLE_POLICY, where=args.engine, workers=workers, timeout_ms=5000, on_overrun=overrun) as engine:
        started, cpu = time.perf_counter(), cpu0_busy_seconds()
        report = replay(store, engine, q, threads=threads)
        seconds = time.perf_counter() - started
        cpu = cpu0_busy_seconds() - cpu
    store.close()
    print(
        f"replayed {report.replayed:,} decisions in {seconds:.2f} s on one core, engine {args.engine}, "
        f"{workers} {'threads' if in_process else 'evaluator processes'}, {threads} in flight, "
        f"GOGC={os.environ.get('GOGC', GOGC if in_process else '400')}: "
        f"{report.replayed / seconds:,.0f} decisions/s; CPU 0 busy {cpu / seconds:.0%}, "
        f"{cpu / report.replayed * 1e6:.0f} µs of it per decision; "
        f"{len(report.changes)} would change"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
