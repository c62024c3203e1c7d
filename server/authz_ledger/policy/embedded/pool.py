"""The evaluator processes of one policy version (:class:`Pool`) and the watchdog that ends an evaluation which
outlives its timeout. Why processes, and the invariants they keep: see the package docstring
(:mod:`authz_ledger.policy.embedded`).
"""

from __future__ import annotations

import logging
import threading
import time
from multiprocessing.context import BaseContext

from authz_ledger.errors import PolicyLoadError, PolicyUnavailableError
from authz_ledger.policy.bundle import PolicySource
from authz_ledger.policy.embedded.channel import Channel
from authz_ledger.policy.embedded.protocol import LOAD_FAILED, READY, STATE_SLOTS
from authz_ledger.policy.embedded.worker import worker_main

# The engine's logger, as before the package was split: its log lines keep the name operators filter on.
logger = logging.getLogger("authz_ledger.policy.embedded")


class Watchdog:
    """Kills a worker whose current evaluation has run longer than the timeout.

    A caller whose evaluation overruns ends it itself; this thread is the backstop for an evaluation nobody waits
    for any more (its caller gave up while it was still queued, just as the worker took it). It reads each
    worker's shared state a few times per timeout: a quiet thread, whatever the Check rate.
    """

    def __init__(self, timeout: float) -> None:
        self._timeout_ns = int(timeout * 1e9)
        self._interval = min(max(timeout / 4, 0.01), 1.0)
        self._channels: set[Channel] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="authz-ledger-rego-watchdog", daemon=True)
        self._thread.start()

    def watch(self, channel: Channel) -> None:
        with self._lock:
            self._channels.add(channel)

    def forget(self, channel: Channel) -> None:
        with self._lock:
            self._channels.discard(channel)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic_ns()
            with self._lock:
                channels = list(self._channels)
            for channel in channels:
                _, since = channel.evaluating()
                if since and now - since > self._timeout_ns:
                    logger.warning("evaluator process %s killed: an evaluation outlived the timeout", channel.pid)
                    channel.kill_for_time()


class Pool:
    """A fixed number of evaluator processes serving one PolicySource."""

    def __init__(
        self,
        ctx: BaseContext,
        source: PolicySource,
        entrypoint: str,
        startup_timeout: float,
        memory_limit_mb: int,
        watchdog: Watchdog,
    ) -> None:
        self._ctx = ctx
        self._memory_limit_mb = memory_limit_mb
        self.source = source
        self._entrypoint = entrypoint
        self._startup_timeout = startup_timeout
        self._watchdog = watchdog
        self._cond = threading.Condition()
        self._live: list[Channel] = []
        self._retired = False
        self._size = 0

    def start(self, size: int) -> None:
        """Start ``size`` workers in parallel; all must compile the policy, or none is kept."""
        self._size = size
        pending = [self._spawn() for _ in range(size)]
        failure: PolicyLoadError | None = None
        ready: list[Channel] = []
        for channel in pending:
            try:
                self._await_ready(channel)
            except PolicyLoadError as exc:
                failure = failure or exc
                _reap_async(channel, kill=True)
            else:
                ready.append(channel)
        if failure is not None:
            for channel in ready:
                _reap_async(channel, kill=True)
            raise failure
        for channel in ready:
            self._admit(channel)

    def pick(self, deadline_ns: int, timeout: float) -> Channel | None:
        """The least busy live worker, or None if this pool was retired. Waits for a replacement until the
        deadline if none is running (PolicyUnavailableError then, naming the decision's ``timeout``)."""
        live = self._live
        if live and not self._retired:
            return live[0] if len(live) == 1 else min(live, key=Channel.load)
        with self._cond:
            while not self._live and not self._retired:
                remaining = (deadline_ns - time.monotonic_ns()) / 1e9
                if remaining <= 0:
                    raise PolicyUnavailableError(
                        "no evaluator process is running: a replacement did not become ready within the "
                        f"{timeout:g} s timeout"
                    )
                self._cond.wait(remaining)
            if self._retired:
                return None
            return min(self._live, key=Channel.load)

    def retire(self, *, kill: bool = False) -> None:
        """Stop handing out workers. Each answers what it was sent, then exits (now, if ``kill``)."""
        with self._cond:
            self._retired = True
            channels, self._live = self._live, []
            self._cond.notify_all()
        for channel in channels:
            if kill:
                channel.kill()
            else:
                channel.finish()

    def pids(self) -> list[int]:
        return sorted(c.pid for c in self._live)

    def _spawn(self) -> Channel:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        state = self._ctx.RawArray("q", STATE_SLOTS)
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(
                child_conn,
                state,
                self.source.modules,
                self.source.data_json,
                self._entrypoint,
                self._memory_limit_mb,
            ),
            name="authz-ledger-rego",
            daemon=True,
        )
        process.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        return Channel(process, parent_conn, state, self._exited)

    def _await_ready(self, channel: Channel) -> None:
        try:
            if not channel.conn.poll(self._startup_timeout):
                raise PolicyLoadError(
                    f"evaluator process did not finish loading the policy within {self._startup_timeout:g} s "
                    "(compiling it and one warm-up decision on an empty input)"
                )
            message = channel.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise PolicyLoadError(
                f"evaluator process exited while loading the policy (exit code {channel.exitcode()})"
            ) from exc
        if message == READY:
            return
        if message[:1] == LOAD_FAILED:
            raise PolicyLoadError(f"{self.source.origin}: {message[1:].decode('utf-8', 'replace')}")
        raise PolicyLoadError(f"evaluator process sent an unrecognised greeting {message[:16]!r}")

    def _admit(self, channel: Channel) -> bool:
        """Put a ready worker in service; False (and it is stopped) if the pool was retired meanwhile."""
        with self._cond:
            if self._retired:
                admitted = False
            else:
                self._live = [*self._live, channel]  # a new list: pick() reads it without the lock
                self._cond.notify_all()
                admitted = True
        if admitted:
            self._watchdog.watch(channel)
            channel.start()
        else:
            _reap_async(channel, kill=False)
        return admitted

    def _exited(self, channel: Channel) -> None:
        """Called by a channel's reader when its worker's socket reached EOF."""
        self._watchdog.forget(channel)
        with self._cond:
            was_live = channel in self._live
            if was_live:
                self._live = [c for c in self._live if c is not channel]
            replace = was_live and not self._retired
        threading.Thread(target=channel.reap, name="authz-ledger-rego-reap", daemon=True).start()
        if replace:
            why = "an evaluation outlived the timeout" if channel.killed_for_time else "it exited"
            logger.warning("evaluator process %s replaced: %s", channel.pid, why)
            threading.Thread(target=self._replace, name="authz-ledger-rego-replace", daemon=True).start()

    def _replace(self) -> None:
        delay = 0.5
        while not self._retired:
            channel = self._spawn()
            try:
                self._await_ready(channel)
            except PolicyLoadError as exc:
                _reap_async(channel, kill=True)
                logger.error("cannot start a replacement evaluator process (retrying in %.1f s): %s", delay, exc)
                time.sleep(delay)  # load, not a wait: back off between attempts to start a worker
                delay = min(delay * 2, 30.0)
                continue
            self._admit(channel)
            return


def _reap_async(channel: Channel, *, kill: bool) -> None:
    """Stop a worker that was never put in service, without making the caller wait for it to exit."""

    def stop() -> None:
        if kill:
            channel.kill()
        else:
            channel.finish()
        channel.reap()

    threading.Thread(target=stop, name="authz-ledger-rego-reap", daemon=True).start()
