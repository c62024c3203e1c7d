"""authz-ledger exactly as ``authz-ledger serve`` runs it, plus benchmark hooks.

Usage: ``python bench/timed_server.py serve --addr ... --data-dir ... [--set key=value]...`` (the CLI's own
arguments). Needs ``server`` on PYTHONPATH. Everything is the product's code path -- config, gRPC server,
health, reflection, Check handler, input document, redaction, result mapping, engine, ledger -- except:

* ``AUTHZ_BENCH_STUB_ENGINE=1`` replaces ``server.build_engine`` with a zero-cost engine answering the example
  policy's decision, so the server's CPU per Check is authz-ledger's own cost with policy evaluation (and the
  engine's client side) excluded entirely.
* ``AUTHZ_BENCH_HANDLER_TIMES=FILE`` times every Check handler call (wall clock, from the handler's first line
  to its return: input document, engine round trip, result, ledger commit wait) and writes the nanoseconds,
  one per line in completion order, to FILE when the process exits. The gRPC layer's own queueing and
  (de)serialisation are outside this window: the client-observed latency shows them.
* ``AUTHZ_BENCH_THREADS=FILE`` writes ``native id<TAB>thread name`` of every Python thread to FILE at exit, so
  that per-thread CPU read from ``/proc/<pid>/task`` can be told apart (Python 3.11 does not name native threads).
* ``AUTHZ_BENCH_SWITCH_INTERVAL=S`` replaces ``server.SWITCH_INTERVAL_S`` (the interpreter's switch interval).
* ``AUTHZ_BENCH_GC=FILE`` writes, per generation, the cyclic garbage collector's collections and their total
  nanoseconds (``gen<TAB>count<TAB>ns``) to FILE at exit; ``AUTHZ_BENCH_NO_FREEZE=1`` skips
  ``server.freeze_startup_heap`` (for the comparison).
* ``AUTHZ_BENCH_CACHED_INPUT=1`` makes ``input_document.build_input`` return the first document it built, every
  time: an ablation (the answers stay right only for the benchmark's one request) showing what building the
  input document costs inside the running server.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _threads import name_threads
from _workload import StubEngine

from authz_ledger import server
from authz_ledger.check import handler as check
from authz_ledger.check import input as input_document
from authz_ledger.cli import main as cli
from authz_ledger.config import Config
from authz_ledger.policy import PolicyEngine


def _stub_engine(cfg: Config) -> PolicyEngine:
    return StubEngine()


def _time_handler(out: Path) -> None:
    durations: list[int] = []
    handler = check.CheckService.Check
    clock = time.perf_counter_ns

    def timed_check(self: check.CheckService, request: Any, context: Any) -> Any:
        started = clock()
        try:
            return handler(self, request, context)
        finally:
            durations.append(clock() - started)

    check.CheckService.Check = timed_check  # type: ignore[method-assign]
    atexit.register(lambda: out.write_text("".join(f"{d}\n" for d in durations)))


def _cache_input() -> None:
    build = input_document.build_input
    built: list[dict[str, Any]] = []

    def cached(request: Any, **options: Any) -> dict[str, Any]:
        if not built:
            built.append(build(request, **options))
        return built[0]

    input_document.build_input = cached  # type: ignore[assignment]


def _time_gc(out: Path) -> None:
    counts, total_ns, started = [0, 0, 0], [0, 0, 0], [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter_ns()
        else:
            counts[info["generation"]] += 1
            total_ns[info["generation"]] += time.perf_counter_ns() - started[0]

    gc.callbacks.append(on_gc)
    atexit.register(lambda: out.write_text("".join(f"{g}\t{counts[g]}\t{total_ns[g]}\n" for g in range(3))))


if __name__ == "__main__":
    if names := os.environ.get("AUTHZ_BENCH_THREADS"):
        name_threads(Path(names))
    if interval := os.environ.get("AUTHZ_BENCH_SWITCH_INTERVAL"):
        server.SWITCH_INTERVAL_S = float(interval)
    if gc_file := os.environ.get("AUTHZ_BENCH_GC"):
        _time_gc(Path(gc_file))
    if os.environ.get("AUTHZ_BENCH_NO_FREEZE") == "1":
        server.freeze_startup_heap = lambda: None
    if os.environ.get("AUTHZ_BENCH_CACHED_INPUT") == "1":
        _cache_input()
    if os.environ.get("AUTHZ_BENCH_STUB_ENGINE") == "1":
        server.build_engine = _stub_engine
    if times := os.environ.get("AUTHZ_BENCH_HANDLER_TIMES"):
        _time_handler(Path(times))
    sys.exit(cli.main(sys.argv[1:]))
