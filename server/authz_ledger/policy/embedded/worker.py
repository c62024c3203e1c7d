"""The evaluator process: runs in the child only, with :mod:`.go_engine`; the parent never calls into it.

``worker_main`` stays a module-level function: the ``spawn`` start method pickles the process target by its module
path and the child imports it from there.
"""

from __future__ import annotations

import resource
import signal
from multiprocessing.connection import Connection

from authz_ledger.errors import PolicyLoadError
from authz_ledger.policy.embedded.go_engine import GoEvaluator
from authz_ledger.policy.embedded.protocol import ERROR, LOAD_FAILED, READY


def worker_main(
    conn: Connection, modules: dict[str, str], data_json: str, entrypoint: str, memory_limit_mb: int
) -> None:
    """Evaluator process entry point: load, report readiness, then answer requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our pipe
    if memory_limit_mb > 0:
        # A policy that allocates without end makes Go's allocator fail: the process dies with "out of memory",
        # the parent sees EOF, answers PolicyUnavailableError and starts a replacement. The memory goes back to
        # the system with the process. (Set before Go starts: its runtime sizes its heap reservations then.)
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        evaluator = GoEvaluator(modules, data_json, entrypoint)
    except PolicyLoadError as exc:
        conn.send_bytes(LOAD_FAILED + str(exc).encode("utf-8", "replace"))
        return
    except Exception as exc:
        conn.send_bytes(LOAD_FAILED + f"cannot start OPA's engine: {exc!r}".encode("utf-8", "replace"))
        return
    conn.send_bytes(READY)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe (retired) or died
        try:
            reply = evaluator.evaluate(request)
        except Exception as exc:
            reply = ERROR + f"evaluator error: {exc!r}".encode("utf-8", "replace")
        conn.send_bytes(reply)
