"""The embedded engine: Rego evaluated by regopy (Microsoft's rego-cpp) in a pool of evaluator processes.

Why processes. regopy costs 0.45-1 ms of CPU per decision and holds the GIL for much of it; measured on a
2-core machine, decisions collapse to about 55 per second as soon as another Python thread in the same process
is busy (a GIL convoy). The gRPC handlers and the ledger writer thread live in the main process, so regopy
never runs there -- it is not even imported there. Each evaluator is a separate process (``spawn`` start
method: the parent has gRPC threads, and forking a threaded process is unsafe) that owns one regopy
Interpreter.

Invariants:

- Fail closed. Every outcome other than a single defined result is a PolicyError: undefined →
  PolicyUndefinedError; evaluation errors, several results, output that is not JSON → PolicyEvaluationError;
  no answer within the timeout → PolicyTimeoutError (the worker is killed, so it can never deliver a stale
  answer to a later caller); a worker that dies mid-decision → PolicyUnavailableError. A decision waits at
  most ``timeout`` for a free worker (then PolicyUnavailableError, the worker pool untouched) and at most
  ``timeout`` for the evaluation itself: the watchdog times the evaluation only, never the queueing before it,
  or a burst of queued Checks would get healthy workers killed and empty the pool. Interpreters run with
  ``strict_built_in_errors``: by default rego-cpp turns builtin errors into undefined, which a policy written
  as ``allow if not deny`` would turn into an allow.
- The policy is compiled once per worker: modules and data are loaded, then a bundle is built with the
  decision path as its only entrypoint and every decision runs ``query_bundle_entrypoint``. Measured per
  decision (example policy, 620-byte input): ``query("data.envoy.authz.allow")`` 4.6 ms (it re-compiles every
  time), ``query_bundle`` 0.8-1.1 ms, ``query_bundle_entrypoint`` 0.7-1.0 ms.
- The input goes in as an input tree built with regopy's C API, not ``set_input_term``: parsing the JSON text
  as a Rego term costs ~380 us of the ~750 us total, building the tree ~120 us. rego-cpp stores strings in
  their JSON-escaped spelling (its own term parser keeps escapes verbatim), so strings are passed in that
  spelling too; otherwise a quote or backslash in a header breaks equality with policy literals and the output
  JSON, and a NUL would truncate the C string. The test suite checks both paths give identical results.
  Integers beyond int64 fall back to the term parser, which keeps them exact (the C API would silently wrap
  them).
- A reload compiles the new policy in fresh workers first. Only when all of them report ready is the pool
  swapped, atomically for callers: a decision runs entirely on the old or entirely on the new pool; the old
  workers finish their in-flight decision and then exit. A policy that does not compile leaves the old pool
  serving and raises PolicyLoadError naming the file and line.
- Protocol over each worker's pipe (``Connection.send_bytes``): request = the input JSON bytes as the caller
  gave them (the parent never parses them); reply = ``R`` + result JSON, ``U`` (undefined) or ``E`` + message.
  At start the worker sends ``K`` (ready) or ``L`` + message (load error).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import heapq
import itertools
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
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
from authz_ledger.policy import Evaluation
from authz_ledger.policy.bundle import MANIFEST_NAME, PolicySource, load_source

logger = logging.getLogger(__name__)

DEFAULT_DECISION_PATH = "envoy/authz/allow"

_READY = b"K"
_LOAD_FAILED = b"L"
_RESULT = b"R"
_UNDEFINED = b"U"
_ERROR = b"E"


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
    ) -> None:
        """Load and compile the policy: PolicyLoadError if it does not compile, ConfigError on bad args."""
        if workers < 1:
            raise ConfigError(f"embedded engine: workers must be at least 1, not {workers}")
        if not timeout > 0:
            raise ConfigError(f"embedded engine: timeout must be positive, not {timeout}")
        if start_method == "fork":
            # The parent runs gRPC threads; fork copies their locks in whatever state they are in.
            raise ConfigError("embedded engine: the 'fork' start method is unsafe here; use spawn or forkserver")
        self.decision_path = normalise_decision_path(decision_path)
        self.source_path = Path(source_path)
        self.timeout = timeout
        self._size = workers
        self._startup_timeout = startup_timeout
        self._ctx = multiprocessing.get_context(start_method)
        self._reload_lock = threading.Lock()
        self._closed = False
        self._pool = self._start_pool(load_source(self.source_path))
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
            source = load_source(self.source_path)
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

    def _start_pool(self, source: PolicySource) -> _Pool:
        pool = _Pool(self._ctx, source, self.decision_path, self._startup_timeout)
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
        return json.loads(body)
    if kind == _UNDEFINED:
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

    def __init__(self, ctx: BaseContext, source: PolicySource, entrypoint: str, startup_timeout: float) -> None:
        self._ctx = ctx
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
            args=(child_conn, self.source.modules, self.source.data_json, self._entrypoint),
            name="authz-ledger-rego",
            daemon=True,
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        return _Worker(process, parent_conn)

    def _await_ready(self, worker: _Worker) -> None:
        try:
            if not worker.conn.poll(self._startup_timeout):
                raise PolicyLoadError(f"evaluator process did not start within {self._startup_timeout:g} s")
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


def _worker_main(conn: Connection, modules: dict[str, str], data_json: str, entrypoint: str) -> None:
    """Evaluator process entry point: load, report readiness, then answer requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes our pipe
    try:
        evaluator = _Evaluator(modules, data_json, entrypoint)
    except PolicyLoadError as exc:
        conn.send_bytes(_LOAD_FAILED + str(exc).encode("utf-8", "replace"))
        return
    except Exception as exc:
        conn.send_bytes(_LOAD_FAILED + f"cannot start the Rego interpreter: {exc!r}".encode("utf-8", "replace"))
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


