"""The embedded engine: OPA's own Rego engine (its Go ``rego`` package, :mod:`.go_engine`) in a pool of evaluator
processes.

Why processes. The Go engine releases the GIL while it evaluates, but its runtime cannot be stopped from outside:
the library evaluates with no deadline and no cancellation, so a runaway policy (a comprehension over a huge
range, an allocation without end) could only be ended by ending its process. Measured in-process in the running
server, it also gave no more Checks per second than evaluator processes (Go's collector and the gRPC threads
contend for the same core), and 64 gRPC threads entering Go at once made it worse. So each evaluator is a
separate process (``spawn`` start method: the parent has gRPC threads, and forking a threaded process, or one
with Go loaded, is unsafe) that owns one engine; the parent never loads Go.

Invariants:

- Fail closed. Every outcome other than a single defined result is a PolicyError: undefined →
  PolicyUndefinedError; evaluation errors (builtin errors included: the engine is strict, see
  :mod:`.go_engine`), output of the wrong shape → PolicyEvaluationError; no answer within the timeout →
  PolicyTimeoutError (the worker is killed, so it can never deliver a stale answer to a later caller, and its
  memory goes back to the system); a worker that dies mid-decision (its memory limit, RLIMIT_AS, reached) →
  PolicyUnavailableError. A decision waits at most ``timeout`` for a free worker (then PolicyUnavailableError,
  the worker pool untouched) and at most ``timeout`` for the evaluation itself: the watchdog times the
  evaluation only, never the queueing before it, or a burst of queued Checks would get healthy workers killed
  and empty the pool.
- The policy is compiled once per worker, at load: a policy that does not compile never serves.
- The input goes to Go as the JSON bytes the Check handler made (number text and all); the answer comes back as
  the engine's JSON envelope, parsed once, in the parent.
- A reload compiles the new policy in fresh workers first. Only when all of them report ready is the pool
  swapped, atomically for callers: a decision runs entirely on the old or entirely on the new pool; the old
  workers finish their in-flight decision and then exit. A policy that does not compile leaves the old pool
  serving and raises PolicyLoadError naming the file and line.
- Protocol over each worker's pipe (``Connection.send_bytes``): request = the input JSON bytes as the caller
  gave them (the parent never parses them); reply = ``R`` + the engine's envelope, ``U`` (undefined) or ``E`` +
  message. At start the worker sends ``K`` (ready) or ``L`` + message (load error).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import heapq
import itertools
import logging
import multiprocessing
import os
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from authz_ledger.errors import (
    ConfigError,
    PolicyError,
    PolicyEvaluationError,
    PolicyLoadError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    PolicyUndefinedError,
)
from authz_ledger.policy import Evaluation, go_engine
from authz_ledger.policy.bundle import MANIFEST_NAME, PolicySource, load_source, with_data_files
from authz_ledger.policy.go_engine import GoEvaluator

logger = logging.getLogger(__name__)

DEFAULT_DECISION_PATH = "envoy/authz/allow"
DEFAULT_MEMORY_LIMIT_MB = 3072
"""Address-space limit of one evaluator process (RLIMIT_AS). A loaded worker maps ~1.7 GB (Python, the Go
runtime's reservations, the policy) of which ~50 MB are resident; the rest is the heap a decision may use."""

_READY = b"K"
_LOAD_FAILED = b"L"
_RESULT, _UNDEFINED, _ERROR = go_engine.RESULT, go_engine.UNDEFINED, go_engine.ERROR


# --- Parent side ------------------------------------------------------------------------------------------


class EmbeddedEngine:
    """PolicyEngine running Rego in ``workers`` evaluator processes. Thread-safe.

    As with any ``spawn`` multiprocessing, the program's main module must be safe to import (its work under
    ``if __name__ == "__main__":``): each worker imports it before running.
    """

    name = "embedded"

    def __init__(
        self,
        source_path: str | os.PathLike[str],
        decision_path: str = DEFAULT_DECISION_PATH,
        *,
        workers: int = 2,
        timeout: float = 1.0,
        watch: bool = False,
        watch_interval: float = 1.0,
        startup_timeout: float = 60.0,
        start_method: str = "spawn",
        memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
        data_files: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        """Load and compile the policy: PolicyLoadError if it does not compile, ConfigError on bad args."""
        if workers < 1:
            raise ConfigError(f"embedded engine: workers must be at least 1, not {workers}")
        if not timeout > 0:
            raise ConfigError(f"embedded engine: timeout must be positive, not {timeout}")
        if memory_limit_mb < 0:
            raise ConfigError(f"embedded engine: memory_limit_mb must be 0 (no limit) or more, not {memory_limit_mb}")
        if start_method == "fork":
            # The parent runs gRPC threads; fork copies their locks in whatever state they are in.
            raise ConfigError("embedded engine: the 'fork' start method is unsafe here; use spawn or forkserver")
        self.decision_path = normalise_decision_path(decision_path)
        self.source_path = Path(source_path)
        self.timeout = timeout
        self._size = workers
        self._startup_timeout = startup_timeout
        self._memory_limit_mb = memory_limit_mb
        self._data_files = tuple(data_files)
        self._ctx = multiprocessing.get_context(start_method)
        self._reload_lock = threading.Lock()
        self._closed = False
        self._pool = self._start_pool(self._load())
        self._watchdog = _Watchdog()
        self._watcher: _Watcher | None = None
        if watch:
            self._watcher = _Watcher(self.source_path, watch_interval, self._reload_from_watcher)
            self._watcher.start()

    # PolicyEngine ---------------------------------------------------------------------------------------

    def evaluate(self, input_json: bytes) -> Evaluation:
        """Evaluate the decision for one input document (JSON bytes). Raises PolicyError subclasses only."""
        started = time.perf_counter_ns()
        deadline = time.monotonic() + self.timeout
        frame = _frame(input_json)
        attempts = 0
        while True:
            pool = self._pool
            if self._closed:
                raise PolicyUnavailableError("embedded engine is closed")
            worker = pool.acquire(deadline)
            if worker is None:
                continue  # retired by a reload between reading and asking it: use the new pool
            alarm = self._watchdog.arm(time.monotonic() + self.timeout, worker)
            try:
                worker.send(frame)
            except OSError:
                if self._watchdog.disarm(alarm):
                    pool.discard(worker, "it did not take the input within the timeout")
                    raise PolicyTimeoutError(self._timeout_message()) from None
                # The worker died while idle; it never saw this input, so another worker may safely take it.
                pool.discard(worker, "its pipe was closed while idle")
                attempts += 1
                if attempts > self._size:
                    raise PolicyUnavailableError("evaluator processes keep dying before a decision") from None
                continue
            break
        try:
            reply = worker.receive()
        except OSError:
            reply = None
        if self._watchdog.disarm(alarm):
            pool.discard(worker, "it did not answer within the timeout")
            raise PolicyTimeoutError(self._timeout_message())
        if reply is None:
            code = worker.exitcode()
            pool.discard(worker, f"it exited during a decision (exit code {code})")
            raise PolicyUnavailableError(
                f"evaluator process {worker.pid} exited during the decision (exit code {code})"
            )
        pool.release(worker)
        result = _decode_reply(reply)
        return Evaluation(result, pool.source.version, time.perf_counter_ns() - started)

    def policy_version(self) -> str:
        """The version of the policy currently serving."""
        return self._pool.source.version

    def reload(self) -> str:
        """Compile the source again in fresh workers and swap the pool. Returns the version now serving.

        If the files did not change (same digest) nothing is restarted. On any failure the old pool keeps
        serving and PolicyLoadError says why.
        """
        with self._reload_lock:
            if self._closed:
                raise PolicyLoadError("embedded engine is closed")
            source = self._load()
            old = self._pool
            if source.digest == old.source.digest:
                return old.source.version
            new = self._start_pool(source)
            self._pool = new
            old.retire()
            logger.info("policy reloaded: %s -> %s", old.source.version, source.version)
            return source.version

    def close(self) -> None:
        """Stop the watcher and every worker. Idempotent; in-flight decisions get PolicyUnavailableError."""
        with self._reload_lock:
            if self._closed:
                return
            self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
        self._pool.retire(kill=True)
        self._watchdog.close()

    # Extras ---------------------------------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        """PIDs of the current pool's live workers (for health output and tests)."""
        return self._pool.pids()

    def __enter__(self) -> EmbeddedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals ------------------------------------------------------------------------------------------

    def _load(self) -> PolicySource:
        return with_data_files(load_source(self.source_path), self._data_files)

    def _start_pool(self, source: PolicySource) -> _Pool:
        pool = _Pool(self._ctx, source, self.decision_path, self._startup_timeout, self._memory_limit_mb)
        pool.start(self._size)
        return pool

    def _timeout_message(self) -> str:
        return f"embedded policy evaluation exceeded the {self.timeout:g} s timeout"

    def _reload_from_watcher(self) -> None:
        try:
            version = self.reload()
        except PolicyError as exc:
            logger.error("policy change not applied, still serving %s: %s", self.policy_version(), exc)
        else:
            logger.info("policy now serving %s", version)


def _decode_reply(reply: bytes) -> Any:
    kind, body = reply[:1], reply[1:]
    if kind == _RESULT:
        try:
            return go_engine.decode_result(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise PolicyEvaluationError(f"OPA's engine returned an unreadable answer: {exc}") from None
    if kind == _UNDEFINED:
        go_engine.log_prints(body)
        raise PolicyUndefinedError("the decision is undefined for this input")
    if kind == _ERROR:
        raise PolicyEvaluationError(body.decode("utf-8", "replace"))
    raise PolicyEvaluationError(f"evaluator sent an unrecognised reply {reply[:16]!r}")


def normalise_decision_path(path: str) -> str:
    parts = [part for part in path.strip().strip("/").split("/") if part]
    if parts and parts[0] == "data":
        parts = parts[1:]  # "data/envoy/authz/allow" and "envoy/authz/allow" name the same document
    if not parts:
        raise ConfigError(f"decision path {path!r} names no document")
    return "/".join(parts)


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


def _frame(payload: bytes) -> bytes:
    if len(payload) < 0x7FFFFFFF:
        return _HEADER.pack(len(payload)) + payload
    return _LONG_HEADER.pack(-1, len(payload)) + payload


class _Worker:
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


class _Alarm:
    __slots__ = ("deadline", "done", "fired", "worker")

    def __init__(self, deadline: float, worker: _Worker) -> None:
        self.deadline = deadline
        self.worker = worker
        self.done = False
        self.fired = False


class _Watchdog:
    """Kills a worker whose decision outlives its deadline, which ends the caller's blocking recv with EOF.

    Callers block in a plain ``recv`` (one GIL release) instead of polling with a timeout. Alarms are removed
    lazily: with a fixed timeout each new deadline is later than every pending one, so arming never wakes this
    thread; it wakes when the earliest deadline passes and drops the alarms that were disarmed in time.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Alarm]] = []
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="authz-ledger-rego-watchdog", daemon=True)
        self._thread.start()

    def arm(self, deadline: float, worker: _Worker) -> _Alarm:
        alarm = _Alarm(deadline, worker)
        with self._cond:
            wake = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, next(self._seq), alarm))
            if wake:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: _Alarm) -> bool:
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


class _Pool:
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
        self._free: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._retired = False
        self._size = 0

    def start(self, size: int) -> None:
        """Start ``size`` workers in parallel; all must compile the policy, or none is kept."""
        self._size = size
        pending = [self._spawn() for _ in range(size)]
        failure: PolicyLoadError | None = None
        ready: list[_Worker] = []
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

    def acquire(self, deadline: float) -> _Worker | None:
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

    def release(self, worker: _Worker) -> None:
        with self._cond:
            self._busy.discard(worker)
            if not self._retired:
                self._free.append(worker)
                self._cond.notify()
                return
        _reap_async(worker, kill=False)  # retired while it served its last decision

    def discard(self, worker: _Worker, why: str) -> None:
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

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=_worker_main,
            args=(child_conn, self.source.modules, self.source.data_json, self._entrypoint, self._memory_limit_mb),
            name="authz-ledger-rego",
            daemon=True,
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        return _Worker(process, parent_conn)

    def _await_ready(self, worker: _Worker) -> None:
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
        if message == _READY:
            return
        if message[:1] == _LOAD_FAILED:
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


def _reap_async(worker: _Worker, *, kill: bool) -> None:
    """Stop a worker without making the calling thread (often a request thread) wait for it to exit."""
    threading.Thread(target=worker.stop, kwargs={"kill": kill}, name="authz-ledger-rego-reap", daemon=True).start()


class _Watcher:
    """Polls the policy source's files (path, size, mtime) and calls ``on_change`` once they settle."""

    def __init__(self, path: Path, interval: float, on_change: Callable[[], None]) -> None:
        self._path = path
        self._interval = interval
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="authz-ledger-policy-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _run(self) -> None:
        last = _fingerprint(self._path)
        while not self._stop.wait(self._interval):
            current = _fingerprint(self._path)
            if current == last:
                continue
            # Editors and `cp` write in steps: act once the files stopped changing for one interval.
            if self._stop.wait(self._interval):
                return
            settled = _fingerprint(self._path)
            if settled != current:
                continue
            last = settled
            try:
                self._on_change()
            except Exception:  # the watcher must outlive any surprise; reload() already logged PolicyErrors
                logger.exception("policy watcher: reload failed")


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    entries: list[tuple[str, int, int]] = []
    try:
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # as bundle._read_directory
                for filename in sorted(filenames):
                    if filename.endswith(".rego") or filename.startswith("data.") or filename == MANIFEST_NAME:
                        st = (Path(dirpath) / filename).stat()
                        entries.append((os.path.join(dirpath, filename), st.st_size, st.st_mtime_ns))
        else:
            st = path.stat()
            entries.append((str(path), st.st_size, st.st_mtime_ns))
    except OSError:
        entries.append(("<unreadable>", 0, 0))
    return tuple(entries)


# --- Worker side (runs in the evaluator process only) -----------------------------------------------------


def _worker_main(
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
        conn.send_bytes(_LOAD_FAILED + str(exc).encode("utf-8", "replace"))
        return
    except Exception as exc:
        conn.send_bytes(_LOAD_FAILED + f"cannot start OPA's engine: {exc!r}".encode("utf-8", "replace"))
        return
    conn.send_bytes(_READY)
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe (retired) or died
        try:
            reply = evaluator.evaluate(request)
        except Exception as exc:
            reply = _ERROR + f"evaluator error: {exc!r}".encode("utf-8", "replace")
        conn.send_bytes(reply)
