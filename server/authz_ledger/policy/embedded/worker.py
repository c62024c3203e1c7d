"""The evaluator process: runs in the child only, with :mod:`.go_engine`; the parent never calls into it.

``worker_main`` stays a module-level function: the ``spawn`` start method pickles the process target by its module
path and the child imports it from there.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

from authz_ledger.errors import PolicyLoadError
from authz_ledger.policy.embedded.go_engine import GoEvaluator
from authz_ledger.policy.embedded.protocol import (
    ERROR,
    EXPIRED,
    LOAD_FAILED,
    READY,
    REPLY,
    REQUEST,
    STATE_EVALUATING,
    STATE_SINCE_NS,
)

FLUSH_AFTER_NS = 1_000_000
"""Replies wait in the worker at most this long for the rest of their batch: fast decisions go back many per
system call, a slow one on its own as soon as it is done."""


def worker_main(
    conn: Connection,
    state: Any,
    modules: dict[str, str],
    data_json: str,
    entrypoint: str,
    memory_limit_mb: int,
) -> None:
    """Evaluator process entry point: load, report readiness, then answer requests until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our socket
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
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    sock.setblocking(True)
    with contextlib.suppress(OSError):  # the parent closed the socket (retired) or died
        _serve(sock, evaluator, state)


def _serve(sock: socket.socket, evaluator: GoEvaluator, state: Any) -> None:
    buf = bytearray()
    header_size = REQUEST.size
    clock = time.monotonic_ns
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        buf += data
        out: list[bytes] = []
        pos = 0
        last_flush = clock()
        while len(buf) - pos >= header_size:
            size, rid, deadline = REQUEST.unpack_from(buf, pos)
            end = pos + header_size + size
            if end > len(buf):
                break
            now = clock()
            if now > deadline:
                reply = EXPIRED  # its caller has given up: do not spend the core on it
            else:
                payload = bytes(buf[pos + header_size : end])
                state[STATE_EVALUATING] = rid
                state[STATE_SINCE_NS] = now
                try:
                    reply = evaluator.evaluate(payload)
                except Exception as exc:
                    reply = ERROR + f"evaluator error: {exc!r}".encode("utf-8", "replace")
                state[STATE_SINCE_NS] = 0
            pos = end
            out.append(REPLY.pack(len(reply), rid))
            out.append(reply)
            if clock() - last_flush >= FLUSH_AFTER_NS:
                sock.sendall(b"".join(out))
                out.clear()
                last_flush = clock()
        del buf[:pos]
        if out:
            sock.sendall(b"".join(out))
