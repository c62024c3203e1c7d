"""The embedded engine alone under concurrent callers: decisions/s and CPU per decision, parent and evaluators.

    taskset -c 0 python bench/bench_engine_load.py [--threads 1 16 64] [--workers 2] [--seconds 6]

The policy is ``allow := true`` and the input the Check path's 1,137-byte document (``_workload.py``), so the
numbers are the engine's hand-offs (writing a request, the evaluator's loop, waking the caller) on top of Go's
own evaluation. Run pinned to one core to compare with ``bench_check.py --one-core``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "server"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _workload
import orjson
from bench_check import ALLOW_TRUE_REGO, CLK_TCK, proc_cpu_ticks

from authz_ledger.check.input.document import build_input
from authz_ledger.policy.embedded import EmbeddedEngine


def cpu_seconds(pid: int) -> float:
    return proc_cpu_ticks(pid) / CLK_TCK


def measure(engine: EmbeddedEngine, body: bytes, threads: int, seconds: float) -> None:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def run(i: int) -> None:
        while time.monotonic() < stop:
            engine.evaluate(body)
            counts[i] += 1

    pids = engine.worker_pids()
    parent0, workers0 = os.times(), sum(cpu_seconds(p) for p in pids)
    callers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    parent1, workers1 = os.times(), sum(cpu_seconds(p) for p in pids)
    n = sum(counts)
    parent = parent1.user + parent1.system - parent0.user - parent0.system
    print(
        f"{threads} callers: {n / seconds:.0f} decisions/s; CPU per decision: parent {1e6 * parent / n:.0f} µs, "
        f"evaluators {1e6 * (workers1 - workers0) / n:.0f} µs",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "policy.rego").write_text(ALLOW_TRUE_REGO)
        body = orjson.dumps(build_input(_workload.check_request()))
        with EmbeddedEngine(tmp, workers=args.workers, timeout=1.0) as engine:
            for _ in range(200):
                engine.evaluate(body)
            for threads in args.threads:
                measure(engine, body, threads, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
