"""The parent's side of the evaluator processes: framing, one worker, the pool, and the watchdog that kills a
worker whose decision outlives its timeout. Why processes, and the invariants they keep: see the package
docstring (:mod:`authz_ledger.policy.embedded`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import heapq
import itertools
import logging
import os
import signal
import socket
import struct
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

from authz_ledger.errors import PolicyLoadError, PolicyUnavailableError
from authz_ledger.policy.bundle import PolicySource
from authz_ledger.policy.embedded.protocol import LOAD_FAILED, READY
from authz_ledger.policy.embedded.worker import worker_main

# The engine's logger, as before the package was split: its log lines keep the name operators filter on.
logger = logging.getLogger("authz_ledger.policy.embedded")

_HEADER = struct.Struct("!i")  # multiprocessing.Connection's framing, which the worker side uses
_LONG_HEADER = struct.Struct("!iQ")
_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)
try:
    # A ctypes.PyDLL call keeps the GIL. A send that only copies into the socket buffer takes microseconds;
    # releasing the GIL around it (as socket.send does) would hand it to any busy thread and cost a whole
    # switch interval (5 ms) to win it back.
    _libc_send: Any = ctypes.PyDLL(None, use_errno=True).send
    _libc_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    _libc_send.restype = ctypes.c_ssize_t
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc: plain sendall
    _libc_send = None


def frame_message(payload: bytes) -> bytes:
    """``payload`` framed as ``Connection.send_bytes`` frames it, for the worker's ``recv_bytes``."""
    if len(payload) < 0x7FFFFFFF:
        return _HEADER.pack(len(payload)) + payload
    return _LONG_HEADER.pack(-1, len(payload)) + payload


class Worker:
    """One evaluator process and the parent's end of its socket pair.

    The parent does its own framed I/O on a blocking socket (a dup of the Connection's descriptor) so that a
    decision releases the GIL exactly once, while it waits for the reply. With ``Connection.poll`` +
    ``recv_bytes`` it released it four times, and each time a busy Python thread kept it for up to the 5 ms
    switch interval: next to a spinning thread that measured 168 decisions/s instead of ~350.
    """

    __slots__ = ("_fd", "conn", "pid", "process", "sock")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.pid = process.pid or 0
        self.sock = socket.socket(fileno=os.dup(conn.fileno()))
        self.sock.setblocking(True)
        self._fd = self.sock.fileno()

    def send(self, frame: bytes) -> None:
        sent = 0
        if _libc_send is not None:
            sent = _libc_send(self._fd, frame, len(frame), _SEND_FLAGS)
            if sent == len(frame):
                return
            if sent < 0:
                err = ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    raise OSError(err, os.strerror(err))
                sent = 0
        self.sock.sendall(frame[sent:])  # a large input filled the socket buffer: block for the rest

    def receive(self) -> bytes | None:
        """One reply, or None on EOF (the worker died or was killed by the watchdog)."""
        buf = self.sock.recv(65536)
        while len(buf) < _HEADER.size:
            if not buf:
                return None
            more = self.sock.recv(65536)
            if not more:
                return None
            buf += more
        (size,) = _HEADER.unpack_from(buf)
        start = _HEADER.size
        if size == -1:
            while len(buf) < _LONG_HEADER.size:
                more = self.sock.recv(65536)
                if not more:
                    return None
                buf += more
            size = _LONG_HEADER.unpack_from(buf)[1]
            start = _LONG_HEADER.size
        end = start + size
        if len(buf) >= end:
            return buf[start:end]
        chunks = [buf]
        have = len(buf)
        while have < end:
            more = self.sock.recv(max(65536, end - have))
            if not more:
                return None
            chunks.append(more)
            have += len(more)
        return b"".join(chunks)[start:end]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def exitcode(self) -> int | None:
        self.process.join(0.2)
        return self.process.exitcode

    def stop(self, *, kill: bool) -> None:
        """Close the sockets (a healthy worker exits on EOF); kill if asked or if it lingers."""
        if kill:
            self.kill()
        self.sock.close()
        self.conn.close()
        self.process.join(2.0)
        if self.process.is_alive():
            self.kill()
            self.process.join(2.0)


class Alarm:
    __slots__ = ("deadline", "done", "fired", "worker")

    def __init__(self, deadline: float, worker: Worker) -> None:
        self.deadline = deadline
        self.worker = worker
        self.done = False
        self.fired = False