_ERRORMSG = re.compile(rb"\(errormsg (\d+):")
_ERROR_AT = re.compile(rb"\(error (\d+):")
_INT64 = range(-(2**63), 2**63)


class _Evaluator:
    """A regopy Interpreter with the policy compiled and the decision entrypoint prepared."""

    def __init__(self, modules: dict[str, str], data_json: str, entrypoint: str) -> None:
        import regopy
        from regopy import rego_shared

        self._rs = rego_shared
        self._lib = rego_shared.rego
        self._modules = modules
        self._entrypoint = entrypoint
        self._entrypoint_c = entrypoint.encode("utf-8")
        interp = regopy.Interpreter()
        interp.log_level = regopy.LogLevel.NONE  # errors come back to us; the worker's stderr stays quiet
        # rego-cpp turns builtin errors into undefined unless told otherwise; strict mode makes them errors,
        # so a policy that trips a missing or broken builtin fails closed instead of quietly deciding.
        interp.strict_built_in_errors = True
        try:
            for path in sorted(modules):
                interp.add_module(path, modules[path])
            interp.add_data_json(data_json)
            bundle = interp.build(None, [entrypoint])
        except regopy.RegoError as exc:
            raise PolicyLoadError(self._describe_compile_error(str(exc))) from None
        if not bundle.ok():
            raise PolicyLoadError("rego-cpp could not build the policy")
        self._interp = interp
        self._bundle = bundle
        self._impl = interp._impl
        self._bundle_impl = bundle._impl
        self._escape = json.JSONEncoder(ensure_ascii=False).encode
        self._probe()

    def _probe(self) -> None:
        """Evaluate once with input ``{}``: rego-cpp reports some compile errors only at evaluation.

        An unknown function or a recursive rule still builds a bundle; evaluating it yields an error with no
        ``eval_*`` code. Errors with an ``eval_*`` code (a type or builtin error on this empty input) are left
        to fail the decisions that hit them.
        """
        reply = self.evaluate(b"{}", probe=True)
        if reply.startswith(_ERROR + b"compile:"):
            raise PolicyLoadError(reply[len(_ERROR + b"compile:") :].decode("utf-8", "replace").strip())

    def evaluate(self, request: bytes, *, probe: bool = False) -> bytes:
        try:
            document = json.loads(request, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return _ERROR + f"the input document is not valid JSON: {exc}".encode()
        rs, lib = self._rs, self._lib
        handle = self._build_input(document)
        if handle is None:  # a value the C API cannot carry exactly: use rego-cpp's term parser
            text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
            rs.rego_set_input_term(self._impl, text)
        else:
            try:
                if lib.regoSetInput(self._impl, handle) != 0:
                    return _ERROR + b"rego-cpp rejected the input document"
            finally:
                lib.regoFreeInput(handle)
        output = lib.regoBundleQueryEntrypoint(self._impl, self._bundle_impl, self._entrypoint_c)
        if not output:
            return _ERROR + str(rs.rego_get_error(self._impl)).encode("utf-8", "replace")
        try:
            if not lib.regoOutputOk(output):
                return _ERROR + self._describe_eval_errors(output).encode("utf-8", "replace")
            text_out: str = rs.rego_output_string(output)
        finally:
            lib.regoFreeOutput(output)
        return self._classify(text_out.encode("utf-8"), probe=probe)

    def _classify(self, text: bytes, *, probe: bool) -> bytes:
        if text == b"undefined":
            return _UNDEFINED
        if text.startswith(b"(error"):
            messages = _errormsgs(text)
            # Errors reported this way carry no eval_* code: they are compile errors found late.
            prefix = b"compile: " if probe else b""
            return _ERROR + prefix + "; ".join(messages or ["rego-cpp reported an error"]).encode()
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            # e.g. rego-cpp's base64url.decode returns bytes it does not JSON-escape in its output
            return _ERROR + f"rego-cpp produced a result that is not valid JSON ({exc})".encode()
        results = parsed if isinstance(parsed, list) else [parsed]
        if len(results) != 1:
            return _ERROR + f"the decision has {len(results)} results, expected one".encode()
        expressions = results[0].get("expressions") if isinstance(results[0], dict) else None
        if not isinstance(expressions, list) or len(expressions) != 1:
            return _ERROR + b"rego-cpp returned an unexpected result shape"
        return _RESULT + json.dumps(expressions[0], ensure_ascii=False, separators=(",", ":")).encode()

    def _build_input(self, document: Any) -> Any:
        """Build a rego-cpp input tree; None if some value needs the term parser instead."""
        lib = self._lib
        handle = lib.regoNewInput()
        string, item, obj, arr = (
            lib.regoInputString,
            lib.regoInputObjectItem,
            lib.regoInputObject,
            lib.regoInputArray,
        )
        escape = self._escape

        def add(value: Any) -> bool:
            kind = type(value)
            if kind is str:
                # rego-cpp's JSON-escaped spelling, without the quotes; never contains a NUL byte
                return bool(string(handle, escape(value)[1:-1].encode("utf-8")) == 0)
            if kind is dict:
                for key, child in value.items():
                    if string(handle, escape(key)[1:-1].encode("utf-8")) != 0 or not add(child):
                        return False
                    if item(handle) != 0:
                        return False
                return bool(obj(handle, len(value)) == 0)
            if kind is list:
                for child in value:
                    if not add(child):
                        return False
                return bool(arr(handle, len(value)) == 0)
            if kind is bool:
                return bool(lib.regoInputBoolean(handle, value) == 0)
            if kind is int:
                return bool(value in _INT64 and lib.regoInputInt(handle, value) == 0)
            if kind is float:
                return bool(lib.regoInputFloat(handle, value) == 0)
            if value is None:
                return bool(lib.regoInputNull(handle) == 0)
            return False

        try:
            ok = add(document)
        except RecursionError:
            ok = False
        if not ok:
            lib.regoFreeInput(handle)
            return None
        return handle

    def _describe_eval_errors(self, output: Any) -> str:
        lib, rs = self._lib, self._rs
        node = lib.regoOutputNode(output)
        messages: list[str] = []
        for i in range(lib.regoNodeSize(node) if node else 0):
            error = lib.regoNodeGet(node, i)
            text, code = "", ""
            for j in range(lib.regoNodeSize(error)):
                child = lib.regoNodeGet(error, j)
                kind = lib.regoNodeType(child)
                if kind == 1801:  # NodeKind.ErrorMessage
                    text = rs.rego_node_value(child)
                elif kind == 1803:  # NodeKind.ErrorCode
                    code = rs.rego_node_value(child)
            messages.append(f"{code}: {text}" if code else text)
        return "; ".join(m for m in messages if m) or "rego-cpp reported an evaluation error"

    def _describe_compile_error(self, dump: str) -> str:
        """Turn rego-cpp's error S-expression into ``file:line:col: message`` lines."""
        raw = dump.encode("utf-8", "replace")
        found: list[str] = []
        for match in _ERROR_AT.finditer(raw):
            start = match.end()
            name_len = int(match.group(1))
            name = raw[start : start + name_len].decode("utf-8", "replace")
            rest = raw[start + name_len :]
            where = name
            loc = re.match(rb"\|(\d+)\|(\d+)", rest)
            if loc and name in self._modules:
                where = _line_col(name, self._modules[name], int(loc.group(1)))
            messages = _errormsgs(rest[:4096])
            found.append(f"{where}: {messages[0] if messages else 'error'}" if where else messages[0])
            if len(found) >= 5:
                break
        return "; ".join(found) if found else dump.strip().splitlines()[0]


def _errormsgs(raw: bytes) -> list[str]:
    out = []
    for match in _ERRORMSG.finditer(raw):
        n = int(match.group(1))
        out.append(raw[match.end() : match.end() + n].decode("utf-8", "replace"))
    return out


def _line_col(name: str, text: str, offset: int) -> str:
    before = text.encode("utf-8")[:offset].decode("utf-8", "replace")
    line = before.count("\n") + 1
    col = len(before) - (before.rfind("\n") + 1) + 1
    return f"{name}:{line}:{col}"


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")
