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
  PolicyUnavailableError. A decision still queued when its ``timeout`` has passed is given up
  (PolicyUnavailableError; the worker skips it); an evaluation gets the whole ``timeout`` from when it started,
  never less for time it spent queued, so a burst of queued Checks never gets a healthy worker killed.
- The policy is compiled once per worker, at load: a policy that does not compile never serves.
- The input goes to Go as the JSON bytes the Check handler made (number text and all); the answer comes back as
  the engine's JSON envelope, parsed once, in the parent.
- A reload compiles the new policy in fresh workers first. Only when all of them report ready is the pool
  swapped, atomically for callers: a decision runs entirely on the old or entirely on the new pool; the old
  workers answer the decisions already sent to them and then exit. A policy that does not compile leaves the old pool
  serving and raises PolicyLoadError naming the file and line.
- Many decisions share one worker's socket (:mod:`.channel`, :mod:`.protocol`): callers write requests as
  Checks ask, the worker evaluates every request waiting and writes the replies back together, and one reader
  thread per worker wakes the callers. Several decisions per system call and per wake-up is what makes the engine
  cheap on the server's core. A worker that exits hands back the decisions it had not started; they go to
  another worker.

Modules: this one is the engine callers use; :mod:`.pool` holds the parent's side of the processes (the pool, the
watchdog), :mod:`.channel` one worker's socket and its pending decisions, :mod:`.watch` the file watcher behind
``watch=True``, :mod:`.protocol` the bytes on the socket; :mod:`.worker` and :mod:`.go_engine` are what runs in an
evaluator process. :mod:`.inprocess` loads the same engine into the calling process, for batch jobs only
(``authz-ledger replay``): no process to kill, so an overrun there ends the job.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from authz_ledger.errors import (
    ConfigError,
    PolicyError,
    PolicyLoadError,
    PolicyTimeoutError,
    PolicyUnavailableError,
)
from authz_ledger.policy import DEFAULT_DECISION_PATH, Evaluation, normalise_decision_path
from authz_ledger.policy.bundle import PolicySource, load_source, with_data_files
from authz_ledger.policy.embedded.channel import DIED, RETRY, Channel, Slot
from authz_ledger.policy.embedded.pool import Pool, Watchdog
from authz_ledger.policy.embedded.protocol import EXPIRED, decode_reply
from authz_ledger.policy.embedded.watch import Watcher

__all__ = ["DEFAULT_MEMORY_LIMIT_MB", "EmbeddedEngine"]

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_LIMIT_MB = 3072
"""Address-space limit of one evaluator process (RLIMIT_AS). A loaded worker maps ~1.7 GB (Python, the Go
runtime's reservations, the policy) of which ~50 MB are resident; the rest is the heap a decision may use."""


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
        self._timeout_ns = int(timeout * 1e9)
        self._size = workers
        self._startup_timeout = startup_timeout
        self._memory_limit_mb = memory_limit_mb
        self._data_files = tuple(data_files)
        self._ctx = multiprocessing.get_context(start_method)
        self._reload_lock = threading.Lock()
        self._closed = False
        self._watchdog = Watchdog(timeout)
        try:
            self._pool = self._start_pool(self._load())
        except BaseException:
            self._watchdog.close()
            raise
        self._watcher: Watcher | None = None
        if watch:
            self._watcher = Watcher(self.source_path, watch_interval, self._reload_from_watcher)
            self._watcher.start()

    # PolicyEngine ---------------------------------------------------------------------------------------

    def evaluate(self, input_json: bytes) -> Evaluation:
        """Evaluate the decision for one input document (JSON bytes). Raises PolicyError subclasses only."""
        started = time.perf_counter_ns()
        deadline_ns = time.monotonic_ns() + self._timeout_ns
        for _ in range(self._size + 2):  # a worker that exits before starting a decision hands it back
            pool = self._pool
            if self._closed:
                raise PolicyUnavailableError("embedded engine is closed")
            channel = pool.pick(deadline_ns, self.timeout)
            if channel is None:
                continue  # retired by a reload between reading and asking it: use the new pool
            slot = Slot()
            rid = channel.submit(input_json, deadline_ns, slot)
            if rid is None:
                continue  # that worker has just exited; it never saw this input
            reply = self._wait(channel, rid, slot, deadline_ns)
            if reply == RETRY:
                continue
            if reply == DIED:
                if channel.killed_for_time:
                    raise PolicyTimeoutError(self._timeout_message())
                code = channel.exitcode()
                raise PolicyUnavailableError(
                    f"evaluator process {channel.pid} exited during the decision (exit code {code})"
                )
            if reply == EXPIRED:
                raise PolicyUnavailableError(self._queued_message())
            result = decode_reply(reply)
            return Evaluation(result, pool.source.version, time.perf_counter_ns() - started)
        raise PolicyUnavailableError("evaluator processes keep exiting before they take the decision")

    def _wait(self, channel: Channel, rid: int, slot: Slot, deadline_ns: int) -> bytes:
        """The reply to ``rid``. An evaluation gets the whole timeout from when it started, never less for time
        it spent queued; one that outlives it ends its worker (PolicyTimeoutError). A decision still queued at
        the deadline is given up (PolicyUnavailableError): the worker will not start it."""
        if slot.done.acquire(timeout=max(deadline_ns - time.monotonic_ns(), 0) / 1e9):
            return slot.reply
        evaluating, since = channel.evaluating()
        if since and evaluating == rid:
            ends_ns = since + self._timeout_ns
            if slot.done.acquire(timeout=max(ends_ns - time.monotonic_ns(), 0) / 1e9):
                return slot.reply
            if channel.abandon(rid):
                channel.kill_for_time(rid)
                raise PolicyTimeoutError(self._timeout_message())
        elif channel.abandon(rid):
            raise PolicyUnavailableError(self._queued_message())
        slot.done.acquire()  # settled while we looked: the reply is there
        return slot.reply

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

    def _start_pool(self, source: PolicySource) -> Pool:
        pool = Pool(self._ctx, source, self.decision_path, self._startup_timeout, self._memory_limit_mb, self._watchdog)
        pool.start(self._size)
        return pool

    def _timeout_message(self) -> str:
        return f"embedded policy evaluation exceeded the {self.timeout:g} s timeout"

    def _queued_message(self) -> str:
        return (
            f"no evaluator process reached the decision within the {self.timeout:g} s timeout "
            f"({self._size} workers, all busy)"
        )

    def _reload_from_watcher(self) -> None:
        try:
            version = self.reload()
        except PolicyError as exc:
            logger.error("policy change not applied, still serving %s: %s", self.policy_version(), exc)
        else:
            logger.info("policy now serving %s", version)