class Watchdog:
    """Kills a worker whose decision outlives its deadline, which ends the caller's blocking recv with EOF.

    Callers block in a plain ``recv`` (one GIL release) instead of polling with a timeout. Alarms are removed
    lazily: with a fixed timeout each new deadline is later than every pending one, so arming never wakes this
    thread; it wakes when the earliest deadline passes and drops the alarms that were disarmed in time.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="authz-ledger-rego-watchdog", daemon=True)
        self._thread.start()

    def arm(self, deadline: float, worker: Worker) -> Alarm:
        alarm = Alarm(deadline, worker)
        with self._cond:
            wake = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._seq), alarm))
            if wake:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> bool:
        """Mark the decision finished; True if the watchdog had already fired (the worker is dead)."""
        with self._cond:
            alarm.done = True
            return alarm.fired

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    alarm = heapq.heappop(self._heap)[2]
                    if not alarm.done:
                        alarm.done = alarm.fired = True
                        alarm.worker.kill()  # under the lock: the caller cannot have reaped it yet
                self._cond.wait(self._heap[0][0] - now if self._heap else None)


class Pool:
    """A fixed-size set of workers serving one PolicySource; hands a free worker to one caller at a time."""

    def __init__(
        self, ctx: BaseContext, source: PolicySource, entrypoint: str, startup_timeout: float, memory_limit_mb: int
    ) -> None:
        self._ctx = ctx
        self._memory_limit_mb = memory_limit_mb
        self.source = source
        self._entrypoint = entrypoint
        self._startup_timeout = startup_timeout
        self._cond = threading.Condition()
        self._free: list[Worker] = []
        self._busy: set[Worker] = set()
        self._retired = False
        self._size = 0

    def start(self, size: int) -> None:
        """Start ``size`` workers in parallel; all must compile the policy, or none is kept."""
        self._size = size
        pending = [self._spawn() for _ in range(size)]
        failure: PolicyLoadError | None = None
        ready: list[Worker] = []
        for worker in pending:
            try:
                self._await_ready(worker)
            except PolicyLoadError as exc:
                failure = failure or exc
                _reap_async(worker, kill=True)
            else:
                ready.append(worker)
        if failure is not None:
            for worker in ready:
                _reap_async(worker, kill=True)
            raise failure
        with self._cond:
            self._free.extend(ready)

    def acquire(self, deadline: float) -> Worker | None:
        """A free worker, or None if this pool was retired. Raises PolicyUnavailableError at the deadline."""
        with self._cond:
            while not self._free and not self._retired:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PolicyUnavailableError(
                        f"no evaluator process became free within the timeout ({self._size} workers, "
                        f"{len(self._busy)} busy)"
                    )
                self._cond.wait(remaining)
            if self._retired:
                return None
            worker = self._free.pop()
            self._busy.add(worker)
            return worker

    def release(self, worker: Worker) -> None:
        with self._cond:
            self._busy.discard(worker)
            if not self._retired:
                self._free.append(worker)
                self._cond.notify()
                return
        _reap_async(worker, kill=False)  # retired while it served its last decision

    def discard(self, worker: Worker, why: str) -> None:
        """Kill a worker that failed and start a replacement in the background."""
        logger.warning("evaluator process %s replaced: %s", worker.pid, why)
        with self._cond:
            self._busy.discard(worker)
            retired = self._retired
        _reap_async(worker, kill=True)
        if not retired:
            threading.Thread(target=self._replace, name="authz-ledger-rego-replace", daemon=True).start()

    def retire(self, *, kill: bool = False) -> None:
        """Stop handing out workers; idle ones exit now, busy ones after their decision (now if ``kill``)."""
        with self._cond:
            self._retired = True
            idle, self._free = self._free, []
            busy = list(self._busy) if kill else []
            self._cond.notify_all()
        for worker in idle + busy:
            _reap_async(worker, kill=kill)

    def pids(self) -> list[int]:
        with self._cond:
            return sorted(w.pid for w in (*self._free, *self._busy))

    def _spawn(self) -> Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_conn, self.source.modules, self.source.data_json, self._entrypoint, self._memory_limit_mb),
            name="authz-ledger-rego",
            daemon=True,
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        return Worker(process, parent_conn)

    def _await_ready(self, worker: Worker) -> None:
        try:
            if not worker.conn.poll(self._startup_timeout):
                raise PolicyLoadError(
                    f"evaluator process did not finish loading the policy within {self._startup_timeout:g} s "
                    "(compiling it and one warm-up decision on an empty input)"
                )
            message = worker.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise PolicyLoadError(
                f"evaluator process exited while loading the policy (exit code {worker.exitcode()})"
            ) from exc
        if message == READY:
            return
        if message[:1] == LOAD_FAILED:
            raise PolicyLoadError(f"{self.source.origin}: {message[1:].decode('utf-8', 'replace')}")
        raise PolicyLoadError(f"evaluator process sent an unrecognised greeting {message[:16]!r}")

    def _replace(self) -> None:
        delay = 0.5
        while not self._is_retired():
            worker = self._spawn()
            try:
                self._await_ready(worker)
            except PolicyLoadError as exc:
                _reap_async(worker, kill=True)
                logger.error("cannot start a replacement evaluator process (retrying in %.1f s): %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            with self._cond:
                if not self._retired:
                    self._free.append(worker)
                    self._cond.notify()
                    return
            _reap_async(worker, kill=False)
            return

    def _is_retired(self) -> bool:
        with self._cond:
            return self._retired


def _reap_async(worker: Worker, *, kill: bool) -> None:
    """Stop a worker without making the calling thread (often a request thread) wait for it to exit."""
    threading.Thread(target=worker.stop, kwargs={"kill": kill}, name="authz-ledger-rego-reap", daemon=True).start()
