"""authz-ledger exactly as ``authz-ledger serve`` runs it, plus benchmark hooks.

Usage: ``python bench/timed_server.py serve --addr ... --data-dir ... [--set key=value]...`` (the CLI's own
arguments). Needs ``server`` on PYTHONPATH. Everything is the product's code path -- config, gRPC server,
health, reflection, Check handler, input document, redaction, result mapping, engine, ledger -- except:

* ``AUTHZ_BENCH_STUB_ENGINE=1`` replaces ``server.build_engine`` with a zero-cost engine answering the example
  policy's decision, so the server's CPU per Check is authz-ledger's own cost with policy evaluation (and the
  engine's client side) excluded entirely.
* ``AUTHZ_BENCH_INPROCESS_ENGINE=1`` evaluates with OPA's Go engine inside the server process, one evaluation at
  a time (``policy.embedded.inprocess``, the replay's engine; a runaway evaluation ends the process): an ablation
  showing what the evaluator processes' hand-off costs, not a configuration ``serve`` offers. ``=gil`` keeps the
  interpreter lock held while Go evaluates.
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


def _inprocess_engine(cfg: Config) -> PolicyEngine:
    from authz_ledger.policy.embedded.inprocess import InProcessEngine

    def overrun(error: Exception) -> None:
        print(f"in-process ablation: {error}", file=sys.stderr, flush=True)
        os._exit(70)

    engine = InProcessEngine(
        cfg.policy.source, cfg.policy.path, on_overrun=overrun, threads=1, timeout=cfg.policy.timeout_ms / 1000
    )
    if os.environ.get("AUTHZ_BENCH_INPROCESS_ENGINE") == "gil":
        _keep_gil(engine)
    return engine


def _keep_gil(engine: Any) -> None:
    """The same library's OpaEvalDocument called through ctypes.PyDLL: the interpreter lock stays held while Go
    evaluates, so no other Python thread runs (and none has to hand the lock back) meanwhile."""
    import ctypes

    from opa_bindings import _native

    evaluator = engine._evaluator
    held = ctypes.PyDLL(str(_native._LIB_PATH)).OpaEvalDocument
    held.restype = ctypes.c_void_p
    held.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]

    class Library:
        def __getattr__(self, name: str) -> Any:
            return getattr(lib, name)

    lib = evaluator._lib
    library = Library()
    library.OpaEvalDocument = held  # type: ignore[attr-defined]
    evaluator._lib = library


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
    if os.environ.get("AUTHZ_BENCH_INPROCESS_ENGINE") in ("1", "gil"):
        server.build_engine = _inprocess_engine
    if times := os.environ.get("AUTHZ_BENCH_HANDLER_TIMES"):
        _time_handler(Path(times))
    sys.exit(cli.main(sys.argv[1:]))
