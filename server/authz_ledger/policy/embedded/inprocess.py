"""OPA's Go engine loaded into the calling process: for batch jobs (``authz-ledger replay``), never for ``serve``.

The same engine as the evaluator processes (:mod:`.go_engine`: the same library, loading, strictness, answer
envelope and result contract), without the hand-off per decision: no socket, no wake-up of another process, no
reply to match. On one core that is what separates the replay from its target (bench/RESULTS.md, part 11).

What it gives up, and why that is acceptable only here: the library evaluates with no deadline and no
cancellation, so an evaluation that computes without end cannot be stopped short of ending its process. The
evaluator processes of ``serve`` are killed for that; here the process is the caller's own. So the engine watches
every evaluation (and the policy's load) and, when one outlives its timeout, calls ``on_overrun`` with the
PolicyTimeoutError, from its watchdog thread, while the evaluation is still running: the caller must end the
process there (the replay command exits with that error). A runaway policy is then bounded by the timeout,
the run with it. Memory is not bounded as the evaluator processes' RLIMIT_AS bounds it: a policy that allocates
without end ends this process when Go's allocator fails or the system's OOM killer acts.

Go's collector: ``GOGC`` is read once, when the library loads (the first engine in the process). A replay keeps
little alive between decisions (the policy, its data, one input), so the collector's pace, not the heap's size,
is what costs; :data:`GOGC` was measured on the bench ledger (bench/RESULTS.md). An operator's own ``GOGC`` wins.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

from authz_ledger.errors import ConfigError, PolicyTimeoutError, PolicyUnavailableError
from authz_ledger.policy import DEFAULT_DECISION_PATH, Evaluation, normalise_decision_path
from authz_ledger.policy.bundle import load_source, with_data_files
from authz_ledger.policy.embedded.protocol import decode_reply

GOGC = "800"
"""Go's collector target for a batch of evaluations (the evaluator processes use 400: they share the core with
a server whose memory matters more)."""


class InProcessEngine:
    """PolicyEngine evaluating in the calling process, at most ``threads`` evaluations at once. Thread-safe."""

    name = "embedded"

    def __init__(
        self,
        source_path: str | os.PathLike[str],
        decision_path: str = DEFAULT_DECISION_PATH,
        *,
        on_overrun: Callable[[PolicyTimeoutError], None],
        threads: int = 1,
        timeout: float = 1.0,
        startup_timeout: float = 60.0,
        data_files: Sequence[str | os.PathLike[str]] = (),
    ) -> None:
        """Load and compile the policy (PolicyLoadError if it does not compile); ConfigError on bad arguments."""
        if threads < 1:
            raise ConfigError(f"in-process engine: threads must be at least 1, not {threads}")
        if not timeout > 0:
            raise ConfigError(f"in-process engine: timeout must be positive, not {timeout}")
        self.decision_path = normalise_decision_path(decision_path)
        self.timeout = timeout
        self._on_overrun = on_overrun
        self._threads = threads
        self._slots = threading.BoundedSemaphore(threads)
        self._running: dict[int, tuple[int, int, str]] = {}
        """What runs in Go now, by thread id: (started, deadline) in monotonic ns, and what it is."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        source = with_data_files(load_source(source_path), data_files)
        self._version = source.version
        self._watchdog = threading.Thread(target=self._watch, name="authz-ledger-inprocess-watchdog", daemon=True)
        self._watchdog.start()
        from authz_ledger.policy.embedded.go_engine import GoEvaluator

        self._begin(startup_timeout, "loading the policy")
        operators = os.environ.get("GOGC")
        os.environ.setdefault("GOGC", GOGC)  # read by Go's runtime as GoEvaluator loads the library
        try:
            self._evaluator = GoEvaluator(source.modules, source.data_json, self.decision_path)
        except BaseException:
            self.close()
            raise
        finally:
            self._end()
            if operators is None:  # not passed on to processes this one starts
                os.environ.pop("GOGC", None)

    def evaluate(self, input_json: bytes) -> Evaluation:
        """One decision (PolicyError subclasses only). An evaluation past the timeout does not return here: the
        watchdog has called ``on_overrun``, which ends the process."""
        with self._slots:
            if self._closed:
                raise PolicyUnavailableError("in-process engine is closed")
            started = self._begin(self.timeout, "an evaluation")
            try:
                reply = self._evaluator.evaluate(input_json)  # the GIL is released while Go evaluates
            finally:
                self._end()
        return Evaluation(decode_reply(reply), self._version, time.monotonic_ns() - started)

    def policy_version(self) -> str:
        return self._version

    def reload(self) -> str:
        """A batch job evaluates one policy from start to end: nothing to reload."""
        return self._version

    def close(self) -> None:
        """Stop the watchdog and free the engine once no evaluation runs. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._watchdog.join(5.0)
        evaluator = getattr(self, "_evaluator", None)
        if evaluator is not None:
            for _ in range(self._threads):
                self._slots.acquire()  # every evaluation has returned
            evaluator.close()

    def __enter__(self) -> InProcessEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Internals ------------------------------------------------------------------------------------------

    def _begin(self, timeout: float, what: str) -> int:
        now = time.monotonic_ns()
        with self._lock:
            self._running[threading.get_ident()] = (now, now + int(timeout * 1e9), what)
        return now

    def _end(self) -> None:
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def _watch(self) -> None:
        interval = min(max(self.timeout / 4, 0.01), 0.25)
        while not self._stop.wait(interval):
            now = time.monotonic_ns()
            with self._lock:
                overrun = [(started, deadline, what) for started, deadline, what in self._running.values()]
            for started, deadline, what in overrun:
                if now > deadline:
                    self._on_overrun(
                        PolicyTimeoutError(
                            f"{what} has run for {(now - started) / 1e9:.1f} s, past its "
                            f"{(deadline - started) / 1e9:g} s timeout, and OPA's engine cannot stop it inside "
                            "this process"
                        )
                    )
                    return
